#!/usr/bin/env bash
# Build the JavaScript example probe (guest-sdk/examples/javascript) into a WebAssembly
# component of the plb:probe/probe world with componentize-js.
#
#   scripts/build-js-probe.sh OUT.wasm [SOURCE.js]
#
# Installs @bytecodealliance/componentize-js from npm (pinned) into target/js-tools the
# first time. `-d http -d fetch-event` leaves out the WASI HTTP interfaces, which a probe
# may not use (its only way out is the host's `http`, to the node's own address).
set -euo pipefail

COMPONENTIZE_JS_VERSION=0.23.0

if [ $# -lt 1 ]; then
    echo "usage: $0 OUT.wasm [SOURCE.js]" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$1"
src="${2:-$root/guest-sdk/examples/javascript/probe.js}"
tools="$root/target/js-tools"

if [ ! -x "$tools/node_modules/.bin/componentize-js" ] ||
    ! grep -q "\"version\": \"$COMPONENTIZE_JS_VERSION\"" \
        "$tools/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null; then
    echo "installing @bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION from npm" >&2
    mkdir -p "$tools"
    (cd "$tools" && [ -f package.json ] || echo '{"private": true}' > package.json)
    npm install --prefix "$tools" --no-audit --no-fund --silent \
        "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION"
fi

mkdir -p "$(dirname "$out")"
"$tools/node_modules/.bin/componentize-js" "$src" \
    --wit "$root/guest-sdk/wit" --world-name probe \
    -d http -d fetch-event \
    -o "$out"
echo "built $out ($(wc -c < "$out") bytes)"
