//! FRR configuration for the fabric (BGP to ToRs and upstream, role route-maps, BFD, prefix-lists) and the runtime FRR driver.
