#!/usr/bin/env python3
"""Role-change latency on a running igw lab: the standby gateway's role prepend is set to 0
(the take-over prepend) and the time until the ToR's kernel route for 0.0.0.0/0 and the
upstream's for the NAT pool go through it is measured (`ip -ts monitor route` in both
namespaces: the moment zebra installs the route, no polling); then the prepend goes back to
the standby count. Modes:
  igw      `igw fabric set-prepend` (the arbiter's FRR driver: default-originate and the
           pool's network statement re-pointed at pre-built role route-maps, written to
           bgpd's vty socket; no soft clear)
  classic  what the stock script does: edit the route-maps in use (`set as-path prepend`)
           through vtysh, then `clear bgp * soft out` (the lab's FRR is first converted to
           that scheme, as bench/failover/stock/role.sh classic does)
The standby's arbiter must be stopped first (it would reconcile the prepend back).
Usage: role_change.py PREFIX STATE_DIR GATEWAY MODE RUNS IGW_BINARY"""
import datetime, os, re, subprocess, sys, tempfile, time

prefix, state, gw, mode, runs, igw = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
node = f"{state}/{prefix}/{gw}/node.toml"
tor_nh = {"igw-a": "198.19.1.1", "igw-b": "198.19.1.3"}[gw]
up_nh = {"igw-a": "198.19.2.1", "igw-b": "198.19.2.3"}[gw]
tor_peer = {"igw-a": "198.19.1.0", "igw-b": "198.19.1.2"}[gw]
up_peer = {"igw-a": "198.19.2.0", "igw-b": "198.19.2.2"}[gw]
POOL = "198.51.100.10/32"

def vt(host, *cmds):
    ns = f"{prefix}-{host}"
    a = ["ip", "netns", "exec", ns, "vtysh", "-N", ns]
    for c in cmds:
        a += ["-c", c]
    return subprocess.run(a, capture_output=True, text=True).stdout

def classic_setup():
    vt(gw, "configure terminal",
       "route-map IGW-ROLE-FABRIC permit 10", "exit",
       "route-map IGW-ROLE-UPSTREAM permit 10", "match ip address prefix-list IGW-NAT-POOL", "exit",
       "router bgp 65010", "address-family ipv4 unicast", f"no network {POOL}", f"network {POOL}",
       f"neighbor {tor_peer} default-originate route-map IGW-ROLE-FABRIC",
       f"neighbor {up_peer} route-map IGW-ROLE-UPSTREAM out", "end", "clear bgp * soft out")

def set_prepend(n):
    if mode == "igw":
        subprocess.run(["ip", "netns", "exec", f"{prefix}-{gw}", igw, "fabric", "set-prepend", str(n), "--node", node],
                       check=True, capture_output=True)
        return
    pre = ["set as-path prepend " + " ".join(["65010"] * n)] if n else []
    cmds = ["configure terminal"]
    for rm in ("IGW-ROLE-FABRIC", "IGW-ROLE-UPSTREAM"):
        cmds += [f"route-map {rm} permit 10", "no set as-path prepend"] + pre + ["exit"]
    cmds += ["end", "clear bgp * soft out"]
    vt(gw, *cmds)

def first_ts(path, pat):
    try:
        for line in open(path):
            m = re.match(r"\[(.*?)\]\s*(.*)", line)
            if m and re.search(pat, m.group(2)):
                return datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()
    except FileNotFoundError:
        pass
    return None

if mode == "classic":
    classic_setup()
set_prepend(3)
time.sleep(3)
res = {"tor": [], "upstream": []}
tmp = tempfile.mkdtemp(prefix="igw-rc-")
for i in range(runs):
    mons, files = [], {}
    for host in ("tor", "upstream"):
        f = os.path.join(tmp, f"{host}-{i}.txt")
        files[host] = f
        mons.append(subprocess.Popen(["ip", "netns", "exec", f"{prefix}-{host}", "ip", "-ts", "monitor", "route"],
                                     stdout=open(f, "w"), stderr=subprocess.DEVNULL))
    time.sleep(0.3)
    t0 = time.time()
    set_prepend(0)
    t1 = time.time()
    got = {}
    while time.time() - t0 < 5 and len(got) < 2:
        for host, pat in (("tor", rf"^default .*via {tor_nh} "), ("upstream", rf"^198\.51\.100\.10 .*via {up_nh} ")):
            if host not in got:
                ts = first_ts(files[host], pat)
                if ts is not None:
                    got[host] = (ts - t0) * 1000
        time.sleep(0.02)
    for m in mons:
        m.terminate()
        m.wait()
    for h in res:
        if h in got:
            res[h].append(got[h])
    print(f"{mode} run {i}: command {1000 * (t1 - t0):.0f} ms; ToR route via {gw} after "
          + (f"{got['tor']:.0f} ms" if "tor" in got else "NEVER (5 s)")
          + "; upstream after " + (f"{got['upstream']:.0f} ms" if "upstream" in got else "NEVER (5 s)"), flush=True)
    set_prepend(3)
    time.sleep(1.5)
for h, v in res.items():
    v.sort()
    if v:
        print(f"{mode} {h}: moved in {len(v)}/{runs}; min/median/max {v[0]:.0f}/{v[len(v) // 2]:.0f}/{v[-1]:.0f} ms")
    else:
        print(f"{mode} {h}: moved in 0/{runs}")
