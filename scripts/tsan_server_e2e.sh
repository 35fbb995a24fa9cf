#!/usr/bin/env bash
# `ttt serve` under ThreadSanitizer (issue 25): builds ttt in build-tsan (-DTTT_TSAN=ON: the server
# library instrumented, the engine not) and
# runs the server's end-to-end tests against it: tests/server_hostile_e2e_test.sh (deletes,
# forks, snapshots, restores and exports racing on the same sessions, slow and idle
# connections, streams) and, with --full, tests/server_e2e_test.sh too. Any ThreadSanitizer
# report fails the run (each server process writes its reports to $TSAN_LOG_DIR/tsan.*).
#
#   scripts/tsan_server_e2e.sh [--full]
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-DCMAKE_BUILD_TYPE=Release -DTTT_TSAN=ON)  # the engine as in build/ (ccache), the server with TSan
if command -v ccache >/dev/null; then
  flags+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR="$PWD"
fi
cmake -S . -B build-tsan -G Ninja "${flags[@]}" >/dev/null
cmake --build build-tsan -j "$(nproc)" --target ttt
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 log_path=$logs/tsan"
rc=0
tests/server_hostile_e2e_test.sh build-tsan/ttt || rc=1
if [ "${1:-}" = "--full" ]; then
  tests/server_e2e_test.sh build-tsan/ttt build-tsan || { [ $? = 77 ] || rc=1; }
fi
if compgen -G "$logs/tsan*" > /dev/null; then
  echo "FAIL: ThreadSanitizer reports:"
  cat "$logs"/tsan* | head -200
  rc=1
else
  echo "tsan_server_e2e: no ThreadSanitizer report"
fi
exit $rc
