#!/usr/bin/env bash
# Makes the next `swift build` see a file added to or removed from lua/ or web/.
#
#   scripts/embedded.sh
#
# The EmbedResources plugin lists those files when SwiftPM plans the build, and SwiftPM plans
# again only when the manifest or a target's own files change: a script added to lua/ would be
# left out of the binary (which then stops at start: "lua/NAME.lua was not embedded"), and a
# removed one fails the build ("missing inputs"). Edits to listed files need nothing. This
# compares the list with the one of the last call (.build/embedded-files) and, when it changed,
# touches Package.swift, which makes SwiftPM plan again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
stamp=.build/embedded-files
list="$(find lua web -type f ! -path '*/.*' 2>/dev/null | LC_ALL=C sort)"
if [ "$list" != "$(cat "$stamp" 2>/dev/null || true)" ]; then
    touch Package.swift
    mkdir -p .build
    printf '%s\n' "$list" >"$stamp"
fi
