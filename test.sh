#!/usr/bin/env bash
# The test suite: installs what is missing, then builds and runs it twice under ctest,
# optimized and with AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
jobs="$(nproc)"

echo "== release build"
scripts/build.sh release
ctest --test-dir build --output-on-failure -j "$jobs"

echo "== Python package (pip install . in a fresh venv, pytest tests/python)"
scripts/python_test.sh

echo "== ASan + UBSan build"
scripts/build.sh sanitize
# The pool would hide use-after-free from ASan (tensor/pool.cpp); OpenBLAS leaks by design.
TTT_NO_POOL=1 ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-sanitize --output-on-failure -j "$jobs"
