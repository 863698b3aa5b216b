#!/bin/bash
# Time `igw ruleset apply` of a policy whose object holds 1k, 10k, 100k and 1M CIDRs, and
# of a one-element change of the 100k set, in a throwaway network namespace; next to it,
# the stock tool: `nft -f` of the same table rendered as text. Writes RESULTS.md here.
# Usage (root): bench/ruleset/run.sh [sizes...]   (default: 1000 10000 100000 1000000)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=("${@:-1000 10000 100000 1000000}")
read -r -a SIZES <<<"${SIZES[*]}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p igw
IGW=$CARGO_TARGET_DIR/release/igw
NS=igwbench$$
WORK=$(mktemp -d /tmp/igwbench.XXXXXX)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ip netns add "$NS"
cp examples/small/node-a.toml examples/small/psk "$WORK/"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# Every other address of 100.64.0.0/10, so no two entries merge into one prefix.
gen() {
  python3 - "$1" >"$WORK/members.txt" <<'PY'
import ipaddress, sys
base = int(ipaddress.IPv4Address("100.64.0.0"))
print("\n".join(str(ipaddress.IPv4Address(base + 2 * i)) for i in range(int(sys.argv[1]))))
PY
  cat >"$WORK/policy.toml" <<'TOML'
[objects.big]
files = ["members.txt"]
[[tenants]]
name = "tenant-a"
subnets = ["198.18.1.0/24"]
[[l3_rules]]
id = "big"
proto = "tcp"
dst = ["big"]
ports = [443]
TOML
}

apply() { ip netns exec "$NS" timeout 300 "$IGW" --node "$WORK/node-a.toml" --policy "$WORK/policy.toml" ruleset apply "$@"; }

ROWS=()
for n in "${SIZES[@]}"; do
  gen "$n"
  ip netns exec "$NS" nft delete table inet igw 2>/dev/null || true
  t0=$(now); out=$(apply); t1=$(now)
  igw_s=$(secs "$t0" "$t1")
  # Stock tool: the same table as nft text, loaded by nft -f (table deleted first).
  "$IGW" --node "$WORK/node-a.toml" --policy "$WORK/policy.toml" ruleset render >"$WORK/t.nft"
  ip netns exec "$NS" nft delete table inet igw
  t0=$(now); ip netns exec "$NS" timeout 300 nft -f "$WORK/t.nft"; t1=$(now)
  nft_s=$(secs "$t0" "$t1")
  ROWS+=("| full apply, $n CIDRs | $igw_s s | $nft_s s | ${out} |")
  echo "${ROWS[-1]}"
  if [ "$n" = 100000 ]; then
    apply >/dev/null
    # One element changes: the first member moves to an address not yet in the set.
    sed -i '1s/.*/100.127.255.255/' "$WORK/members.txt"
    t0=$(now); out=$(apply); t1=$(now)
    igw_s=$(secs "$t0" "$t1")
    t0=$(now); ip netns exec "$NS" nft delete element inet igw obj_big_v4 '{ 100.127.255.255 }'; t1=$(now)
    nft_s=$(secs "$t0" "$t1")
    ROWS+=("| one-element change of the 100k set | $igw_s s | $nft_s s (nft delete element) | ${out} |")
    echo "${ROWS[-1]}"
  fi
done

{
  echo "# Ruleset apply benchmark"
  echo
  echo "Command: \`bench/ruleset/run.sh ${SIZES[*]}\` (as root; \`make bench\`)."
  echo "Date: $(date -u +%Y-%m-%dT%H:%M:%SZ). Machine: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nft --version)."
  echo
  echo "Load average when the run ended: $(cut -d' ' -f1-3 /proc/loadavg) (other builds on the 2 cores inflate wall clocks)."
  echo
  echo "igw time: wall clock of the whole \`igw ruleset apply\` (load and validate the policy and"
  echo "its list file, compile, know the running table, commit). The running table is remembered"
  echo "from igw's last commit while the kernel's nf_tables generation proves nothing changed since"
  echo "(else listed back with \`nft -j\`, ~0.8 s at 100k); an element update of up to 4096 prefixes"
  echo "is one nfnetlink batch of boundary elements (no set listing), larger ones and full reloads"
  echo "one \`nft -j -f -\` transaction."
  echo "Stock: \`nft -f\` of the same table rendered as nft text (no policy loading)."
  echo "Targets: 100k applied < 1 s; a one-element change < 50 ms."
  echo
  echo "| case | igw ruleset apply | stock nft | igw's own report |"
  echo "| --- | --- | --- | --- |"
  printf '%s\n' "${ROWS[@]}"
} >bench/ruleset/RESULTS.md
echo "wrote bench/ruleset/RESULTS.md"
