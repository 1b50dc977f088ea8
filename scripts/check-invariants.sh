#!/usr/bin/env bash
# Architecture invariants that tooling checks (ARCHITECTURE.md, "Invariants"); run by
# scripts/test.sh before the build (cargo metadata only, no compile):
# - the guest SDK never depends on wasmtime (its normal and build dependencies, for the
#   host and for the guests' target);
# - every pure policy crate carries the same clippy.toml (predict's): no clock, no I/O,
#   no environment, enforced by clippy in the build (disallowed methods, types, macros).
set -euo pipefail
cd "$(dirname "$0")/.."

# The pure crates: their directories. A new one copies predict/clippy.toml.
PURE_CRATES=(predict routing reliability pipeline)

fail=0
for target in "" wasm32-wasip2; do
    tree="$(cargo tree -q -p plb-guest-sdk -e normal,build --prefix none ${target:+--target "$target"})"
    if grep -E '^wasmtime' <<<"$tree"; then
        echo "error: plb-guest-sdk depends on wasmtime (${target:-host}); guests must not" >&2
        fail=1
    fi
done

for crate in "${PURE_CRATES[@]}"; do
    [ -f "$crate/Cargo.toml" ] || continue
    if ! cmp -s predict/clippy.toml "$crate/clippy.toml"; then
        echo "error: $crate/clippy.toml must be a copy of predict/clippy.toml (a pure crate)" >&2
        fail=1
    fi
done
exit "$fail"
