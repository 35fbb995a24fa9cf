#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs `ttt` (extra arguments go to it).
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
scripts/build.sh release >/dev/null
exec ./build/ttt "$@"
