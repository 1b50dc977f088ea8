#!/usr/bin/env bash
# Installs Debian packages (as root, or through sudo): scripts/apt-install.sh PKG...
set -euo pipefail
[ $# -gt 0 ] || exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
