#!/usr/bin/env bash
# Configures and builds one build directory. Usage: scripts/build.sh [release|sanitize]
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-release}"
case "$mode" in
  release)  dir=build;          flags=(-DCMAKE_BUILD_TYPE=Release) ;;
  sanitize) dir=build-sanitize; flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTTT_SANITIZE=ON -DTTT_BUILD_BENCH=OFF) ;;
  *) echo "build.sh: unknown mode '$mode' (release or sanitize)" >&2; exit 2 ;;
esac
# ccache, when installed, makes rebuilds (and builds of other checkouts of this tree) cheap.
if command -v ccache >/dev/null; then
  flags+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR="$PWD"
fi
cmake -S . -B "$dir" -G Ninja "${flags[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc)"
