#!/usr/bin/env bash
# Turns a running `igw lab` into the stock setup that igw replaces, on the same topology:
# igw's daemons and ruleset on igw-a/igw-b are replaced by a hand-written nftables ruleset
# (stock/nft.conf), conntrackd FTFW on the sync link, Squid (intercept) and the role script
# stock/role.sh; FRR (rendered by the lab) stays, its role route-maps now flipped by that
# script. Every process started here is recorded in the lab's lab.json, so `igw lab down`
# stops it by PID like every lab process.
#
#   stock.sh setup PREFIX STATE_DIR      igw-a active, igw-b standby; returns when both run
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cmd=$1 PREFIX=$2 STATE=$3
LAB=$STATE/$PREFIX
ns() { echo "$PREFIX-$1"; }

# Appends (or with "del", removes) a process to/from lab.json.
record() { # add NAME HOST PID LOG | del NAME
  python3 - "$LAB/lab.json" "$@" <<'PY'
import json, sys
path, op = sys.argv[1], sys.argv[2]
s = json.load(open(path))
if op == "add":
    name, host, pid, log = sys.argv[3:7]
    s["procs"].append({"name": name, "host": host, "pid": int(pid), "log": log})
else:
    s["procs"] = [p for p in s["procs"] if p["name"] != sys.argv[3]]
json.dump(s, open(path, "w"), indent=2)
PY
}

pid_of() { # NAME -> PID from lab.json (empty if none)
  python3 -c 'import json,sys; print(next((str(p["pid"]) for p in json.load(open(sys.argv[1]))["procs"] if p["name"]==sys.argv[2]), ""))' "$LAB/lab.json" "$1"
}

# Starts CMD... in HOST's namespace in its own session (PID = process group), logged.
spawn() { # NAME HOST CMD...
  local name=$1 host=$2; shift 2
  local log=$LAB/logs/$name.log
  setsid ip netns exec "$(ns "$host")" "$@" > "$log" 2>&1 < /dev/null &
  record add "$name" "$host" $! "$log"
}

wait_for() { # SECONDS WHAT CMD...
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" > /dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { echo "stock: $what did not come up in ${limit}s" >&2; return 1; }
    sleep 0.1
  done
}

setup() {
  for gw in igw-a igw-b; do
    # igw's daemons on this node go (by the PIDs the lab recorded), and its ruleset.
    for d in conntrack-sync proxy arbiter; do
      pid=$(pid_of "$gw-$d")
      if [ -n "$pid" ]; then
        kill -KILL -- "-$pid" 2> /dev/null || kill -KILL "$pid" 2> /dev/null || true
        record del "$gw-$d"
      fi
    done
    ip netns exec "$(ns $gw)" nft delete table inet igw 2> /dev/null || true
    ip netns exec "$(ns $gw)" nft -f "$HERE/stock/nft.conf"
    local dir=$LAB/stock/$gw self peer
    mkdir -p "$dir"
    if [ $gw = igw-a ]; then self=198.19.255.1 peer=198.19.255.2; else self=198.19.255.2 peer=198.19.255.1; fi
    sed -e "s|@SELF@|$self|; s|@PEER@|$peer|; s|@DIR@|$dir|g" "$HERE/stock/conntrackd.conf.in" > "$dir/conntrackd.conf"
    sed -e "s|@DIR@|$dir|g" "$HERE/stock/squid.conf.in" > "$dir/squid.conf"
    chown proxy "$dir"
    spawn "$gw-conntrackd" $gw conntrackd -C "$dir/conntrackd.conf"
    spawn "$gw-squid" $gw squid -N -f "$dir/squid.conf"
  done
  for gw in igw-a igw-b; do
    local dir=$LAB/stock/$gw
    wait_for 10 "conntrackd on $gw" ip netns exec "$(ns $gw)" conntrackd -C "$dir/conntrackd.conf" -s
    wait_for 20 "squid on $gw" ip netns exec "$(ns $gw)" bash -c 'exec 3<>/dev/tcp/127.0.0.1/3129'
  done
  ip netns exec "$(ns igw-a)" "$HERE/stock/role.sh" classic "$LAB/stock/igw-a" "$(ns igw-a)" 198.19.1.0 198.19.2.0
  ip netns exec "$(ns igw-b)" "$HERE/stock/role.sh" classic "$LAB/stock/igw-b" "$(ns igw-b)" 198.19.1.2 198.19.2.2
  ip netns exec "$(ns igw-a)" "$HERE/stock/role.sh" primary "$LAB/stock/igw-a" "$(ns igw-a)"
  ip netns exec "$(ns igw-b)" "$HERE/stock/role.sh" backup "$LAB/stock/igw-b" "$(ns igw-b)"
}

case "$cmd" in
  setup) setup ;;
  *) echo "usage: stock.sh setup PREFIX STATE_DIR" >&2; exit 2 ;;
esac
