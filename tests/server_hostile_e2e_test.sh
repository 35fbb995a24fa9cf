#!/usr/bin/env bash
# `ttt serve` against hostile networks (issue 25): raw-socket checks on loopback against the
# real server with a tiny model (tests/server_hostile_e2e.py). Bounded: about a minute.
#
#   tests/server_hostile_e2e_test.sh path/to/ttt
set -u
TTT="$(realpath "$1")"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
d="$(mktemp -d)"
trap 'rm -rf "$d"' EXIT
cd "$d" || exit 1
. "$ROOT/tests/tiny_served_model.sh"
make_tiny_served_model "$TTT" "$ROOT" || exit 1
ulimit -n 4096 2>/dev/null || true
timeout 600 python3 "$ROOT/tests/server_hostile_e2e.py" "$TTT" "$d/model" "$d"
