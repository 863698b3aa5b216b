#!/usr/bin/env bash
# make image-test: boots the image built by images/build.sh in qemu, twice.
#   1. good bundle: igw-a's bundle rendered from examples/site/inventory.toml, a test key and
#      the interface files of images/test/network/, on an ext4 disk labelled IGWCONFIG found
#      by label. The guest's smoke unit (igw.smoke=1) checks every igw unit is active, `igw
#      status` answers and `nft list table inet igw` is loaded, prints PASS/FAIL lines and
#      powers off. Passes only on "IGW-SMOKE: RESULT PASS".
#   2. bad bundle: the same with an unknown field in policy.toml, on a vfat disk named by the
#      kernel pointer igw.bundle=/dev/vdb. Passes only if first boot refused with the
#      file:line:col message on the console and no daemon (nor FRR) started.
# The guest has no network to the outside: its NICs are qemu hub ports with nothing else on
# the hub (frames go nowhere). Each boot is bounded by a timeout (a hang guard, not a timing
# assertion). Logs: images/build/test/*.log.
#
# Usage: images/test.sh [--igw PATH] [good|bad|all]   (needs root for nothing but /dev/kvm)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
build=${IGW_IMAGE_BUILD:-$here/build}
work=$build/test
igw_bin=${IGW_BIN:-$repo/target/release/igw}
limit=${IGW_IMAGE_TEST_TIMEOUT:-1200}
which=all
while [ $# -gt 0 ]; do
  case "$1" in
    --igw) igw_bin=$2; shift 2 ;;
    good|bad|all) which=$1; shift ;;
    *) echo "usage: $0 [--igw PATH] [good|bad|all]" >&2; exit 2 ;;
  esac
done

die() { printf 'image-test: %s\n' "$*" >&2; exit 1; }
log() { printf '[image-test %(%H:%M:%S)T] %s\n' -1 "$*"; }
for t in qemu-system-x86_64 mkfs.ext4 mkfs.vfat mcopy mmd timeout; do
  command -v "$t" >/dev/null || die "$t missing: run scripts/deps.sh image"
done
for f in rootfs.img vmlinuz initrd.img; do
  [ -f "$build/$f" ] || die "$build/$f missing: run make image first"
done
[ -x "$igw_bin" ] || die "igw binary not found at $igw_bin"

rm -rf "$work"
mkdir -p "$work"

# KVM when it really runs a guest here, else software emulation. /dev/kvm existing is not
# enough: under some nested hypervisors a KVM guest hangs before its first line, so probe by
# booting the kernel (bounded) and looking for its banner. IGW_IMAGE_ACCEL=kvm|tcg skips it.
accel=${IGW_IMAGE_ACCEL:-}
if [ -z "$accel" ]; then
  accel=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    timeout 20 qemu-system-x86_64 -accel kvm -M q35 -m 256 -nodefaults -display none \
      -no-reboot -kernel "$build/vmlinuz" -append "console=ttyS0 panic=-1 root=/dev/null" \
      -serial "file:$work/kvm-probe.log" >/dev/null 2>&1 || true
    grep -q 'Linux version' "$work/kvm-probe.log" 2>/dev/null && accel=kvm
  fi
fi
log "accelerator: $accel"

# The bundle: igw-a from the example inventory, a random test key, the test NICs' files.
bundle=$work/bundle-a
"$igw_bin" provision render --inventory "$repo/examples/site/inventory.toml" \
  --node-name igw-a --out "$bundle" >/dev/null
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$bundle/psk"
mkdir -p "$bundle/network"
cp "$here"/test/network/* "$bundle/network/"
# Software emulation runs each process spawn some 20-50 times slower than hardware: the
# arbiter's default probe (nft + vtysh every 200 ms) would keep the guest's CPUs busy and
# starve the boot and the checks. The test node probes every 2 s instead; nothing else in
# the rendered bundle is changed.
printf '\n# make image-test: slower health probes under software emulation.\n[arbiter]\nprobe_interval_ms = 2000\n' >> "$bundle/node.toml"

# cryptomgr.notests: the kernel's crypto self-tests at boot are slow under software
# emulation, and were seen here to hang a guest in alg_test (soft lockup, no progress in
# 400 s) on a loaded host; they test the kernel, not the image.
# Boots once; $1 name, $2 config disk image, $3 extra kernel arguments. Serial log in
# $work/$1.log; returns qemu's status (124: timeout).
boot() {
  local name=$1 disk=$2 extra=$3
  local serial=$work/$name.log
  log "$name: booting (bounded by ${limit}s; serial console in $serial)"
  local t0=$SECONDS rc=0
  timeout --kill-after=10 "$limit" qemu-system-x86_64 -accel "$accel" \
    -M q35 -m 1024 -smp 2 -nodefaults -display none -no-reboot \
    -kernel "$build/vmlinuz" -initrd "$build/initrd.img" \
    -append "root=LABEL=IGWROOT rw console=ttyS0 panic=-1 cryptomgr.notests igw.smoke=1 $extra" \
    -drive "file=$build/rootfs.img,format=raw,if=virtio,snapshot=on" \
    -drive "file=$disk,format=raw,if=virtio,readonly=on" \
    -nic none \
    -netdev hubport,id=n0,hubid=10 -device virtio-net-pci,netdev=n0,mac=52:54:00:19:01:01 \
    -netdev hubport,id=n1,hubid=11 -device virtio-net-pci,netdev=n1,mac=52:54:00:19:02:01 \
    -netdev hubport,id=n2,hubid=12 -device virtio-net-pci,netdev=n2,mac=52:54:00:19:ff:01 \
    -serial "file:$serial" >"$work/$name.qemu.log" 2>&1 || rc=$?
  log "$name: qemu exited ($rc) after $((SECONDS - t0))s"
  [ "$rc" = 124 ] && echo "image-test: $name: timed out after ${limit}s" >&2
  [ "$rc" != 0 ] && sed 's/^/qemu: /' "$work/$name.qemu.log" >&2
  return "$rc"
}

# The console lines worth showing, without escape sequences.
relevant() { sed 's/\x1b\[[0-9;]*[a-zA-Z]//g; s/\r//g' "$1" | grep -E 'IGW-SMOKE|igw-firstboot|igw-|frr|Kernel panic|emergency' ; }

failed=0

if [ "$which" = all ] || [ "$which" = good ]; then
  disk=$work/config-good.img
  mkfs.ext4 -q -L IGWCONFIG -d "$bundle" "$disk" 16M >/dev/null
  boot good "$disk" "" || true
  serial=$work/good.log
  if grep -q 'IGW-SMOKE: RESULT PASS' "$serial"; then
    grep -a 'IGW-SMOKE: \(PASS\|FAIL\|MISSING\|RESULT\|BEGIN\)' "$serial" | sed 's/\r//'
    log "good bundle: PASS"
  else
    echo "image-test: good bundle: FAIL; relevant console lines:" >&2
    relevant "$serial" >&2 || tail -n 40 "$serial" >&2
    failed=1
  fi
fi

if [ "$which" = all ] || [ "$which" = bad ]; then
  bad=$work/bundle-bad
  cp -r "$bundle" "$bad"
  # An unknown field in [defaults]: igw check must name policy.toml, its line and column.
  sed -i 's/^\[defaults\]$/[defaults]\ncolour = "red"/' "$bad/policy.toml"
  grep -q '^colour = "red"' "$bad/policy.toml" || die "could not break the test policy"
  disk=$work/config-bad.img
  rm -f "$disk"
  mkfs.vfat -C -n IGWCONFIG "$disk" 16384 >/dev/null
  (cd "$bad" && mcopy -i "$disk" -s ./* ::/)
  boot bad "$disk" "igw.bundle=/dev/vdb" || true
  serial=$work/bad.log
  clean=$(sed 's/\x1b\[[0-9;]*[a-zA-Z]//g; s/\r//g' "$serial")
  problems=()
  grep -qE 'igw-firstboot: .*policy\.toml:[0-9]+:[0-9]+: defaults\.colour' <<<"$clean" ||
    problems+=("no 'policy.toml:LINE:COL: defaults.colour' message from first boot on the console")
  grep -q 'igw-firstboot: REFUSED' <<<"$clean" || problems+=("no 'igw-firstboot: REFUSED' line on the console")
  grep -q 'IGW-SMOKE: STATE' <<<"$clean" || problems+=("the smoke unit did not report the units' states")
  for u in igw-proxy igw-conntrack-sync igw-arbiter frr; do
    st=$(grep -oE "IGW-SMOKE: STATE $u\.service=[a-z]+" <<<"$clean" | head -n1 | cut -d= -f2)
    case "$st" in
      inactive|failed) echo "IGW-SMOKE: $u.service=$st (not started, as required)" ;;
      *) problems+=("$u.service is '${st:-unknown}' after a refused bundle; it must not start") ;;
    esac
  done
  if [ ${#problems[@]} = 0 ]; then
    grep -E 'igw-firstboot: ' <<<"$clean" | sed 's/^.*igw-firstboot: /igw-firstboot: /' | awk '!seen[$0]++' | head -n 8
    log "bad bundle: PASS (refused, daemons not started)"
  else
    printf 'image-test: bad bundle: FAIL: %s\n' "${problems[@]}" >&2
    echo "image-test: relevant console lines:" >&2
    relevant "$serial" >&2 || tail -n 40 "$serial" >&2
    failed=1
  fi
fi

if [ $failed = 0 ]; then log "PASS"; else log "FAIL"; fi
exit $failed
