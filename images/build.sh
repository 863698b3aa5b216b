#!/usr/bin/env bash
# Builds the igw gateway OS image: Debian 12 (bookworm) by debootstrap, plus the igw binary,
# its systemd units and the first-boot logic from images/rootfs/. Output in images/build/:
#   rootfs.img   ext4 root filesystem (label IGWROOT), no partition table
#   vmlinuz, initrd.img   the image's own kernel and initramfs, for qemu -kernel/-initrd
# Incremental: the debootstrap tree (images/build/base) is kept and re-used while the package
# list is unchanged; a rebuild only re-applies the overlay and re-makes the ext4 image.
#
# Usage: images/build.sh [--igw PATH]   (default: target/release/igw; needs root)
# The Debian mirror is taken from this machine's apt configuration, never from this file.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${IGW_IMAGE_BUILD:-$here/build}
suite=bookworm
igw_bin=${IGW_BIN:-$here/../target/release/igw}
while [ $# -gt 0 ]; do
  case "$1" in
    --igw) igw_bin=$2; shift 2 ;;
    *) echo "usage: $0 [--igw PATH]" >&2; exit 2 ;;
  esac
done

# What the gateway runs. Changing this list rebuilds the base tree.
packages=(
  systemd-sysv udev dbus linux-image-amd64 initramfs-tools
  frr nftables conntrack iproute2 procps kmod ca-certificates
  e2fsprogs util-linux
)

log() { printf '[image %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf 'image: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, device nodes in the tree)"
for t in debootstrap mkfs.ext4 chroot; do
  command -v "$t" >/dev/null || die "$t missing: run scripts/deps.sh image"
done
[ -x "$igw_bin" ] || die "igw binary not found at $igw_bin: run cargo build --release -p igw"

# The mirror this machine's apt already uses for $suite: first from deb822 .sources files
# (a stanza whose Suites include $suite), then from one-line sources.list entries.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() { if (uris != "" && has) { split(uris, u, " "); print u[1]; exit } uris=""; has=0 }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      tolower($1) == "uris:" { uris = ""; for (i = 2; i <= NF; i++) uris = uris " " $i }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has=1 }
      END { flush() }' "$f"
  done | head -n1 | grep . && return 0
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }'
  done | head -n1 | grep .
}

mkdir -p "$build"
base=$build/base
stamp=$build/base.stamp
want_stamp="$suite ${packages[*]}"

# 1. The Debian tree (slow, cached).
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && [ -x "$base/usr/bin/systemctl" ]; then
  log "base tree: cached ($base)"
else
  mirror=$(apt_mirror) || die "no $suite mirror found in /etc/apt/sources.list{,.d/*}"
  log "base tree: debootstrap $suite from $mirror (this takes minutes)"
  rm -rf "$base" "$stamp"
  include=$(IFS=,; echo "${packages[*]}")
  debootstrap --variant=minbase --include="$include" "$suite" "$base" "$mirror"
  # The image never reaches a network; apt inside it gets the same mirror for later use.
  printf 'deb %s %s main\n' "$mirror" "$suite" > "$base/etc/apt/sources.list"
  chroot "$base" apt-get clean
  echo "$want_stamp" > "$stamp"
  log "base tree: done"
fi

# 2. The overlay, applied in place on the base tree (copying the tree costs a minute here).
# Files a previous build installed are removed first (manifest), so a file deleted from
# images/rootfs/ does not linger in the image.
root=$base
manifest=$build/overlay.manifest
log "rootfs tree: overlay"
if [ -f "$manifest" ]; then
  while IFS= read -r f; do rm -f "$root/$f"; done < "$manifest"
fi
(cd "$here/rootfs" && find . \( -type f -o -type l \) | sed 's#^\./##') > "$manifest"
echo usr/bin/igw >> "$manifest"
cp -a "$here/rootfs/." "$root/"
install -m 0755 "$igw_bin" "$root/usr/bin/igw"
chmod 0755 "$root"/usr/lib/igw/*

# Identity comes from the bundle at first boot, not from the build machine.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo igw > "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
printf 'LABEL=IGWROOT / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
mkdir -p "$root/etc/igw"

# FRR: the daemons igw's fabric uses (zebra, staticd always run).
sed -i -E 's/^(bgpd|bfdd)=no/\1=yes/' "$root/etc/frr/daemons"
# watchfrr starts the daemons and feeds each its part of frr.conf (vtysh -b) in one
# background job that it kills after --restart-timeout (20 s by default). That takes about
# a second on hardware, but more than 20 s under software emulation (make image-test), and
# a killed job leaves bgpd without its `router bgp`. 120 s only bounds a hung job.
sed -i -E '/^#?watchfrr_options=/d' "$root/etc/frr/daemons"
echo 'watchfrr_options="--restart-timeout 120"' >> "$root/etc/frr/daemons"
install -D -m 0644 "$here/README.md" "$root/usr/share/doc/igw/README.md"
rm -f "$root"/boot/*.dpkg-bak "$root"/boot/*.new

# Units. FRR and the daemons Require igw-firstboot, so they run only with a validated
# bundle. nftables.service stays off: its /etc/nftables.conf flushes the ruleset, igw's
# included. systemd-networkd configures the interfaces from the bundle's network/ files.
# The smoke unit is enabled but only runs with igw.smoke=1 on the kernel command line.
systemctl --root="$root" enable \
  igw-firstboot.service igw-proxy.service igw-conntrack-sync.service igw-arbiter.service \
  igw-smoke.service frr.service systemd-networkd.service >/dev/null 2>&1
systemctl --root="$root" disable nftables.service >/dev/null 2>&1 || true
# Nothing on the image asks for a network it cannot reach.
systemctl --root="$root" mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true

# 3. Kernel and initramfs out of the image, and the ext4 image from the tree (no loop mount).
kver=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -n1)")
cp "$root/boot/vmlinuz-$kver" "$build/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$build/initrd.img"
size_mb=$(( $(du -sm "$root" | cut -f1) + 512 ))
log "rootfs.img: mkfs.ext4 -d ($size_mb MiB, kernel $kver)"
rm -f "$build/rootfs.img"
mkfs.ext4 -q -L IGWROOT -d "$root" "$build/rootfs.img" "${size_mb}M" >/dev/null
log "done: $build/rootfs.img $build/vmlinuz $build/initrd.img"
