#!/usr/bin/env bash
# PLB's main job from a fresh machine: installs the wasm32-wasip2 target (the sample
# probes are built by probe-artifacts/build.rs during the cargo build), builds the
# workspace in the same dev profile the tests use, and starts `plb dev`: a whole local
# cluster on the embedded SQLite default (data in .plb-dev/, reused by the next start).
# Extra arguments go to `plb dev` (e.g. --listen 127.0.0.1:7171 --nodes 4).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
exec cargo run -p plb -- dev "$@"
