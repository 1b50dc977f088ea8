#!/usr/bin/env bash
# Makes target/fuzz-venv, a Python venv with schemathesis from PyPI at the version
# scripts/fuzz-api.sh runs (nothing to do when it is there). scripts/test.sh runs it
# during the build, so the fuzz stage does not wait on PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
venv=target/fuzz-venv

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
    echo "installing schemathesis==$SCHEMATHESIS_VERSION from PyPI into $venv" >&2
    rm -rf "$venv"
    mkdir -p target
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian's python3 has venv in a package of its own.
        rm -rf "$venv"
        scripts/apt-install.sh python3-venv
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
