#!/usr/bin/env bash
# The main job: installs what is missing (including Debian's linux-source-6.1 for the corpus),
# builds, and runs `ttt experiment`: trains small full-attention, SWA and TTT-E2E models on the
# Linux kernel source, evaluates them and writes runs/experiment/REPORT.md (about 30 minutes on
# 2 cores; `./run.sh --quick` takes about 10). Arguments go to `ttt experiment`; an interrupted
# run resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh --data
scripts/build.sh release >/dev/null
exec ./build/ttt experiment "$@"
