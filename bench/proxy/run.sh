#!/usr/bin/env bash
# Side-by-side benchmark: igw proxy vs Squid (workers 1, cache off), same nginx origin on
# loopback, same wrk load, same rules. Loopback only. Each wrk run is time-bounded
# (DUR seconds); the whole script takes a few minutes. Writes bench/proxy/RESULTS.md.
#
#   bench/proxy/run.sh [path/to/igw]     (default: target/release/igw)
#
# Pinning: the proxy under test on CPU 0, nginx and wrk on CPU 1 (2-core machine).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
IGW=${1:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/igw}
DUR=${DUR:-8}
CONNS=${CONNS:-50}
W=$(mktemp -d /tmp/igw-bench-proxy.XXXXXX)
chmod 755 "$W"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$W"; }
trap cleanup EXIT
for t in nginx squid wrk taskset; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -x "$IGW" ] || { echo "no igw binary at $IGW (cargo build --release -p igw)" >&2; exit 1; }

ORIGIN_PORT=18480; IGW_PORT=13229; SQUID_PORT=13228
# --- origin ---------------------------------------------------------------------------
mkdir -p "$W/www" "$W/nginx"
head -c 1024 /dev/zero | tr '\0' a > "$W/www/1k"
head -c 1048576 /dev/zero | tr '\0' b > "$W/www/1m"
cat > "$W/nginx/nginx.conf" <<NG
daemon off; worker_processes 1; pid $W/nginx/nginx.pid; error_log $W/nginx/error.log;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIGIN_PORT; root $W/www; } }
NG
taskset -c 1 nginx -c "$W/nginx/nginx.conf" -p "$W/nginx" & PIDS+=($!)
echo "127.0.0.1 origin.test" > "$W/hosts"

# --- rule sets --------------------------------------------------------------------------
regex_rules() { # the patterns of $W/regex.txt as one deny rule for each proxy
  { printf '[[l7_rules]]\nid = "deny-re"\naction = "deny"\nregex = [\n'
    awk '{print "  '"'"'"$0"'"'"',"}' "$W/regex.txt"; printf ']\n'; } > "$W/igw-extra.toml"
  printf 'acl badre url_regex "%s"\nhttp_access deny badre\n' "$W/regex.txt" > "$W/squid-extra.conf"
}
gen_rules() { # $1 = case name
  : > "$W/igw-extra.toml"; : > "$W/squid-extra.conf"; : > "$W/domains.txt"; : > "$W/squid-domains.txt"; : > "$W/regex.txt"
  case "$1" in
    dom10k|dom100k)
      n=${1#dom}; n=${n%k}000
      seq 1 "$n" | awk '{print "*.d"$1".example"}' > "$W/domains.txt"
      seq 1 "$n" | awk '{print ".d"$1".example"}' > "$W/squid-domains.txt"
      printf '[[l7_rules]]\nid = "deny-list"\naction = "deny"\ndomain_files = ["domains.txt"]\n' > "$W/igw-extra.toml"
      printf 'acl bad dstdomain "%s"\nhttp_access deny bad\n' "$W/squid-domains.txt" > "$W/squid-extra.conf" ;;
    re1k|re10k)
      # Anchored at the scheme and host.
      n=${1#re}; n=${n%k}000
      seq 1 "$n" | awk '{print "^http://h"$1"\\.example\\.com/p"$1"/[a-z]+"}' > "$W/regex.txt"
      regex_rules ;;
    ure1k|ure10k)
      # Unanchored, as URL block lists write them (ad and tracker paths anywhere in the URL).
      n=${1#ure}; n=${n%k}000
      seq 1 "$n" | awk '{ if ($1 % 2) print "[./]ad"$1"[a-z]*\\.(gif|png|js)"; else print "/track"$1"/[0-9]+" }' > "$W/regex.txt"
      regex_rules ;;
  esac
  { printf '[[tenants]]\nname = "lo"\nsubnets = ["127.0.0.0/8"]\n'
    cat "$W/igw-extra.toml"
    printf '[[l7_rules]]\nid = "allow-origin"\naction = "allow"\ndomains = ["origin.test"]\nports = [%s]\ncidrs = ["127.0.0.0/8"]\n' $ORIGIN_PORT
  } > "$W/policy.toml"
  cat > "$W/squid.conf" <<SQ
http_port 127.0.0.1:$SQUID_PORT
workers 1
cache deny all
cache_mem 0 MB
hosts_file $W/hosts
access_log none
cache_log $W/squid-cache.log
pid_filename $W/squid.pid
coredump_dir $W
shutdown_lifetime 1 seconds
acl lo src 127.0.0.0/8
$(cat "$W/squid-extra.conf")
acl ok dstdomain origin.test
acl okport port $ORIGIN_PORT
http_access allow lo ok okport
http_access deny all
SQ
}

wait_port() { for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }
CLK=$(getconf CLK_TCK)

start_igw() {
  taskset -c 0 "$IGW" --node "$W/none.toml" --policy "$W/policy.toml" proxy --explicit 127.0.0.1:$IGW_PORT \
    --http off --https off --metrics off --run-dir "$W/run" --hosts "$W/hosts" --access-log off --threads 1 \
    2> "$W/igw.log" & PROXY_PID=$!; PIDS+=($PROXY_PID); wait_port $IGW_PORT; }
start_squid() {
  chmod 777 "$W"; taskset -c 0 squid -N -f "$W/squid.conf" 2> "$W/squid.err" & PROXY_PID=$!; PIDS+=($PROXY_PID); wait_port $SQUID_PORT; }
stop_proxy() { kill "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; sleep 0.5; }

# wrk through a proxy: absolute-form target, Host of the origin.
cat > "$W/proxy.lua" <<'LUA'
wrk.path = os.getenv("TARGET")
wrk.headers["Host"] = os.getenv("THOST")
LUA
# -> "req/s p50_ms p99_ms MB/s requests"
run_wrk() { # $1 port, $2 target url
  local out
  out=$(TARGET="$2" THOST="origin.test:$ORIGIN_PORT" taskset -c 1 wrk -t1 -c$CONNS -d${DUR}s --latency -s "$W/proxy.lua" "http://127.0.0.1:$1" 2>&1)
  echo "$out" > "$W/last-wrk.txt"
  local rps p50 p99 mbs reqs non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  mbs=$(echo "$out" | awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else if (v ~ /MB/) {sub("MB","",v)} else if (v ~ /KB/) {sub("KB","",v); v/=1024}; print v}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "$rps $(ms "$p50") $(ms "$p99") $mbs $reqs ${non2xx:-0}"
}
ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000}; printf "%.2f", v }'; }

declare -A R
declare -A X
declare -A SPREAD
# REPS runs per cell (default 3); the cell reports the run with the median req/s, and
# the spread of CPU per request over the runs is kept for the notes.
REPS=${REPS:-3}
# A URL that the case's first rule denies: both proxies must answer it 403 before the
# case is measured, so that no row is a proxy that did not load its rules.
denied_url() {
  case "$1" in
    dom*) echo "http://x.d1.example:$ORIGIN_PORT/1k" ;;
    re*) echo "http://h1.example.com/p1/abc" ;;
    ure*) echo "http://origin.test:$ORIGIN_PORT/img/ad1x.gif" ;;
  esac
}
measure() { # $1 proxy (igw|squid), $2 case, $3 object
  local t0 t1 res runs=() i
  local port=$IGW_PORT; [ "$1" = squid ] && port=$SQUID_PORT
  local probe code; probe=$(denied_url "$2")
  if [ -n "$probe" ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -x "http://127.0.0.1:$port" "$probe" || true)
    [ "$code" = 403 ] || { echo "$1 $2: $probe answered $code, not 403: rules not in force" >&2; exit 1; }
  fi
  for i in $(seq 1 "$REPS"); do
    t0=$(cpu_ticks $PROXY_PID)
    res=$(run_wrk $port "http://origin.test:$ORIGIN_PORT/$3")
    t1=$(cpu_ticks $PROXY_PID)
    local reqs; reqs=$(echo "$res" | awk '{print $5}')
    local us; us=$(awk -v d=$((t1-t0)) -v c=$CLK -v n="$reqs" 'BEGIN { if (n>0) printf "%.1f", d/c*1e6/n; else print "-" }')
    runs+=("$res $us")
    echo "$1 $2 $3 run $i: $res cpu_us/req=$us" >&2
  done
  R[$1,$2,$3]=$(printf '%s\n' "${runs[@]}" | sort -n -k1,1 | awk -v m=$(( (REPS + 1) / 2 )) 'NR == m')
  SPREAD[$1,$2,$3]=$(printf '%s\n' "${runs[@]}" | awk '{ v = $7; if (NR == 1 || v < lo) lo = v; if (NR == 1 || v > hi) hi = v } END { printf "%s-%s", lo, hi }')
}

wait_port $ORIGIN_PORT
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
# Direct ceiling (wrk straight to nginx).
D=$(cd "$W" && taskset -c 1 wrk -t1 -c$CONNS -d${DUR}s --latency "http://127.0.0.1:$ORIGIN_PORT/1k" 2>&1)
DIRECT_RPS=$(echo "$D" | awk '/Requests\/sec/ {print $2}')

# CASES: the rule cases to run (default all; `none` is always run: the other rows are
# read against it).
CASES="none ${CASES:-dom10k dom100k re1k re10k ure1k ure10k}"
CASES=$(echo "$CASES" | tr ' ' '\n' | awk '!seen[$0]++' | tr '\n' ' ')
for c in $CASES; do
  gen_rules $c
  start_igw; measure igw $c 1k; [ $c = none ] && measure igw $c 1m; stop_proxy
  start_squid; measure squid $c 1k; [ $c = none ] && measure squid $c 1m; stop_proxy
done

# --- CONNECT throughput, idle RSS, reload under load (no extra rules) ------------------
gen_rules none
head -c $((64*1024*1024)) /dev/zero > "$W/www/64m"
# CONNECT: CONNECT_N x 64 MiB through one tunnel (default 32: 2 GiB, so that the 10 ms
# CPU ticks of /proc resolve 0.005 CPU-s/GB), REPS runs, the run with the median CPU per GB.
CONNECT_N=${CONNECT_N:-32}
connect_once() { # $1 port -> "MB/s cpu_s_per_GB"
  local t0 t1 s0 s1 urls=() outs=()
  for _ in $(seq 1 "$CONNECT_N"); do urls+=("http://origin.test:$ORIGIN_PORT/64m"); outs+=(-o /dev/null); done
  t0=$(cpu_ticks $PROXY_PID); s0=$(date +%s.%N)
  taskset -c 1 curl -s -p -x "http://127.0.0.1:$1" --resolve origin.test:$ORIGIN_PORT:127.0.0.1 "${outs[@]}" "${urls[@]}"
  s1=$(date +%s.%N); t1=$(cpu_ticks $PROXY_PID)
  awk -v a="$s0" -v b="$s1" -v d=$((t1-t0)) -v c=$CLK -v n="$CONNECT_N" 'BEGIN { mb=64*n; gb=mb/1024; printf "%.0f %.3f", mb/(b-a), d/c/gb }'
}
connect_run() { # $1 port -> "MB/s cpu_s_per_GB cpu_range"
  local runs=() i
  for i in $(seq 1 "$REPS"); do runs+=("$(connect_once "$1")"); echo "connect $1 run $i: ${runs[-1]}" >&2; done
  local med; med=$(printf '%s\n' "${runs[@]}" | sort -n -k2,2 | awk -v m=$(( (REPS + 1) / 2 )) 'NR == m')
  echo "$med $(printf '%s\n' "${runs[@]}" | sort -n -k2,2 | awk 'NR == 1 {lo = $2} {hi = $2} END {printf "%s-%s", lo, hi}')"
}
idle_rss() { # $1 port, $2 pid -> KiB per idle keep-alive client
  python3 - "$1" "$2" <<'PY'
import socket, sys, time, resource
port, pid = int(sys.argv[1]), sys.argv[2]
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
req = (f"GET http://origin.test:18480/1k HTTP/1.1\r\nHost: origin.test:18480\r\n\r\n").encode()
before = rss(); socks = []
deadline = time.time() + 60
for i in range(5000):
    if time.time() > deadline: break
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(req); socks.append(s)
for s in socks:
    s.settimeout(10); got = b""
    while b"\r\n\r\n" not in got or len(got) < 1024: 
        d = s.recv(65536)
        if not d: break
        got += d
# igw parks a keep-alive connection quiet for 500 ms; give every client 2 s of quiet.
time.sleep(2)
after = rss()
for s in socks: s.close()
time.sleep(2)
closed = rss()
print(f"{(after-before)/max(len(socks),1):.1f} {len(socks)} {(closed-before)/1024:.1f}")
PY
}
reload_run() { # $1 name, $2 port, $3 reload command -> "req/s p99 non2xx socket_errors"
  local out
  ( sleep 2; eval "$3"; sleep 2; eval "$3"; sleep 2; eval "$3" ) > /dev/null 2>&1 &
  out=$(TARGET="http://origin.test:$ORIGIN_PORT/1k" THOST="origin.test:$ORIGIN_PORT" taskset -c 1 wrk -t1 -c$CONNS -d${DUR}s --latency -s "$W/proxy.lua" "http://127.0.0.1:$2" 2>&1)
  wait
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(ms "$(echo "$out" | awk '$1=="99%" {print $2}')") $(echo "$out" | awk '/Non-2xx/ {print $NF}' | grep . || echo 0) $(echo "$out" | awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' | grep . || echo 0)"
}
ulimit -n 65536 || true
if [ "${OTHER:-1}" = 1 ]; then
start_igw
X[igw_connect]=$(connect_run $IGW_PORT)
X[igw_rss]=$(idle_rss $IGW_PORT $PROXY_PID)
X[igw_reload]=$(reload_run igw $IGW_PORT "'$IGW' --policy '$W/policy.toml' policy reload --run-dir '$W/run'")
stop_proxy
echo "max_filedescriptors 65536" >> "$W/squid.conf"
start_squid
X[squid_connect]=$(connect_run $SQUID_PORT)
X[squid_rss]=$(idle_rss $SQUID_PORT $PROXY_PID)
X[squid_reload]=$(reload_run squid $SQUID_PORT "squid -k reconfigure -f '$W/squid.conf'")
stop_proxy
fi
for k in "${!X[@]}"; do echo "$k: ${X[$k]}" >&2; done

f() { echo "${R[$1]}" | awk -v i=$2 '{print $i}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b>0) printf "%.2fx", a/b; else print "-" }'; }
{
  echo "# bench/proxy results"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //'), $(uname -r)"
  echo "- igw: $("$IGW" --version), squid: $(squid -v | head -1)"
  echo "- command: \`DUR=$DUR CONNS=$CONNS bench/proxy/run.sh\` (wrk -t1 -c$CONNS -d${DUR}s, $REPS runs per cell, the median by req/s shown; proxy pinned to CPU 0 with one worker thread / squid workers 1, cache off; nginx + wrk on CPU 1)"
  echo "- direct (no proxy) ceiling, 1 KiB: $DIRECT_RPS req/s"
  echo "- load average at the start / end (other builds share these 2 cores): $LOAD0 / $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "| case (1 KiB GET) | igw req/s | squid req/s | ratio | igw p50/p99 ms | squid p50/p99 ms | igw CPU us/req (range over $REPS runs) | squid CPU us/req (range) | non-2xx igw/squid |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for c in $CASES; do
    echo "| $c | $(f igw,$c,1k 1) | $(f squid,$c,1k 1) | $(ratio "$(f igw,$c,1k 1)" "$(f squid,$c,1k 1)") | $(f igw,$c,1k 2)/$(f igw,$c,1k 3) | $(f squid,$c,1k 2)/$(f squid,$c,1k 3) | $(f igw,$c,1k 7) (${SPREAD[igw,$c,1k]}) | $(f squid,$c,1k 7) (${SPREAD[squid,$c,1k]}) | $(f igw,$c,1k 6)/$(f squid,$c,1k 6) |"
  done
  echo
  echo "| 1 MiB GET | igw MB/s | squid MB/s | ratio | igw CPU us/req | squid CPU us/req |"
  echo "|---|---|---|---|---|---|"
  echo "| none | $(f igw,none,1m 4) | $(f squid,none,1m 4) | $(ratio "$(f igw,none,1m 4)" "$(f squid,none,1m 4)") | $(f igw,none,1m 7) | $(f squid,none,1m 7) |"
  x() { echo "${X[$1]}" | awk -v i=$2 '{print $i}'; }
  echo
  echo "| other | igw | squid | ratio |"
  echo "|---|---|---|---|"
  echo "| CONNECT MB/s ($CONNECT_N x 64 MiB, one tunnel; run with the median CPU of $REPS) | $(x igw_connect 1) | $(x squid_connect 1) | $(ratio "$(x igw_connect 1)" "$(x squid_connect 1)") |"
  echo "| CONNECT proxy CPU-seconds per GB (range over $REPS runs) | $(x igw_connect 2) ($(x igw_connect 3)) | $(x squid_connect 2) ($(x squid_connect 3)) | $(ratio "$(x squid_connect 2)" "$(x igw_connect 2)") less |"
  echo "| RSS per idle keep-alive client after 2 s quiet, KiB ($(x igw_rss 2) / $(x squid_rss 2) clients) | $(x igw_rss 1) | $(x squid_rss 1) | |"
  echo "| ... RSS above the start 2 s after those clients closed, MiB | $(x igw_rss 3) | $(x squid_rss 3) | |"
  echo "| 3 reloads during ${DUR}s of load: req/s | $(x igw_reload 1) | $(x squid_reload 1) | $(ratio "$(x igw_reload 1)" "$(x squid_reload 1)") |"
  echo "| ... p99 ms | $(x igw_reload 2) | $(x squid_reload 2) | |"
  echo "| ... non-2xx answers / socket errors (lost requests) | $(x igw_reload 3) / $(x igw_reload 4) | $(x squid_reload 3) / $(x squid_reload 4) | |"
} > "$HERE/RESULTS.md"
cat "$HERE/RESULTS.md"
