//! Conntrack replication with NAT bindings between the two gateway nodes, over ctnetlink.
