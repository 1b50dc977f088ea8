# The one workspace build both README commands share: sourced by scripts/test.sh and
# scripts/dev.sh (shellcheck shell=bash).
#
# `plb_build` is `cargo build --workspace --all-targets` (dev profile) with clippy-driver
# as the workspace wrapper: clippy's lints run inside the same compile as codegen, on
# the workspace's crates only, so there is no second (check-mode) compile of the
# dependencies as a separate `cargo clippy` costs. This environment is part of cargo's
# fingerprint of every workspace crate, so every cargo command of both scripts runs
# under it: after scripts/test.sh, scripts/dev.sh compiles nothing, and test.sh's
# `cargo test` stages reuse the build's artifacts. (A plain `cargo build`, `cargo test`
# or `cargo clippy` outside the scripts keeps its own artifacts beside these.)
#
# Lints warn; `plb_build --deny-warnings` (test.sh) fails when any workspace crate has a
# warning, rustc's or clippy's, as `cargo clippy --workspace --all-targets -- -D
# warnings` does (cargo replays the warnings of crates already built, so a re-run fails
# the same way). dev.sh only shows them.

# No incremental compilation state: both scripts build from scratch on a fresh machine,
# where writing it only costs (export CARGO_INCREMENTAL=1 first to keep it while
# editing; it is part of the fingerprint, so switching rebuilds the workspace's crates).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

rustup target add wasm32-wasip2
rustup component add clippy rustfmt
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER
# clippy-driver's own arguments (what follows `--` in `cargo clippy -- ...`): none; the
# lint levels are the workspace's ([workspace.lints], each package's clippy.toml).
export CLIPPY_ARGS=""

plb_build() {
    local - deny=0 log status=0
    set -o pipefail
    if [ "${1:-}" = --deny-warnings ]; then
        deny=1
        shift
    fi
    log="$(mktemp)"
    cargo build --workspace --all-targets "$@" 2>&1 | tee "$log" || status=$?
    if [ "$status" = 0 ] && [ "$deny" = 1 ] &&
        grep -qE '^warning: `[^`]+` \([^)]+\) generated [0-9]+ warnings?' "$log"; then
        echo "error: the workspace has warnings (rustc's or clippy's, above); they fail the build" >&2
        status=1
    fi
    rm -f "$log"
    return "$status"
}
