#!/usr/bin/env python3
"""Role-change latency on a running igw lab: the standby gateway's role prepend is set to 0
(the take-over prepend) and the time until the ToR's best path for 0.0.0.0/0 goes through
it is measured; then the prepend goes back to the standby count. Modes:
  igw      `igw fabric set-prepend` (the arbiter's FRR driver: one vtysh transaction on both
           role route-maps, then `clear bgp * soft out`)
  noclear  the same vtysh transaction without the soft-out clear (does the route-map
           change alone, with `bgp route-map delay-timer 0`, re-advertise?)
The standby's arbiter must be stopped first (it would reconcile the prepend back).
Usage: role_change.py PREFIX STATE_DIR GATEWAY MODE RUNS IGW_BINARY"""
import json, subprocess, sys, time

prefix, state, gw, mode, runs, igw = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
node = f"{state}/{prefix}/{gw}/node.toml"
nh = {"igw-a": "198.19.1.1", "igw-b": "198.19.1.3"}[gw]

def vt(host, *cmds):
    ns = f"{prefix}-{host}"
    a = ["ip", "netns", "exec", ns, "vtysh", "-N", ns]
    for c in cmds:
        a += ["-c", c]
    return subprocess.run(a, capture_output=True, text=True).stdout

def best(host, pfx):
    try:
        d = json.loads(vt(host, f"show ip bgp {pfx} json"))
    except ValueError:
        return None
    for p in d.get("paths", []):
        if p.get("bestpath", {}).get("overall"):
            return p["nexthops"][0]["ip"]
    return None

def set_prepend(n):
    if mode == "igw":
        subprocess.run(["ip", "netns", "exec", f"{prefix}-{gw}", igw, "fabric", "set-prepend", str(n), "--node", node],
                       check=True, capture_output=True)
        return
    pre = ["set as-path prepend " + " ".join(["65010"] * n)] if n else []
    cmds = ["configure terminal"]
    for rm, seqs in (("IGW-ROLE-FABRIC", [10]), ("IGW-ROLE-UPSTREAM", [10, 20])):
        for s in seqs:
            cmds += [f"route-map {rm} permit {s}", "no set as-path prepend"] + pre + ["exit"]
    cmds.append("end")
    vt(gw, *cmds)

moved_ms = []
for i in range(runs):
    t0 = time.monotonic()
    set_prepend(0)
    t1 = time.monotonic()
    moved = None
    while time.monotonic() - t0 < 10:
        if best("tor", "0.0.0.0/0") == nh:
            moved = time.monotonic() - t0
            break
    if moved is not None:
        moved_ms.append(moved * 1000)
    print(f"{mode} run {i}: command {1000 * (t1 - t0):.0f} ms, ToR best path via {gw} after "
          + (f"{1000 * moved:.0f} ms" if moved is not None else "NEVER (10 s)"), flush=True)
    set_prepend(3)
    if mode == "noclear":
        vt(gw, "clear bgp * soft out")
    time.sleep(1.5)
moved_ms.sort()
if moved_ms:
    print(f"{mode}: moved in {len(moved_ms)}/{runs}; min/median/max "
          f"{moved_ms[0]:.0f}/{moved_ms[len(moved_ms) // 2]:.0f}/{moved_ms[-1]:.0f} ms")
else:
    print(f"{mode}: moved in 0/{runs}")
