#!/usr/bin/env bash
# PLB's whole test suite, from a fresh machine (CI runs exactly this), in stages that
# stop at the first failure:
#   setup      the wasm32-wasip2 target, clippy and rustfmt; componentize-py for the
#              Python probe, componentize-js for the JavaScript one; haproxy, chromium
#              and postgresql-15 from Debian's packages (the end-to-end tests drive
#              them; the store's tests start PostgreSQL with scripts/pg-temp.sh);
#              schemathesis's venv. All but the Rust components run in the
#              background, beside the format check and the build, and the tests wait
#              for them
#   format     cargo fmt --check
#   invariants scripts/check-invariants.sh (cargo metadata only)
#   build      the workspace once, every target, dev profile, with clippy's lints in
#              the same compile (scripts/env.sh); any warning fails it, as
#              `cargo clippy --workspace --all-targets -- -D warnings` would
#   fast       unit tests (every crate's lib and bins) and doc tests: seconds
#   slow       the integration test binaries: end-to-end tests against real balancers,
#              agents, probes, SQLite files, PostgreSQL, HAProxy and Chromium on
#              loopback
#   fuzz       scripts/fuzz-api.sh: schemathesis (PyPI, venv in target/) against the
#              debug balancer from its OpenAPI document as admin, client and agent:
#              no 5xx, nothing the document does not allow, no cross-tenant access
# scripts/dev.sh runs the same build, so after this script it compiles nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage's start says how long the script has run (CI's budget is 20 minutes).
stage() { echo "==> $1 (at ${SECONDS} s)"; }

stage "setup"
source scripts/env.sh
# The rest of the set-up (Debian's packages, the Python and JavaScript sample probes,
# schemathesis's venv) is network and a few seconds of CPU: it runs beside the format
# check and the build, into a log printed when the tests that need it start.
setup_log="$(mktemp)"
(
    set -euo pipefail
    need=()
    command -v haproxy >/dev/null || need+=(haproxy)
    command -v chromium >/dev/null || need+=(chromium)
    [ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
    scripts/apt-install.sh "${need[@]}"
    scripts/build-python-probe.sh target/probes/python-probe.wasm
    scripts/build-js-probe.sh target/probes/js-probe.wasm
    scripts/fuzz-venv.sh
) >"$setup_log" 2>&1 &
setup_pid=$!
trap 'kill "$setup_pid" 2>/dev/null || true' EXIT

stage "format"
cargo fmt --all -- --check

stage "invariants"
scripts/check-invariants.sh

stage "build (with clippy, warnings denied)"
plb_build --deny-warnings

stage "set-up done (packages, guest-language probes, schemathesis)"
setup_ok=0
wait "$setup_pid" || setup_ok=$?
trap - EXIT
cat "$setup_log"
rm -f "$setup_log"
if [ "$setup_ok" -ne 0 ]; then
    echo "error: the set-up beside the build failed (exit $setup_ok)" >&2
    exit 1
fi

stage "fast: unit and doc tests"
cargo test --workspace --lib --bins --no-fail-fast
cargo test --workspace --doc --no-fail-fast

stage "slow: end-to-end (integration test binaries)"
cargo test --workspace --test '*' --no-fail-fast

stage "fuzz: the REST API from its OpenAPI document (schemathesis)"
scripts/fuzz-api.sh

echo "==> done in ${SECONDS} s"
