#!/usr/bin/python3
"""Loads N conntrack entries into the kernel table of the namespace it runs in, over
ctnetlink (IPCTNL_MSG_CT_NEW, batched), as a busy gateway's table would hold: UDP
198.18.1.250:port -> 192.0.2.201:port', one hour timeout. The source is a tenant-a address
(198.18.1.0/24), so both sync daemons replicate them (igw's filter keeps tenant-sourced
entries; conntrackd keeps everything). No packet is sent anywhere; the entries only weigh
on conntrack sync (replication, direct inject, and `conntrackd -c` / `igw conntrack
commit` at promotion). `conntrack -D -s 198.18.1.250` removes them.

    ct_fill.py N"""

import socket
import struct
import sys

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLA_F_NESTED = 0x8000
CT_NEW = (1 << 8) | 0  # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_TIMEOUT = 1, 2, 7
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3


def nla(t, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, t) + payload + b"\0" * ((4 - n % 4) % 4)


def tuple_(t, src, dst, sport, dport):
    ip = nla(CTA_IP_V4_SRC, socket.inet_aton(src)) + nla(CTA_IP_V4_DST, socket.inet_aton(dst))
    proto = (nla(CTA_PROTO_NUM, bytes([17])) + nla(CTA_PROTO_SRC_PORT, struct.pack("!H", sport))
             + nla(CTA_PROTO_DST_PORT, struct.pack("!H", dport)))
    return nla(t | NLA_F_NESTED, nla(CTA_TUPLE_IP | NLA_F_NESTED, ip)
               + nla(CTA_TUPLE_PROTO | NLA_F_NESTED, proto))


def message(seq, i):
    sport, dport = 1024 + i % 60000, 1 + i // 60000
    a, b = "198.18.1.250", "192.0.2.201"
    body = (struct.pack("=BBH", socket.AF_INET, 0, 0)
            + tuple_(CTA_TUPLE_ORIG, a, b, sport, dport)
            + tuple_(CTA_TUPLE_REPLY, b, a, dport, sport)
            + nla(CTA_TIMEOUT, struct.pack("!I", 3600)))
    flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK
    return struct.pack("=IHHII", 16 + len(body), CT_NEW, flags, seq, 0) + body


def main():
    n = int(sys.argv[1])
    if not 0 <= n <= 1_000_000:
        sys.exit("N must be 0..1000000")
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((0, 0))
    ok = present = failed = 0
    batch = 200
    for start in range(0, n, batch):
        count = min(batch, n - start)
        s.send(b"".join(message(start + k + 1, start + k) for k in range(count)))
        acks = 0
        while acks < count:
            data = s.recv(1 << 20)
            off = 0
            while off < len(data) and acks < count:
                length, typ = struct.unpack_from("=IH", data, off)
                if typ == 2:  # NLMSG_ERROR: 0 is the ACK
                    err = struct.unpack_from("=i", data, off + 16)[0]
                    acks += 1
                    if err == 0:
                        ok += 1
                    elif err == -17:  # EEXIST: already there (synced back by the peer)
                        present += 1
                    else:
                        failed += 1
                off += (length + 3) & ~3
    print(f"ct_fill: {ok} entries added, {present} already there, {failed} refused")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
