#!/bin/bash
# igw conntrack-sync next to conntrackd (FTFW over UDP), in the same two throwaway network
# namespaces A (active) and B (standby) joined by a sync link, one daemon pair at a time,
# in one run. For each size N:
#   - replication: N established SNAT entries are created in A's kernel table with batched
#     CT_NEW (examples/ct_fill.rs, the same for both daemons); measured until B's cache holds
#     N (igw: entries_cached from its control socket; conntrackd: `conntrackd -s`, external cache
#     "current active connections"), polled every 50 ms;
#   - commit: time of `igw conntrack commit` vs `conntrackd -c`, and the entries then in B's
#     kernel (`conntrack -C`). igw runs twice: with direct inject (the default: B's kernel
#     fills as entries arrive, measured until `conntrack -C` in B reaches N, and the
#     promotion commit writes only the delta) and in cache mode (B's kernel empty, the
#     commit writes all N, like `conntrackd -c`);
#   - CPU (utime+stime of each daemon over the run) and RSS of the standby.
# Then churn (CHURN_LIVE entries, default 50000, replaced batch by batch for CHURN_SECS,
# default 10 s, as fast as the kernel takes them: NEW + DESTROY events): from the start
# until B holds exactly what A holds, entries/s replicated, and the difference left (lost).
# Then bulk transfer (RESYNC_N entries, default 500000, in A's table before the daemons
# start; the daemons alone): time until B holds them all, CPU per 100k entries per side.
# Usage (root): [SECTIONS="sizes churn bulk"] [CHURN_DAEMONS="inject cache conntrackd"] [CHURN_REPS=1] bench/conntrack/run.sh [sizes...]
#   (sizes default: 10000 100000). SECTIONS picks the sections to run (so that each can
#   run under its own exclusive hold of the machine); each one replaces its own part of
#   bench/conntrack/RESULTS.md (between its markers) and leaves the others and the
#   hand-written reading alone. Every wait is bounded (60 s per step).
set -euo pipefail
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
SECTIONS=" ${SECTIONS:-sizes churn bulk} "
has() { [[ $SECTIONS == *" $1 "* ]]; }
ARGS="$*"
cd "$(dirname "$0")/../.."
SIZES=("${@:-10000 100000}")
has sizes || SIZES=()
read -r -a SIZES <<<"${SIZES[*]}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${IGW:-}" ]; then
  cargo build --release -q -p igw
  IGW=$CARGO_TARGET_DIR/release/igw
fi
[ -n "${FILL:-}" ] || cargo build --release -q -p igw-conntrack-sync --example ct_fill
FILL=${FILL:-$CARGO_TARGET_DIR/release/examples/ct_fill}
A=igwbcta$$; B=igwbctb$$
WORK=$(mktemp -d /tmp/igwbct.XXXXXX)
PIDS=()
CT_MAX0=$(sysctl -n net.netfilter.nf_conntrack_max)
cleanup() {
  sysctl -qw net.netfilter.nf_conntrack_max="$CT_MAX0" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
# The table limit is global (set here in the initial namespace): A's N entries and B's copy
# must fit. Restored on exit.
MAXN=0; for n in "${SIZES[@]}" "${CHURN_LIVE:-50000}" "${RESYNC_N:-500000}"; do [ "$n" -gt "$MAXN" ] && MAXN=$n; done
if [ $((2 * MAXN + 65536)) -gt "$CT_MAX0" ]; then
  sysctl -qw net.netfilter.nf_conntrack_max=$((2 * MAXN + 65536))
fi
ip netns add "$A"; ip netns add "$B"
for n in "$A" "$B"; do ip -n "$n" link set lo up; done
ip -n "$A" link add ay type veth peer name by netns "$B"
ip -n "$A" addr add 198.19.255.1/30 dev ay; ip -n "$A" link set ay up
ip -n "$B" addr add 198.19.255.2/30 dev by; ip -n "$B" link set by up
for n in "$A" "$B"; do
  ip netns exec "$n" nft -f - <<'NFT'
table ip igwnat { chain post { type nat hook postrouting priority srcnat; policy accept; ip saddr 198.18.0.0/16 snat to 198.51.100.10; }; }
NFT
done
printf '0123456789abcdef0123456789abcdef-bench-psk\n' >"$WORK/psk"
node() { # name id peer me peerip
  cat >"$WORK/$1.toml" <<TOML
[node]
name = "$1"
id = $2
router_id = "198.19.0.$2"
[interfaces]
fabric = ["tor0"]
upstream = ["up0"]
sync = "sync0"
[bgp]
asn = 65010
[peer]
name = "$3"
sync_address = "$5"
[sync]
address = "$4"
key_file = "psk"
[nat]
pool = ["198.51.100.10"]
[control]
run_dir = "$WORK/run-$1"
TOML
}
node igw-a 1 igw-b 198.19.255.1 198.19.255.2
node igw-b 2 igw-a 198.19.255.2 198.19.255.1
cp examples/small/policy.toml "$WORK/policy.toml"
ctd_conf() { # name me peer iface
  mkdir -p "$WORK/ctd-$1"
  cat >"$WORK/ctd-$1/conntrackd.conf" <<CONF
Sync {
	Mode FTFW {
	}
	UDP {
		IPv4_address $2
		IPv4_Destination_Address $3
		Port 3780
		Interface $4
		SndSocketBuffer 24985600
		RcvSocketBuffer 24985600
		Checksum on
	}
}
General {
	HashSize 262144
	HashLimit 2097152
	LogFile $WORK/ctd-$1/log
	Syslog off
	LockFile $WORK/ctd-$1/lock
	UNIX {
		Path $WORK/ctd-$1/ctl
	}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 268435456
	Filter From Kernelspace {
		Address Ignore {
			IPv4_address 127.0.0.1
			IPv4_address 198.19.255.1
			IPv4_address 198.19.255.2
		}
	}
}
CONF
}
ctd_conf a 198.19.255.1 198.19.255.2 ay
ctd_conf b 198.19.255.2 198.19.255.1 by

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
# Polls "$@" (prints a number) every 50 ms until it compares to $WANT with OP (-ge, -eq);
# bounded by SECS; prints the last number, fails if never.
poll_num() { # OP SECS cmd...
  local op=$1 secs=$2; shift 2
  local until=$(( $(date +%s) + secs )) got=0
  while [ "$(date +%s)" -lt "$until" ]; do
    got=$({ "$@" 2>/dev/null || true; } | head -n1); got=${got//[^0-9]/}; got=${got:-0}
    [ "$got" "$op" "$WANT" ] && { echo "$got"; return 0; }
    sleep 0.05
  done
  echo "$got"; return 1
}
# Until "$@" reaches $WANT; bounded by 60 s.
wait_count() {
  local got
  got=$(poll_num -ge 60 "$@") && { echo "$got"; return 0; }
  echo "$got (short of $WANT after 60 s)"; return 1
}
# Until "$@" prints exactly $WANT; bounded by SECS.
wait_eq() { # SECS cmd...
  local secs=$1; shift
  poll_num -eq "$secs" "$@"
}
# igw's standby polled over its control socket by one long-lived poller (no process start
# per poll, which costs more than conntrackd's `-s` under load); prints the count reached.
igw_wait_cached() {
  python3 - "$WORK/run-igw-b/conntrack-sync.sock" "$WANT" <<'PY'
import json, socket, sys, time
path, want = sys.argv[1], int(sys.argv[2])
end, got = time.time() + 60, 0
while time.time() < end:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b'{"cmd":"status"}\n')
    got = json.loads(s.makefile().readline())["data"]["entries_cached"]
    s.close()
    if got >= want:
        break
    time.sleep(0.05)
print(got if got >= want else f"{got} (short of {want} after 60 s)", "%.6f" % time.time())
PY
}
igw_cached() {
  "$IGW" --node "$WORK/igw-b.toml" conntrack status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["entries_cached"])'
}
ctd_cached() {
  ip netns exec "$B" conntrackd -C "$WORK/ctd-b/conntrackd.conf" -s 2>/dev/null | awk '/cache external/ { f = 1 } f && !done && /current active connections/ { print $NF; done = 1 }'
}
kernel_count() { ip netns exec "$1" conntrack -C; }
# The generator's entries only (tcp to port 5000), not the sync link's own connection.
gen_count() { ip netns exec "$1" conntrack -L -p tcp --dport 5000 2>/dev/null | wc -l; }
flush() { for n in "$A" "$B"; do ip netns exec "$n" conntrack -F 2>/dev/null || true; done; }

igw_status() { # node field-expression
  "$IGW" --node "$WORK/$1.toml" conntrack status --json | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a != "" && b > 0) printf "%.2f", a/b; else print "-" }'; }
# CPU-seconds per 100k entries (or events): cpu n
per100k() { awk -v c="$1" -v n="$2" 'BEGIN{ if (c != "-" && n > 0) printf "%.3f", c * 100000 / n; else print "-" }'; }

start_igw() { # inject|cache
  local flag=--no-direct-inject; [ "$1" = inject ] && flag=--direct-inject
  $PIN_B ip netns exec "$B" "$IGW" --node "$WORK/igw-b.toml" --policy "$WORK/policy.toml" conntrack-sync --role standby $flag >"$WORK/igw-b.log" 2>&1 &
  PB=$!; PIDS+=("$PB")
  $PIN_A ip netns exec "$A" "$IGW" --node "$WORK/igw-a.toml" --policy "$WORK/policy.toml" conntrack-sync --role active $flag >"$WORK/igw-a.log" 2>&1 &
  PA=$!; PIDS+=("$PA")
  WANT=1 wait_count bash -c "'$IGW' --node '$WORK/igw-a.toml' conntrack status --json | grep -c '\"peer_connected\": true'" >/dev/null
}
start_ctd() {
  rm -f "$WORK"/ctd-*/lock "$WORK"/ctd-*/ctl
  $PIN_B ip netns exec "$B" conntrackd -C "$WORK/ctd-b/conntrackd.conf" >/dev/null 2>&1 &
  PB=$!; PIDS+=("$PB")
  $PIN_A ip netns exec "$A" conntrackd -C "$WORK/ctd-a/conntrackd.conf" >/dev/null 2>&1 &
  PA=$!; PIDS+=("$PA")
  WANT=1 wait_count bash -c "ip netns exec $B conntrackd -C $WORK/ctd-b/conntrackd.conf -s >/dev/null && echo 1" >/dev/null
  sleep 1
}
stop_pair() { kill "$PA" "$PB"; wait "$PA" "$PB" 2>/dev/null || true; }

PIN_A=""; PIN_B=""
ROWS=()
row() { ROWS+=("$1"); echo "$1"; }
for N in ${SIZES[@]+"${SIZES[@]}"}; do
  WANT=$N
  declare -A COMMIT=() REP=()
  # --- igw conntrack-sync, direct inject then cache mode ---
  for mode in inject cache; do
    flush
    start_igw "$mode"
    rss0=$(rss_mib "$PB"); ca0=$(cpu_s "$PA"); cb0=$(cpu_s "$PB")
    # The poller starts before the fill (its own start-up is not counted) and stamps the
    # moment B's cache reached N.
    igw_wait_cached >"$WORK/poll" & PP=$!
    t0=$(now); fill=$(ip netns exec "$A" "$FILL" "$N"); t1=$(now)
    wait "$PP"; t2=$(awk '{print $NF}' "$WORK/poll"); got=$(awk '{$NF=""; print}' "$WORK/poll")
    inkernel=""
    if [ "$mode" = inject ]; then
      WANT=$N wait_count kernel_count "$B" >/dev/null || true; t3=$(now)
      inkernel="; B's kernel held N $(secs "$t1" "$t3") s after the fill ($(kernel_count "$B") entries)"
    fi
    ca=$(awk -v a="$ca0" -v b="$(cpu_s "$PA")" 'BEGIN{printf "%.2f", b-a}')
    cb=$(awk -v a="$cb0" -v b="$(cpu_s "$PB")" 'BEGIN{printf "%.2f", b-a}')
    rss1=$(rss_mib "$PB")
    igw_rep=$(secs "$t0" "$t2"); igw_lag=$(secs "$t1" "$t2"); fill_s=$(secs "$t0" "$t1")
    per_entry=$(awk -v a="$rss0" -v b="$rss1" -v n="$N" 'BEGIN{printf "%.0f", (b-a)*1048576/n}')
    # control.metrics 127.0.0.1:9184 (default) + 2, conntrack-sync's offset.
    metrics=$(ip netns exec "$B" curl -s --max-time 5 "http://127.0.0.1:9186/metrics" | grep -c '^igw_conntrack_sync_' || true)
    t0=$(now); commit=$("$IGW" --node "$WORK/igw-b.toml" conntrack commit); t1=$(now)
    igw_commit=$(secs "$t0" "$t1"); igw_in=$(kernel_count "$B")
    COMMIT[$mode]=$igw_commit; REP[$mode]=$igw_rep
    st=$(igw_status igw-b 'd["messages"]["updates_received"], d["event_overruns"], d["resyncs"], d["messages"]["dropped"]["total"]')
    stop_pair
    label="igw conntrack-sync (cache mode)"; [ "$mode" = inject ] && label="igw conntrack-sync (direct inject)"
    row "| $N | $label | $igw_rep s ($(awk -v n="$N" -v s="$igw_rep" 'BEGIN{printf "%.0f", n/s}')/s), cached $got | $igw_lag s | $igw_commit s, $igw_in in kernel | A $ca s, B $cb s | $rss0 -> $rss1 MiB ($per_entry B/entry) | fill $fill_s s$inkernel; updates/overruns/resyncs/dropped: $st; metrics lines: $metrics; $commit |"
  done

  # --- conntrackd FTFW ---
  flush
  start_ctd
  rss0=$(rss_mib "$PB"); ca0=$(cpu_s "$PA"); cb0=$(cpu_s "$PB")
  { got=$(wait_count ctd_cached) || true; echo "$got $(now)"; } >"$WORK/poll" & PP=$!
  t0=$(now); fill=$(ip netns exec "$A" "$FILL" "$N"); t1=$(now)
  wait "$PP"; t2=$(awk '{print $NF}' "$WORK/poll"); got=$(awk '{$NF=""; print}' "$WORK/poll")
  ca=$(awk -v a="$ca0" -v b="$(cpu_s "$PA")" 'BEGIN{printf "%.2f", b-a}')
  cb=$(awk -v a="$cb0" -v b="$(cpu_s "$PB")" 'BEGIN{printf "%.2f", b-a}')
  rss1=$(rss_mib "$PB")
  ctd_rep=$(secs "$t0" "$t2"); ctd_lag=$(secs "$t1" "$t2"); fill_s=$(secs "$t0" "$t1")
  per_entry=$(awk -v a="$rss0" -v b="$rss1" -v n="$N" 'BEGIN{printf "%.0f", (b-a)*1048576/n}')
  t0=$(now); ip netns exec "$B" timeout 120 conntrackd -C "$WORK/ctd-b/conntrackd.conf" -c >/dev/null 2>&1 || true; t1=$(now)
  # If conntrackd returns before the kernel holds them all, wait for the kernel.
  WANT=$N wait_count kernel_count "$B" >/dev/null || true; t2=$(now)
  ctd_commit=$(secs "$t0" "$t2"); ctd_ret=$(secs "$t0" "$t1"); ctd_in=$(kernel_count "$B")
  stop_pair
  row "| $N | conntrackd FTFW | $ctd_rep s ($(awk -v n="$N" -v s="$ctd_rep" 'BEGIN{printf "%.0f", n/s}')/s), cached $got | $ctd_lag s | $ctd_commit s (command returned after $ctd_ret s), $ctd_in in kernel | A $ca s, B $cb s | $rss0 -> $rss1 MiB ($per_entry B/entry) | fill $fill_s s |"
  row "| $N | ratio igw/conntrackd | replication time: inject $(ratio "${REP[inject]}" "$ctd_rep"), cache $(ratio "${REP[cache]}" "$ctd_rep") | | promotion commit: direct inject $(ratio "${COMMIT[inject]}" "$ctd_commit") (conntrackd $(ratio "$ctd_commit" "${COMMIT[inject]}")x slower), cache mode $(ratio "${COMMIT[cache]}" "$ctd_commit") | | | |"
done

# --- churn -----------------------------------------------------------------------------
CHURN_LIVE=${CHURN_LIVE:-50000}; CHURN_SECS=${CHURN_SECS:-10}
CROWS=()
declare -A CRATE=() CPUA=() CPUB=() TCA=() TCB=()
# The same CPU by perf's task-clock (on-CPU time measured at each context switch), besides
# /proc's utime+stime: on the bench VM the two disagree for a daemon that shares its CPU with
# the generator (see RESULTS.md, third pass), and the generator's own task-clock shows which
# split of that CPU is consistent. Optional: "-" without perf.
tc_start() { # writes $WORK/tc-{a,b,gen}
  TC_PIDS=(); rm -f "$WORK"/tc-*
  command -v perf >/dev/null || return 0
  perf stat -x, -e task-clock -p "$PA" -o "$WORK/tc-a" 2>/dev/null & TC_PIDS+=($!)
  perf stat -x, -e task-clock -p "$PB" -o "$WORK/tc-b" 2>/dev/null & TC_PIDS+=($!)
  ( for _ in $(seq 500); do g=$(pgrep -n -f "^$FILL churn" || true); [ -n "$g" ] && break; sleep 0.01; done
    [ -n "$g" ] && exec perf stat -x, -e task-clock -p "$g" -o "$WORK/tc-gen" 2>/dev/null ) & TC_GEN=$!
}
tc_stop() {
  for p in ${TC_PIDS[@]+"${TC_PIDS[@]}"}; do kill -INT "$p" 2>/dev/null || true; done
  for p in ${TC_PIDS[@]+"${TC_PIDS[@]}"}; do wait "$p" 2>/dev/null || true; done
  wait "${TC_GEN:-}" 2>/dev/null || true
}
tc_s() { awk -F, '$3 ~ /task-clock/ { printf "%.2f", $1 / 1000; f = 1 } END { if (!f) print "-" }' "$WORK/tc-$1" 2>/dev/null || echo -; }
CHURN_WHO=""; has churn && CHURN_WHO=${CHURN_DAEMONS:-inject cache conntrackd}
# CHURN_REPS runs of every daemon, alternated (igw, conntrackd, igw, ...): the machine's
# drift between runs moves both sides alike, and the summary row gives each run's ratio and
# their median, since single runs move by 10-20 % on a shared VM.
CHURN_REPS=${CHURN_REPS:-1}
RATIO_A=(); RATIO_B=()
median() { printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# As on two machines: A's daemon and the generator on CPU 0, B's daemon (and the kernel
# work of its writes, done in its own system calls) on CPU 1.
PIN_A="taskset -c 0"; PIN_B="taskset -c 1"
crow() { CROWS+=("$1"); echo "$1"; }
for rep in $(seq "$CHURN_REPS"); do
for who in $CHURN_WHO; do
  flush
  if [ "$who" = conntrackd ]; then start_ctd; else start_igw "$who"; fi
  ca0=$(cpu_s "$PA"); cb0=$(cpu_s "$PB")
  tc_start
  t0=$(now)
  out=$($PIN_A ip netns exec "$A" timeout $((CHURN_SECS + 120)) "$FILL" churn "$CHURN_LIVE" "$CHURN_SECS")
  t1=$(now)
  events=$(awk '{ print $3 + $5 }' <<<"$out")
  in_a=$(gen_count "$A")
  WANT=$in_a
  case $who in
    conntrackd) got=$(wait_eq 60 ctd_cached) && ok=1 || ok=0 ;;
    *) got=$(wait_eq 60 igw_status igw-b 'd["entries_cached"]') && ok=1 || ok=0 ;;
  esac
  t2=$(now)
  extra=""
  if [ "$who" = inject ]; then
    kb=$(wait_eq 60 gen_count "$B") || true; t3=$(now)
    extra="; B's kernel $kb entries $(secs "$t1" "$t3") s after the churn; inject: $(igw_status igw-b 'd["inject"]')"
  fi
  if [ "$who" != conntrackd ]; then
    extra="$extra; overruns/resyncs/dropped: $(igw_status igw-b 'd["event_overruns"], d["resyncs"], d["messages"]["dropped"]["total"]') (A: $(igw_status igw-a 'd["event_overruns"], d["resyncs"]'))"
  fi
  ca=$(awk -v a="$ca0" -v b="$(cpu_s "$PA")" 'BEGIN{printf "%.2f", b-a}')
  cb=$(awk -v a="$cb0" -v b="$(cpu_s "$PB")" 'BEGIN{printf "%.2f", b-a}')
  tc_stop
  stop_pair
  total=$(secs "$t0" "$t2"); lag=$(secs "$t1" "$t2")
  rate=$(awk -v e="$events" -v s="$total" 'BEGIN{printf "%.0f", e/s}')
  CRATE[$who]=$rate
  CPUA[$who]=$(per100k "$ca" "$events"); CPUB[$who]=$(per100k "$cb" "$events")
  tca=$(tc_s a); tcb=$(tc_s b); tcg=$(tc_s gen)
  TCA[$who]=$(per100k "$tca" "$events"); TCB[$who]=$(per100k "$tcb" "$events")
  label="igw (cache mode)"; [ "$who" = inject ] && label="igw (direct inject)"; [ "$who" = conntrackd ] && label="conntrackd FTFW"
  [ "$CHURN_REPS" -gt 1 ] && label="$label, run $rep"
  [ "$ok" = 1 ] && state="equal ($got)" || state="**differs: B $got vs A $in_a after 60 s**"
  crow "| $label | $out | $events | $total s (lag $lag s) | $rate/s | $state | A ${CPUA[$who]}, B ${CPUB[$who]} (task-clock: A ${TCA[$who]}, B ${TCB[$who]}) | A $ca s, B $cb s; task-clock A $tca s, B $tcb s, generator $tcg s$extra |"
done
# CPU ratios: conntrackd's CPU per event over igw's (above 1: igw needs less).
has churn && crow "| ratio igw/conntrackd$([ "$CHURN_REPS" -gt 1 ] && echo ", run $rep") | | | | direct inject $(ratio "${CRATE[inject]:-}" "${CRATE[conntrackd]:-}"), cache mode $(ratio "${CRATE[cache]:-}" "${CRATE[conntrackd]:-}") | | conntrackd's CPU / igw's: inject A $(ratio "${CPUA[conntrackd]:-}" "${CPUA[inject]:-}"), B $(ratio "${CPUB[conntrackd]:-}" "${CPUB[inject]:-}"); cache A $(ratio "${CPUA[conntrackd]:-}" "${CPUA[cache]:-}"), B $(ratio "${CPUB[conntrackd]:-}" "${CPUB[cache]:-}"); by task-clock: cache A $(ratio "${TCA[conntrackd]:-}" "${TCA[cache]:-}"), B $(ratio "${TCB[conntrackd]:-}" "${TCB[cache]:-}") | |"
RATIO_A+=("$(ratio "${TCA[conntrackd]:-}" "${TCA[cache]:-}")"); RATIO_B+=("$(ratio "${TCB[conntrackd]:-}" "${TCB[cache]:-}")")
done
if has churn && [ "$CHURN_REPS" -gt 1 ]; then
  crow "| **median of $CHURN_REPS runs** | | | | | | by task-clock, conntrackd's CPU / igw's (cache mode): **A $(median "${RATIO_A[@]}")** (runs: ${RATIO_A[*]}), **B $(median "${RATIO_B[@]}")** (runs: ${RATIO_B[*]}) | |"
fi

# --- bulk transfer: the daemons alone, no generator ---------------------------------------
# A's table is filled first (RESYNC_N entries, default 500000); then the whole table is
# sent to B: igw's session-start resync (A's daemon started after B's), conntrackd's bulk
# send (`conntrackd -B` on A, after both started). Time from the start (of A's daemon, or
# of `-B`) until B's cache holds RESYNC_N. Pinned as above.
RESYNC_N=${RESYNC_N:-500000}
RROWS=()
declare -A RRATE=() RTOOK=() RCPUA=() RCPUB=() RCPUBT=()
BULK_WHO=""; has bulk && BULK_WHO="cache conntrackd"
for who in $BULK_WHO; do
  flush
  ip netns exec "$A" "$FILL" "$RESYNC_N" >/dev/null
  # The kernel dump alone, with igw's decoder (no daemon running): the floor of a
  # session-start resync's time.
  [ "$who" = cache ] && DUMP_FLOOR=$($PIN_A ip netns exec "$A" "$FILL" dump)
  WANT=$RESYNC_N
  startup=""
  if [ "$who" = conntrackd ]; then
    rm -f "$WORK"/ctd-*/lock "$WORK"/ctd-*/ctl
    $PIN_B ip netns exec "$B" conntrackd -C "$WORK/ctd-b/conntrackd.conf" >/dev/null 2>&1 &
    PB=$!; PIDS+=("$PB")
    $PIN_A ip netns exec "$A" conntrackd -C "$WORK/ctd-a/conntrackd.conf" >/dev/null 2>&1 &
    PA=$!; PIDS+=("$PA")
    ts=$(now)
    # A's daemon dumps its kernel table into its internal cache at start.
    WANT=$RESYNC_N wait_count bash -c "ip netns exec $A conntrackd -C $WORK/ctd-a/conntrackd.conf -s 2>/dev/null | awk '/cache internal/ { f = 1 } f && !d && /current active connections/ { print \$NF; d = 1 }'" >/dev/null || true
    startup=$(secs "$ts" "$(now)")
    rss0=$(rss_mib "$PB"); cb0=$(cpu_s "$PB")
    before=$(ctd_cached)
    { got=$(wait_count ctd_cached) || true; echo "$got $(now)"; } >"$WORK/poll" & PP=$!
    t0=$(now)
    ip netns exec "$A" conntrackd -C "$WORK/ctd-a/conntrackd.conf" -B >/dev/null 2>&1 || true
  else
    $PIN_B ip netns exec "$B" "$IGW" --node "$WORK/igw-b.toml" --policy "$WORK/policy.toml" conntrack-sync --role standby --no-direct-inject >"$WORK/igw-b.log" 2>&1 &
    PB=$!; PIDS+=("$PB")
    WANT=1 wait_count bash -c "test -S '$WORK/run-igw-b/conntrack-sync.sock' && echo 1" >/dev/null
    before=0
    rss0=$(rss_mib "$PB"); cb0=$(cpu_s "$PB")
    igw_wait_cached >"$WORK/poll" & PP=$!
    t0=$(now)
    $PIN_A ip netns exec "$A" "$IGW" --node "$WORK/igw-a.toml" --policy "$WORK/policy.toml" conntrack-sync --role active --no-direct-inject >"$WORK/igw-a.log" 2>&1 &
    PA=$!; PIDS+=("$PA")
  fi
  wait "$PP"; t2=$(awk '{print $NF}' "$WORK/poll"); got=$(awk '{$NF=""; print}' "$WORK/poll")
  ca=$(cpu_s "$PA"); cb=$(cpu_s "$PB"); rss1=$(rss_mib "$PB")
  # B's CPU over the transfer alone (from just before it starts), besides its whole run.
  cbt=$(awk -v a="$cb0" -v b="$cb" 'BEGIN{printf "%.2f", b-a}')
  stop_pair
  took=$(secs "$t0" "$t2")
  rate=$(awk -v n="$RESYNC_N" -v s="$took" 'BEGIN{printf "%.0f", n/s}')
  per_entry=$(awk -v a="$rss0" -v b="$rss1" -v n="$RESYNC_N" 'BEGIN{printf "%.0f", (b-a)*1048576/n}')
  RRATE[$who]=$rate; RTOOK[$who]=$took
  RCPUA[$who]=$(per100k "$ca" "$RESYNC_N"); RCPUB[$who]=$(per100k "$cb" "$RESYNC_N"); RCPUBT[$who]=$(per100k "$cbt" "$RESYNC_N")
  label="igw conntrack-sync (resync at session start)"; [ "$who" = conntrackd ] && label="conntrackd FTFW (\`-B\` bulk send)"
  note="kernel dump alone: $DUMP_FLOOR s"
  [ "$who" = conntrackd ] && { note="A's start-up dump into its internal cache (before the clock): $startup s (polled); start-up + bulk: $(awk -v a="$startup" -v b="$took" 'BEGIN{printf "%.3f", a+b}') s"; RSTART=$startup; }
  RROWS+=("| $label | $RESYNC_N | $before | $took s | $rate/s | $got | A ${RCPUA[$who]}, B ${RCPUB[$who]} (transfer only: ${RCPUBT[$who]}) | A $ca s, B $cb s (transfer only: $cbt s) | $rss0 -> $rss1 MiB ($per_entry B/entry) | $note |")
  echo "${RROWS[-1]}"
done
has bulk && RROWS+=("| ratio igw/conntrackd | | | time $(ratio "${RTOOK[cache]}" "${RTOOK[conntrackd]}") (conntrackd's / igw's: $(ratio "${RTOOK[conntrackd]}" "${RTOOK[cache]}"); with its start-up dump: $(awk -v a="$RSTART" -v b="${RTOOK[conntrackd]}" -v c="${RTOOK[cache]}" 'BEGIN{printf "%.2f", (a+b)/c}')) | rate $(ratio "${RRATE[cache]}" "${RRATE[conntrackd]}") | | conntrackd's CPU / igw's: A $(ratio "${RCPUA[conntrackd]}" "${RCPUA[cache]}"), B $(ratio "${RCPUB[conntrackd]}" "${RCPUB[cache]}") (transfer only: $(ratio "${RCPUBT[conntrackd]}" "${RCPUBT[cache]}")) | | | |")

# Each section replaces its own part of RESULTS.md, between its markers.
meta() {
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(conntrackd -v 2>&1 | head -1)"
  echo "- load before the run (other builds share this machine): ${LOAD0:-?}; after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- command: \`${SECTIONS_SET:+SECTIONS=\"${SECTIONS# }\" }bench/conntrack/run.sh${ARGS:+ $ARGS}\`${RESYNC_SET:+ with RESYNC_N=$RESYNC_N}"
}
SECTIONS_SET=1; RESYNC_SET=""; [ "${RESYNC_N}" != 500000 ] && RESYNC_SET=1
SECTIONS="${SECTIONS% }"
OUT=$WORK/sections; mkdir -p "$OUT"
if [ ${#ROWS[@]} -gt 0 ]; then
  {
    echo "## Replication and commit of N entries"
    echo
    meta
    echo
    echo "Replication: from the first CT_NEW in A to B's cache holding N (includes the fill time,"
    echo "the same for both). Lag: from the end of the fill to B holding N. Commit: B's kernel"
    echo "empty, until the command returns and the kernel holds the entries. CPU over the"
    echo "replication step; RSS of the standby before and after (per entry = delta / N)."
    echo
    echo "| N | daemon | replication | lag | commit | CPU | standby RSS | notes |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${ROWS[@]}"
  } >"$OUT/sizes"
fi
if [ ${#CROWS[@]} -gt 0 ]; then
  {
    echo "## Replication under churn"
    echo
    meta
    echo
    echo "\`ct_fill churn $CHURN_LIVE $CHURN_SECS\` in A: $CHURN_LIVE entries, then the oldest 256 replaced by"
    echo "256 new ones, batch after batch, for $CHURN_SECS s (each replacement is a DESTROY and a NEW event)."
    echo "Events: creates + deletes. Until equal: from the start of the churn to B's cache"
    echo "holding exactly A's table (igw: entries_cached; conntrackd: external cache), polled"
    echo "every 50 ms; rate = events / that time. Pinned as on two machines: the generator and A's daemon"
    echo "on CPU 0, B's daemon on CPU 1 (the sizes above run unpinned). CPU per 100k: each daemon's"
    echo "CPU-seconds (user + system, its own process only: the kernel's work of building the events"
    echo "is the generator's) over the run, per 100k events; in brackets the same from perf's task-clock"
    echo "(on-CPU time taken at each context switch), which on the bench VM splits CPU 0 between the"
    echo "generator and A's daemon differently from /proc's ticks (RESULTS.md, third pass)."
    [ "$CHURN_REPS" -gt 1 ] && echo "$CHURN_REPS runs of each daemon, alternated; the last row: each run's ratio and their median."
    echo
    echo "| daemon | generator | events | until equal | replicated | B vs A at the end | CPU-s per 100k events | CPU, notes |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${CROWS[@]}"
  } >"$OUT/churn"
fi
if [ ${#RROWS[@]} -gt 0 ]; then
  {
    echo "## Bulk transfer of a whole table (the daemons alone)"
    echo
    meta
    echo
    echo "A's table holds $RESYNC_N entries before the transfer; no generator runs. igw: B's daemon up, then A's"
    echo "daemon starts and sends its session-start resync (kernel dump streamed into frames, acks);"
    echo "conntrackd: both up, A's internal cache filled from its start-up dump, then \`conntrackd -B\` on A."
    echo "Until: B's cache holds them all (polled every 50 ms). Pinned as above. CPU: the whole run of"
    echo "each daemon (each A side includes one kernel dump: igw's in its resync, conntrackd's at its"
    echo "start-up), per 100k entries; for B also over the transfer alone (from just before A's daemon"
    echo "starts, or just before \`-B\`, to the end: without its own start-up). RSS: the standby's,"
    echo "before and after."
    echo
    echo "| daemon | entries | in B's cache before | until all in B | replicated | B's cache at the end | CPU-s per 100k entries | CPU | standby RSS | notes |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${RROWS[@]}"
  } >"$OUT/bulk"
fi
python3 - bench/conntrack/RESULTS.md "$OUT" <<'PY'
import os, re, sys
path, out = sys.argv[1], sys.argv[2]
text = open(path).read() if os.path.exists(path) else "# conntrack-sync vs conntrackd (FTFW) — results\n"
for name in ("sizes", "churn", "bulk"):
    f = os.path.join(out, name)
    if not os.path.exists(f):
        continue
    body = open(f).read().rstrip("\n")
    begin, end = f"<!-- section:{name} (written by run.sh) -->", f"<!-- /section:{name} -->"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path + ".new", "w").write(text)
os.replace(path + ".new", path)
PY
echo "written bench/conntrack/RESULTS.md (sections:$SECTIONS)"
