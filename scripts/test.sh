#!/usr/bin/env bash
# PLB's whole test suite, from a fresh machine: installs what the tests need (the
# wasm32-wasip2 target, componentize-py for the Python probe,
# componentize-js for the JavaScript probe, haproxy and chromium from
# Debian's packages), builds the workspace
# once (dev profile; the sample probes are built by probe-artifacts/build.rs), then
# runs every test: unit, end-to-end and the slow cluster tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> setup"
rustup target add wasm32-wasip2
# System packages the end-to-end tests drive: HAProxy (agent-check against PLB) and
# Chromium (the dashboard's browser test).
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
scripts/build-python-probe.sh target/probes/python-probe.wasm
scripts/build-js-probe.sh target/probes/js-probe.wasm

echo "==> format"
cargo fmt --all -- --check

echo "==> build"
cargo build --workspace --all-targets

echo "==> test"
cargo test --workspace --no-fail-fast
