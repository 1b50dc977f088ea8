#!/usr/bin/env bash
# PLB's whole test suite, from a fresh machine: installs what the tests need (the
# wasm32-wasip2 target, componentize-py for the Python probe), builds the workspace
# once (dev profile; the sample probes are built by probe-artifacts/build.rs), then
# runs every test: unit, end-to-end and the slow cluster tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> setup"
rustup target add wasm32-wasip2
scripts/build-python-probe.sh target/probes/python-probe.wasm

echo "==> format"
cargo fmt --all -- --check

echo "==> build"
cargo build --workspace --all-targets

echo "==> test"
cargo test --workspace --no-fail-fast
