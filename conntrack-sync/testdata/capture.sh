#!/bin/sh
# Regenerates the ctnetlink captures in src/ct.rs: a real SNAT flow in namespaces, dumped
# with `igw conntrack dump --hex`. Needs root, nft, socat, conntrack and a built igw.
set -e
G=igwcapg$$; S=igwcaps$$
ip netns add $G; ip netns add $S
trap "ip netns del $G; ip netns del $S" EXIT
ip -n $G link set lo up; ip -n $S link set lo up
ip link add cg type veth peer name cs
ip link set cg netns $G; ip link set cs netns $S
ip -n $G addr add 198.19.2.1/31 dev cg; ip -n $G link set cg up
ip -n $S addr add 198.19.2.0/31 dev cs; ip -n $S link set cs up
ip -n $S addr add 203.0.113.10/32 dev lo
ip -n $G route add 203.0.113.10/32 via 198.19.2.0
ip -n $S route add 198.51.100.10/32 via 198.19.2.1
ip netns exec $G nft -f - <<NFT
table ip cap { chain post { type nat hook postrouting priority 100; oifname "cg" snat to 198.51.100.10; }; }
NFT
ip netns exec $S timeout 5 socat TCP-LISTEN:5000,reuseaddr EXEC:cat &
ip netns exec $S timeout 5 socat UDP-RECVFROM:5353,fork EXEC:cat &
sleep 0.3
(sleep 3; echo hi) | ip netns exec $G timeout 4 socat - TCP:203.0.113.10:5000,sourceport=40000 >/dev/null &
echo u | ip netns exec $G timeout 2 socat - UDP:203.0.113.10:5353,sourceport=40001 >/dev/null &
sleep 1
ip netns exec $G /work/target-ctsync/debug/igw conntrack dump --hex
ip netns exec $G conntrack -L 2>&1
wait
