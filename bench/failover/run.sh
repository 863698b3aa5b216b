#!/usr/bin/env bash
# bench/failover: the gateway pair's failover, igw next to the stock setup it replaces, on the
# same lab topology (`igw lab`, ../../shared TESTBED.md) in one run. Stock = FRR with its role
# route-maps flipped by a shell script (keepalive over the sync link), conntrackd FTFW with
# `conntrackd -c` on promotion, Squid (stock.sh, stock/). igw = the lab as `igw lab up`
# builds it (arbiter, conntrack-sync, proxy); its column is measured when this igw binary
# has the arbiter (`igw arbiter --help`), else reported as not available.
#
# Each run: 100 long-lived TCP flows + a UDP probe every 10 ms from tenant-a to the echo
# service (`igw lab traffic`), failure injected BENCH_FAIL_AT_S after the stream starts, then
# figures: outage = longest run of lost probes, surviving flows = flows still echoing both
# ways at the end, un-NATed = packets with a tenant source address seen by the upstream.
# Scenarios: freeze (the active's traffic dropped in one nft transaction and its processes
# SIGSTOPped: a hard failure without loss of carrier) and planned (switchover on request).
# The lab's traffic stays in its namespaces; every loop is bounded.
#
#   bench/failover/run.sh [path/to/igw]      (default: $CARGO_TARGET_DIR or target, release)
#
# Knobs: BENCH_RUNS (3), BENCH_SCENARIOS ("freeze planned"), BENCH_SIDES ("stock igw"),
# BENCH_FLOWS (100), BENCH_INTERVAL_MS (10), BENCH_DURATION_S (8), BENCH_FAIL_AT_S (2),
# BENCH_CT_ENTRIES (0: extra conntrack entries loaded on the active before each run),
# BENCH_OUT (bench/failover/RESULTS.md).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
IGW=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/release/igw}
RUNS=${BENCH_RUNS:-3}
SCENARIOS=${BENCH_SCENARIOS:-"freeze planned"}
SIDES=${BENCH_SIDES:-"stock igw"}
FLOWS=${BENCH_FLOWS:-100}
INTERVAL=${BENCH_INTERVAL_MS:-10}
DURATION=${BENCH_DURATION_S:-8}
FAIL_AT=${BENCH_FAIL_AT_S:-2}
CT_ENTRIES=${BENCH_CT_ENTRIES:-0}
OUT=${BENCH_OUT:-$HERE/RESULTS.md}

[ "$(id -u)" = 0 ] || { echo "bench/failover needs root (namespaces, nftables, FRR)" >&2; exit 1; }
for t in ip nft vtysh conntrackd conntrack squid python3 curl; do
  command -v $t > /dev/null || { echo "missing $t (scripts/deps.sh lab)" >&2; exit 1; }
done
[ -x "$IGW" ] || { echo "no igw binary at $IGW (cargo build --release -p igw)" >&2; exit 1; }

STATE=$(mktemp -d /tmp/igw-bench-failover.XXXXXX)
chmod 755 "$STATE"  # FRR and Squid drop privileges and must reach their files
RESULTS=$STATE/results.jsonl
: > "$RESULTS"
UPS=()      # labs that are up (prefixes), taken down on exit
BG=()       # background processes this script started (PIDs)
CT_MAX0=$(sysctl -n net.netfilter.nf_conntrack_max)
cleanup() {
  for p in "${BG[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${UPS[@]}"; do "$IGW" lab down --prefix "$p" --state-dir "$STATE" > /dev/null 2>&1 || true; done
  rm -rf "$STATE"
  sysctl -qw net.netfilter.nf_conntrack_max="$CT_MAX0" 2> /dev/null || true
}
trap cleanup EXIT
# The table limit is global (set from the initial namespace, read-only inside the lab's):
# the active's entries and their copy on the standby (direct inject) must both fit.
# Restored on exit.
if [ $((2 * CT_ENTRIES + 65536)) -gt "$CT_MAX0" ]; then
  sysctl -qw net.netfilter.nf_conntrack_max=$((2 * CT_ENTRIES + 65536))
fi

has_arbiter() { "$IGW" arbiter --help > /dev/null 2>&1; }

# --- the lab, as seen from the ToR and the upstream --------------------------------------
vty() { ip netns exec "$P-$1" vtysh -N "$P-$1" -c "$2" 2> /dev/null; }

# "NODE LEN OTHERLEN PATHS" of the best route at a router: which gateway it goes through.
best() { # ROUTER PREFIX
  vty "$1" "show ip bgp $2 json" | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    print("none 0 0 0"); sys.exit()
paths = d.get("paths", [])
node = {"198.19.1.1": "igw-a", "198.19.1.3": "igw-b", "198.19.2.1": "igw-a", "198.19.2.3": "igw-b"}
b = [p for p in paths if (p.get("bestpath") or {}).get("overall")]
o = [p for p in paths if not (p.get("bestpath") or {}).get("overall")]
if not b:
    print("none 0 0", len(paths)); sys.exit()
print(node.get(b[0]["nexthops"][0]["ip"], "?"), b[0]["aspath"]["length"],
      o[0]["aspath"]["length"] if o else 0, len(paths))'
}

# The active gateway: the one both the ToR and the upstream send through.
active() {
  local t u
  t=$(best tor 0.0.0.0/0 | cut -d' ' -f1)
  u=$(best upstream 198.51.100.10/32 | cut -d' ' -f1)
  if [ "$t" = "$u" ]; then echo "$t"; else echo "split:$t/$u"; fi
}
other() { [ "$1" = igw-a ] && echo igw-b || echo igw-a; }

# Steady state: both gateways' routes at the ToR and the upstream, one clearly preferred
# (shorter AS path, not a tie), the same node on both sides. Bounded wait.
# It must hold for 3 s in a row: a thawed node's sessions may still flap once (its hold
# timers expired while it was stopped).
converged() { # SECONDS
  local end=$((SECONDS + $1)) t u held=0
  while [ $SECONDS -lt $end ]; do
    t=$(best tor 0.0.0.0/0); u=$(best upstream 198.51.100.10/32)
    read -r tn tl to tp <<< "$t"; read -r un ul uo up <<< "$u"
    if [ "$tp" = 2 ] && [ "$up" = 2 ] && [ "$tn" = "$un" ] && [ "$tl" -lt "$to" ] && [ "$ul" -lt "$uo" ]; then
      held=$((held + 1))
      [ $held -ge 6 ] && return 0
    else
      held=0
    fi
    sleep 0.5
  done
  echo "bench: no steady state after $1 s (tor: $t; upstream: $u)" >&2
  return 1
}

# Packets with a tenant source address arriving at the upstream from a gateway: NAT skipped.
watch_unnat() {
  ip netns exec "$P-upstream" nft -f - << 'NFT'
table inet benchwatch {
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		iifname { "a0", "b0" } ip saddr { 198.18.1.0/24, 198.18.2.0/24 } counter
	}
}
NFT
}
unnat() { ip netns exec "$P-upstream" nft list table inet benchwatch | grep -o 'packets [0-9]*' | cut -d' ' -f2; }

# Extra conntrack entries on the active (and, through conntrack sync, the standby): UDP
# entries with a long timeout between documentation addresses that no traffic uses.
load_entries() { # NODE COUNT
  [ "$2" -gt 0 ] || return 0
  ip netns exec "$P-$1" python3 "$HERE/ct_fill.py" "$2"
}

# The standby holds the loaded entries (igw: in its cache and, with direct inject, its
# kernel; stock: conntrackd's external cache), so a run measures the failover of a pair in
# steady state, not one still replicating. Bounded; prints how long it took.
replicated() { # SIDE STANDBY COUNT
  local end=$((SECONDS + 180)) got=0
  while [ $SECONDS -lt $end ]; do
    if [ "$1" = igw ]; then
      got=$("$IGW" --node "$STATE/$P/$2/node.toml" conntrack status --json 2> /dev/null |
        python3 -c 'import json,sys; d=json.load(sys.stdin); i=d.get("inject"); print(min(d["entries_cached"], i["in_kernel"]) if i else d["entries_cached"])' 2> /dev/null || echo 0)
    else
      got=$(ip netns exec "$P-$2" conntrackd -C "$(stock_dir "$2")/conntrackd.conf" -s 2> /dev/null |
        awk '/cache external/ { f = 1 } f && !done && /current active connections/ { print $NF; done = 1 }')
    fi
    [ "${got:-0}" -ge "$3" ] && return 0
    sleep 0.5
  done
  echo "bench: $1: the standby $2 holds only $got of $3 entries after 180 s" >&2
}

# --- sides -------------------------------------------------------------------------------
side_up() { # SIDE
  "$IGW" lab up --prefix "$P" --state-dir "$STATE" > "$STATE/$P-up.log" 2>&1 || {
    cat "$STATE/$P-up.log" >&2; return 1; }
  UPS+=("$P")
  if [ "$1" = stock ]; then "$HERE/stock.sh" setup "$P" "$STATE"; fi
  watch_unnat
}

stock_dir() { echo "$STATE/$P/stock/$1"; }
role() { # NODE primary|backup
  ip netns exec "$P-$1" "$HERE/stock/role.sh" "$2" "$(stock_dir "$1")" "$P-$1"
}
sync_addr() { [ "$1" = igw-a ] && echo 198.19.255.1 || echo 198.19.255.2; }

inject() { # SIDE SCENARIO ACTIVE
  local standby; standby=$(other "$3")
  case "$1/$2" in
    */freeze) "$IGW" lab fail --prefix "$P" --state-dir "$STATE" "$3" --how freeze > /dev/null ;;
    stock/planned)
      # What keepalived does on a priority change: both notify scripts at once.
      role "$standby" primary & local p1=$!
      role "$3" backup & local p2=$!
      wait $p1 $p2 ;;
    igw/planned)
      ip netns exec "$P-$3" "$IGW" failover --node "$STATE/$P/$3/node.toml" > "$STATE/failover.out" 2>&1 ||
        { cat "$STATE/failover.out" >&2; return 1; } ;;
  esac
}

recover() { # SIDE SCENARIO FAILED_NODE
  case "$2" in
    freeze)
      "$IGW" lab restore --prefix "$P" --state-dir "$STATE" "$3" > /dev/null
      # Stock: the operator's recovery (the script would otherwise keep the thawed node
      # active: it has no election); igw: the arbiter brings it back as standby itself.
      if [ "$1" = stock ]; then role "$3" backup; fi ;;
  esac
}

one_run() { # SIDE SCENARIO N
  local side=$1 sc=$2 n=$3 act standby watcher="" u0 u1
  # Every run starts from a steady pair; one that does not settle is skipped and counted
  # (on a loaded 2-core machine BFD at 100 ms x 3 flaps now and then).
  if ! converged 60; then
    SKIPPED[$side]=$((${SKIPPED[$side]:-0} + 1))
    return 0
  fi
  act=$(active)
  case "$act" in igw-a|igw-b) ;; *) SKIPPED[$side]=$((${SKIPPED[$side]:-0} + 1)); return 0 ;; esac
  if [ "$CT_ENTRIES" -gt 0 ]; then
    # Loading (and replicating) the entries takes seconds and loads the pair: who carries
    # the traffic is read again afterwards, from a steady state.
    load_entries "$act" "$CT_ENTRIES"
    replicated "$side" "$(other "$act")" "$CT_ENTRIES"
    if ! converged 60; then
      SKIPPED[$side]=$((${SKIPPED[$side]:-0} + 1))
      return 0
    fi
    act=$(active)
  fi
  case "$act" in igw-a|igw-b) ;; *) SKIPPED[$side]=$((${SKIPPED[$side]:-0} + 1)); return 0 ;; esac
  standby=$(other "$act")
  if [ "$side" = stock ] && [ "$sc" = freeze ]; then
    ip netns exec "$P-$standby" "$HERE/stock/role.sh" watch "$(stock_dir "$standby")" "$P-$standby" \
      "$(sync_addr "$act")" $((DURATION + 30)) &
    watcher=$!; BG+=("$watcher")
  fi
  u0=$(unnat)
  local tj=$STATE/traffic.json te=$STATE/traffic.err
  "$IGW" lab traffic --prefix "$P" --state-dir "$STATE" --from tenant-a --flows "$FLOWS" \
    --interval-ms "$INTERVAL" --duration-s "$DURATION" > "$tj" 2> "$te" &
  local tp=$!; BG+=("$tp")
  local end=$((SECONDS + 30))
  until grep -q "stream started" "$te" 2> /dev/null; do
    [ $SECONDS -lt $end ] && kill -0 "$tp" 2> /dev/null || { cat "$te" >&2; return 1; }
    sleep 0.05
  done
  sleep "$FAIL_AT"
  inject "$side" "$sc" "$act"
  wait "$tp" || { cat "$te" >&2; return 1; }
  [ -z "$watcher" ] || kill "$watcher" 2> /dev/null || true
  # Where traffic goes now: a run whose switch did not happen must not pass for one
  # without loss.
  local after; after=$(active)
  u1=$(unnat)
  local commit_ms=null
  if [ "$side" = stock ]; then
    # How long `conntrackd -c` took on the promoted node (role.log timestamps).
    commit_ms=$(awk '/primary: begin/ {b=$1} /external cache committed/ {c=$1} END {if (b && c) printf "%.0f", (c-b)*1000; else print "null"}' \
      "$(stock_dir "$standby")/role.log")
  elif [ "$after" = "$standby" ]; then
    # igw: the promotion commit conntrack-sync reported on the promoted node (with direct
    # inject, the delta its kernel did not hold yet).
    commit_ms=$("$IGW" --node "$STATE/$P/$standby/node.toml" conntrack status --json 2> /dev/null |
      python3 -c 'import json,sys; c=json.load(sys.stdin).get("last_commit") or {}; print(round(c["duration_ms"]) if "duration_ms" in c else "null")' 2> /dev/null || echo null)
  fi
  python3 - "$tj" "$side" "$sc" "$n" "$act" $((u1 - u0)) "$commit_ms" "$CT_ENTRIES" "$after" >> "$RESULTS" << 'PY'
import json, sys
t = json.load(open(sys.argv[1]))
side, sc, n, act, unnat, commit, ct, after = sys.argv[2:10]
print(json.dumps({"side": side, "scenario": sc, "run": int(n), "failed_node": act, "active_after": after,
    "sent": t["stream"]["sent"], "lost": t["stream"]["lost"], "outage_ms": t["stream"]["max_gap_ms"],
    "flows": t["flows"]["opened"], "alive": t["flows"]["alive_at_end"],
    "max_stall_ms": t["flows"]["max_stall_ms"], "flow_errors": t["flows"]["failed"][:3],
    "unnat": int(unnat), "commit_ms": None if commit == "null" else int(commit), "ct_entries": int(ct)}))
PY
  tail -1 "$RESULTS" | sed "s/^/bench: /"
  if [ "$sc" = freeze ]; then recover "$side" "$sc" "$act"; fi
  # A fresh table for the next run's entries (the fill ones are per run).
  if [ "$CT_ENTRIES" -gt 0 ]; then
    for g in igw-a igw-b; do ip netns exec "$P-$g" conntrack -D -s 198.18.1.250 > /dev/null 2>&1 || true; done
  fi
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%FT%TZ)
declare -A NOTE SKIPPED
for side in $SIDES; do
  if [ "$side" = igw ] && ! has_arbiter; then
    NOTE[igw]="not measured: this igw binary has no arbiter (\`igw arbiter\`)"
    echo "bench: igw side skipped: ${NOTE[igw]}" >&2
    continue
  fi
  P=igwbf${side:0:1}$$
  P=${P:0:12}
  echo "bench: $side: lab up ($P)"
  side_up "$side"
  for sc in $SCENARIOS; do
    for n in $(seq 1 "$RUNS"); do one_run "$side" "$sc" "$n"; done
  done
  "$IGW" lab down --prefix "$P" --state-dir "$STATE" > /dev/null
  UPS=("${UPS[@]/$P/}")
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 "$HERE/report.py" "$RESULTS" > "$STATE/table.md"
{
  echo "# bench/failover results"
  echo
  echo "- date: $STARTED"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -r)"
  echo "- load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER (the machine is shared: other builds run)"
  echo "- igw: $("$IGW" --version 2>/dev/null) ($IGW), FRR $(dpkg-query -W -f '${Version}' frr 2>/dev/null), conntrackd $(dpkg-query -W -f '${Version}' conntrackd 2>/dev/null), $(squid -v | head -1)"
  echo "- command: \`BENCH_RUNS=$RUNS BENCH_SCENARIOS=\"$SCENARIOS\" BENCH_FLOWS=$FLOWS BENCH_INTERVAL_MS=$INTERVAL BENCH_DURATION_S=$DURATION BENCH_FAIL_AT_S=$FAIL_AT BENCH_CT_ENTRIES=$CT_ENTRIES bench/failover/run.sh\`"
  echo "- per run: $FLOWS TCP flows + UDP probes every $INTERVAL ms from tenant-a to 203.0.113.7:7 for $DURATION s; failure at +$FAIL_AT s; BFD 100 ms x 3 on every BGP session (examples/small)"
  for k in "${!NOTE[@]}"; do echo "- $k: ${NOTE[$k]}"; done
  for k in "${!SKIPPED[@]}"; do echo "- $k: ${SKIPPED[$k]} run(s) skipped: no steady pair (one node carrying both directions for 3 s) within 60 s before the run"; done
  echo
  cat "$STATE/table.md"
} > "$OUT.new"
mv "$OUT.new" "$OUT"
cat "$OUT"
