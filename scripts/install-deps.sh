#!/usr/bin/env bash
# Installs the Debian packages the project builds and runs with. Safe to re-run: it only calls
# apt-get when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libopenblas0-pthread libopenblas-dev   # GEMM (loaded at run time, AVX-512 kernels chosen by the engine)
  libgtest-dev libbenchmark-dev          # tests and benchmarks
  libcli11-dev nlohmann-json3-dev        # command line, JSON
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
