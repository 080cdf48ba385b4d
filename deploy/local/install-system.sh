#!/usr/bin/env bash
# Installs the Debian packages the local stack and the tests need, only those missing.
# Usage: install-system.sh [package ...]   (no arguments = everything below)
# Called by `make` and by `guardian stack up` when a server binary is missing.
set -euo pipefail

want=("$@")
if [ ${#want[@]} -eq 0 ]; then
  # npm: deploy/local/web-assets.sh; chromium + chromium-driver (one source package, so one version): tests' browser
  want=(redis-server postgresql default-jre-headless maven docker-compose prometheus npm chromium chromium-driver)
fi

missing=()
for pkg in "${want[@]}"; do
  case "$pkg" in
    # Java and Maven may come from elsewhere (SDKMAN, a Temurin JDK): a working command is enough.
    default-jre-headless) command -v java >/dev/null 2>&1 && continue ;;
    maven) command -v mvn >/dev/null 2>&1 && continue ;;
    # Node.js from elsewhere (NodeSource's nodejs bundles npm and conflicts with Debian's npm): npm is enough.
    npm) command -v npm >/dev/null 2>&1 && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "install-system: missing Debian packages: ${missing[*]}" >&2
    echo "install-system: run as root, or install them: apt-get install ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi

echo "install-system: installing ${missing[*]} (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
# --no-install-recommends keeps docker-compose from pulling in a Docker engine it does not need here.
# policy-rc.d stops the packages' own init scripts from starting a second Redis/PostgreSQL on default ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "install-system: done"
