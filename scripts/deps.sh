#!/usr/bin/env bash
# Installs whichever of the Debian packages named as arguments are missing (with sudo when not root).
# Runs `apt-get update` only when something is missing; silent when everything is installed.
set -euo pipefail

if ! command -v dpkg-query >/dev/null; then
    # Not Debian: nothing to install with apt; check for the one program the scripts run.
    command -v redis-server >/dev/null && exit 0
    echo "error: redis-server not found. Install Redis, hiredis and OpenSSL (e.g. 'brew install redis hiredis openssl')." >&2
    exit 1
fi

missing=()
for package in "$@"; do
    if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$package")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
        echo "error: missing packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
        exit 1
    }
    sudo=(sudo)
fi
echo "Installing missing packages: ${missing[*]}"
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0)
"${apt[@]}" update
"${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
