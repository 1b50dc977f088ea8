#!/usr/bin/env bash
# Build the Python example probe (guest-sdk/examples/python) into a WebAssembly
# component of the plb:probe/probe world with componentize-py.
#
#   scripts/build-python-probe.sh OUT.wasm [SOURCE_DIR [MODULE]]
#
# SOURCE_DIR defaults to guest-sdk/examples/python and MODULE to `probe` (the
# module that defines class WitWorld). Installs componentize-py from PyPI if
# it is missing or another version. Runs the module's unit tests (test_*.py in
# SOURCE_DIR, if any) on the host's CPython against the generated bindings first.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.0

if [ $# -lt 1 ]; then
    echo "usage: $0 OUT.wasm [SOURCE_DIR [MODULE]]" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$1"
src="$(cd "${2:-$root/guest-sdk/examples/python}" && pwd)"
module="${3:-probe}"
wit="$root/guest-sdk/wit"
python="${PYTHON:-python3}"

# componentize-py has no `__main__`: call its console-script entry point.
cpy() { "$python" -c 'import sys, componentize_py; sys.argv[0] = "componentize-py"; sys.exit(componentize_py.script())' "$@"; }

if ! cpy --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
    echo "installing componentize-py==$COMPONENTIZE_PY_VERSION from PyPI" >&2
    "$python" -m pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The bindings, for the host-side unit tests (componentize generates its own).
cpy -d "$wit" -w probe bindings "$work/bindings"
if compgen -G "$src/test_*.py" >/dev/null; then
    (cd "$src" && PYTHONPATH="$work/bindings:$src" PYTHONDONTWRITEBYTECODE=1 \
        "$python" -m unittest discover -s "$src" -p 'test_*.py' -q)
fi

mkdir -p "$(dirname "$out")"
cpy -d "$wit" -w probe componentize -p "$src" -o "$out" "$module"

# A component starts with the magic `\0asm` and the component layer `0d 00 01 00`.
header="$(head -c 8 "$out" | od -An -tx1 | tr -d ' \n')"
if [ "$header" != "0061736d0d000100" ]; then
    echo "error: $out is not a WebAssembly component (header $header)" >&2
    exit 1
fi
echo "built $out ($(wc -c <"$out") bytes)" >&2
