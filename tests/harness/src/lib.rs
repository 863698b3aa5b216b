//! Test harness: network namespaces, veth links and processes as values that clean up on drop.
