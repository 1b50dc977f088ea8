#!/usr/bin/env bash
# PLB's main job from a fresh machine: the workspace build scripts/test.sh runs (same
# command, flags and environment, scripts/env.sh: after test.sh it compiles nothing; the
# sample probes are built by probe-artifacts/build.rs in it), then `plb dev`: a whole
# local cluster on the embedded SQLite default (data in .plb-dev/, reused by the next
# start). Extra arguments go to `plb dev` (e.g. --listen 127.0.0.1:7171 --nodes 4;
# --help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
plb_build
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -E 's/.*"target_directory":"([^"]*)".*/\1/')"
exec "$target_dir/debug/plb" dev "$@"
