//! Active/standby election, health and authenticated heartbeats; steers traffic through FRR.
