#!/usr/bin/env bash
# Installs the system packages igw's build, tests and lab need (Debian). Idempotent: skips
# apt entirely when everything is already there. Usage: scripts/deps.sh [test|lab|bench|image]
set -euo pipefail
what=${1:-test}

# Real parts the tests drive: nftables, kernel conntrack (+ CLI to check), FRR, iproute2,
# curl and ping as clients, python3 and openssl for the origin servers and their
# certificates, util-linux for unshare/nsenter.
pkgs=(nftables conntrack frr iproute2 curl iputils-ping procps python3 openssl util-linux kmod)
case "$what" in
  test|lab) ;;
  bench) pkgs+=(squid wrk nginx-light conntrackd hyperfine) ;;
  # The OS image (make image, make image-test): debootstrap, ext4/vfat images without loop
  # mounts, qemu to boot it.
  image) pkgs+=(debootstrap qemu-system-x86 e2fsprogs dosfstools mtools) ;;
  *) echo "usage: $0 [test|lab|bench|image]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# FRR's package starts its own instance in the root namespace; igw's tests and lab run their
# own instances per namespace (-N) and never use that one.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q frr 2>/dev/null; then
  systemctl stop frr || true
fi
# ctnetlink and the conntrack/NAT modules are loaded on demand by nft; load them up front so
# the first test does not race module loading.
for m in nf_conntrack nf_conntrack_netlink nf_nat nft_chain_nat; do modprobe -q "$m" 2>/dev/null || true; done
echo "deps: ok ($what)"
