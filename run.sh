#!/usr/bin/env bash
# The main job: installs what is missing (including Debian's linux-source-6.1 for the corpus),
# builds, and runs `ttt experiment`: trains the paper's seven models (full attention, SWA, the
# SWA/full hybrid, Mamba 2, Gated DeltaNet, TTT-KVB, TTT-E2E) of one shape on the Linux kernel
# source, evaluates them with 95% intervals and writes runs/experiment/REPORT.md (see README for
# the time on 2 cores; `./run.sh --quick` is shorter). Arguments go to `ttt experiment`; an
# interrupted run resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh --data
scripts/build.sh release >/dev/null
exec ./build/ttt experiment "$@"
