#!/bin/sh
# Regenerates the golden rulesets of the examples (examples/small/node-a.toml with
# examples/small/policy.toml and examples/realistic/policy.toml), text and JSON.
set -e
cd "$(dirname "$0")/../../.."
UPDATE_GOLDEN=1 cargo test -p igw-ruleset --test nft_compile golden_examples
