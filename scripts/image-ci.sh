#!/usr/bin/env bash
# CI's image step (.ci/run): `make image-test` (debootstrap, release build, two qemu boots:
# about 20-30 minutes on a 2-core machine without KVM) runs only when it can be affected:
#   - IGW_IMAGE_TEST=1: always; IGW_IMAGE_TEST=0: never;
#   - otherwise when a file the image is made of changed since the merge base with main
#     (images/: the units, first boot, the smoke test; this script; the inventory the test
#     bundle is rendered from), committed or not. A change elsewhere (the igw commands first
#     boot runs) is covered by their own tests; IGW_IMAGE_TEST=1 runs the image too.
#     When no merge base can be found (a shallow clone, no main branch), it runs: not
#     knowing is not a reason to skip.
# Prints what it decided and why.
set -euo pipefail
cd "$(dirname "$0")/.."

paths=(images scripts/image-ci.sh examples/site)

run() {
  echo "image-ci: running make image-test ($1)"
  make image-test
}

case "${IGW_IMAGE_TEST:-}" in
  1) run "IGW_IMAGE_TEST=1"; exit ;;
  0) echo "image-ci: skipped (IGW_IMAGE_TEST=0)"; exit 0 ;;
  "") ;;
  *) echo "image-ci: IGW_IMAGE_TEST must be 0 or 1, not '$IGW_IMAGE_TEST'" >&2; exit 2 ;;
esac

base=
for ref in main origin/main; do
  git rev-parse -q --verify "$ref^{commit}" >/dev/null 2>&1 || continue
  base=$(git merge-base HEAD "$ref" 2>/dev/null) && break
done
if [ -z "$base" ]; then
  run "no merge base with main or origin/main: cannot tell what changed"
  exit
fi

# Committed changes since the merge base, plus anything uncommitted or untracked.
changed=$( {
  git diff --name-only "$base" HEAD -- "${paths[@]}"
  git diff --name-only HEAD -- "${paths[@]}"
  git ls-files --others --exclude-standard -- "${paths[@]}"
} | sort -u)
if [ -n "$changed" ]; then
  run "changed since $(git rev-parse --short "$base"): $(echo "$changed" | head -n 5 | tr '\n' ' ')"
else
  echo "image-ci: skipped (nothing under ${paths[*]} changed since $(git rev-parse --short "$base");" \
    "IGW_IMAGE_TEST=1 forces it)"
fi
