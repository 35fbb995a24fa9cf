#!/usr/bin/env bash
# The Python environment `ttt import` reads official checkpoints with: .venv-import at the
# repository root, holding tensorstore (the library orbax stores its OCDBT/zarr arrays with) and
# numpy, from PyPI. Safe to re-run. `scripts/install-deps.sh --import` calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-import
if [ -x "$VENV/bin/python3" ] && "$VENV/bin/python3" -c "import tensorstore, numpy" 2>/dev/null; then
  exit 0
fi
if ! python3 -c "import venv, ensurepip" 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
fi
echo "import-env: creating $VENV (tensorstore, numpy)"
python3 -m venv "$VENV"
"$VENV/bin/python3" -m pip install -q --upgrade pip
"$VENV/bin/python3" -m pip install -q "tensorstore>=0.1.60" numpy
