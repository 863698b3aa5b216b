#!/usr/bin/env bash
# Role-change latency through FRR on the igw lab (see role_change.py): the arbiter's driver
# (`igw fabric set-prepend`: role route-maps re-pointed over bgpd's vty socket) next to what
# the stock script does (route-maps edited by vtysh + `clear bgp * soft out`). Writes
# RESULTS.md here. Root; a few minutes.
set -euo pipefail
cd "$(dirname "$0")"
IGW=${IGW:-${CARGO_TARGET_DIR:-../../target}/release/igw}
[ -x "$IGW" ] || IGW=${CARGO_TARGET_DIR:-../../target}/debug/igw
RUNS=${RUNS:-8}
PREFIX=igwrc$$
STATE=$(mktemp -d)
trap '"$IGW" lab down --prefix $PREFIX --state-dir $STATE >/dev/null 2>&1 || true; rm -rf $STATE' EXIT
"$IGW" lab up --prefix $PREFIX --state-dir "$STATE" >/dev/null
role() { ip netns exec $PREFIX-$1 "$IGW" status --json --node "$STATE/$PREFIX/$1/node.toml" 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['arbiter']['role'])"; }
SB=""
for i in $(seq 1 60); do
  for g in igw-a igw-b; do [ "$(role $g)" = standby ] && SB=$g; done
  [ -n "$SB" ] && break; sleep 1
done
[ -n "$SB" ] || { echo "no standby gateway" >&2; exit 1; }
# The standby's arbiter would set its prepend back (reconciliation): stop it (SIGTERM).
PID=$(python3 -c "import json; print([p['pid'] for p in json.load(open('$STATE/$PREFIX/lab.json'))['procs'] if p['name']=='$SB-arbiter'][0])")
kill -TERM "$PID"; sleep 2
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
OUT=$(python3 role_change.py $PREFIX "$STATE" $SB igw $RUNS "$IGW"; python3 role_change.py $PREFIX "$STATE" $SB classic $RUNS "$IGW")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "# Role-change latency through FRR"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), FRR $(dpkg-query -W -f='${Version}' frr 2>/dev/null), binary $IGW"
  echo "Load average before / after: $LOAD_BEFORE / $LOAD_AFTER (other builds running on the machine)."
  echo "Command: \`bench/arbiter/run.sh\` (RUNS=$RUNS). Time = from the command's start until the"
  echo "ToR's kernel route for 0.0.0.0/0 and the upstream's for the NAT pool go via the gateway"
  echo "(\`ip -ts monitor route\` in their namespaces)."
  echo
  echo '```'
  echo "$OUT"
  echo '```'
} > RESULTS.md
cat RESULTS.md
