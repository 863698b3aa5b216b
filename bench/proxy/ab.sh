#!/usr/bin/env bash
# A/B of igw builds (no Squid): the proxy's CPU per 1 KiB request through the explicit
# proxy (no rules) and its CPU per GB through a CONNECT tunnel, the builds interleaved run
# by run so that machine noise falls on all of them alike. Loopback only; every run is
# bounded (DUR seconds of wrk, CONNECT_N x 64 MiB). For judging a change before the full
# side-by-side run.sh.
#
#   REPS=3 DUR=6 CONNECT_N=32 bench/proxy/ab.sh old/igw new/igw
#
# Pinning as in run.sh: the proxy on CPU 0 (one worker thread), nginx, wrk, curl on CPU 1.
set -euo pipefail
REPS=${REPS:-3}
DUR=${DUR:-6}
CONNECT_N=${CONNECT_N:-32}
[ $# -ge 1 ] || { echo "usage: $0 IGW_BINARY..." >&2; exit 2; }
for t in nginx wrk curl taskset; do command -v $t >/dev/null || { echo "missing $t (scripts/deps.sh bench)" >&2; exit 1; }; done
for b in "$@"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 1; }; done
W=$(mktemp -d /tmp/igw-ab.XXXXXX)
chmod 755 "$W"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$W"; }
trap cleanup EXIT
ORIGIN_PORT=18490; IGW_PORT=13239
mkdir -p "$W/www" "$W/nginx"
head -c 1024 /dev/zero | tr '\0' a > "$W/www/1k"
head -c $((64 * 1024 * 1024)) /dev/zero > "$W/www/64m"
cat > "$W/nginx/nginx.conf" <<NG
daemon off; worker_processes 1; pid $W/nginx/nginx.pid; error_log $W/nginx/error.log;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIGIN_PORT; root $W/www; } }
NG
taskset -c 1 nginx -c "$W/nginx/nginx.conf" -p "$W/nginx" & PIDS+=($!)
echo "127.0.0.1 origin.test" > "$W/hosts"
printf '[[tenants]]\nname = "lo"\nsubnets = ["127.0.0.0/8"]\n[[l7_rules]]\nid = "allow-origin"\naction = "allow"\ndomains = ["origin.test"]\nports = [%s]\ncidrs = ["127.0.0.0/8"]\n' $ORIGIN_PORT > "$W/policy.toml"
cat > "$W/proxy.lua" <<'LUA'
wrk.path = os.getenv("TARGET")
wrk.headers["Host"] = os.getenv("THOST")
LUA
wait_port() { for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
ticks() { awk -v f="$2" '{print (f == "user") ? $14 : $14 + $15}' /proc/$1/stat; }
wait_port $ORIGIN_PORT
CLK=$(getconf CLK_TCK)
outs=(); urls=()
for _ in $(seq 1 "$CONNECT_N"); do outs+=(-o /dev/null); urls+=("http://origin.test:$ORIGIN_PORT/64m"); done
echo "# $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg); REPS=$REPS DUR=$DUR CONNECT_N=$CONNECT_N"
for r in $(seq 1 "$REPS"); do
  for b in "$@"; do
    taskset -c 0 "$b" --node "$W/none.toml" --policy "$W/policy.toml" proxy --explicit 127.0.0.1:$IGW_PORT \
      --http off --https off --metrics off --run-dir "$W/run" --hosts "$W/hosts" --access-log off --threads 1 \
      2> "$W/igw.log" & P=$!; PIDS+=($P)
    wait_port $IGW_PORT
    t0=$(ticks $P all); u0=$(ticks $P user)
    out=$(TARGET="http://origin.test:$ORIGIN_PORT/1k" THOST="origin.test:$ORIGIN_PORT" taskset -c 1 wrk -t1 -c50 -d"${DUR}s" -s "$W/proxy.lua" "http://127.0.0.1:$IGW_PORT" 2>&1)
    t1=$(ticks $P all); u1=$(ticks $P user)
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    bad=$(echo "$out" | awk '/Non-2xx|Socket errors/' | tr -s ' \n' ' ')
    req=$(awk -v d=$((t1 - t0)) -v u=$((u1 - u0)) -v c="$CLK" -v n="$n" 'BEGIN { printf "%.1f us/req (user %.1f)", d / c * 1e6 / n, u / c * 1e6 / n }')
    t0=$(ticks $P all); s0=$(date +%s.%N)
    taskset -c 1 curl -s -p -x "http://127.0.0.1:$IGW_PORT" --resolve "origin.test:$ORIGIN_PORT:127.0.0.1" "${outs[@]}" "${urls[@]}"
    s1=$(date +%s.%N); t1=$(ticks $P all)
    tun=$(awk -v a="$s0" -v b="$s1" -v d=$((t1 - t0)) -v c="$CLK" -v n="$CONNECT_N" 'BEGIN { gb = n * 64 / 1024; printf "CONNECT %.0f MB/s %.3f CPU-s/GB", n * 64 / (b - a), d / c / gb }')
    echo "run $r $b: $rps req/s, $req; $tun ${bad}"
    kill "$P"; wait "$P" 2>/dev/null || true
  done
done
