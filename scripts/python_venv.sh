#!/usr/bin/env bash
# Makes a virtual environment at DIR (default .venv) that sees Debian's numpy
# and torch, and installs the pstore Python package (python/) into it with the
# libpstore.so of build/ ($PSTORE_BUILD_DIR if set) inside the package. Offline: nothing is downloaded.
#   scripts/python_venv.sh [DIR]      then: DIR/bin/python -c 'import pstore'
# Run scripts/setup.sh and scripts/build.sh first. Uses Debian's interpreter,
# /usr/bin/python3, whatever python3 comes first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
export PSTORE_BUILD_DIR=${PSTORE_BUILD_DIR:-$PWD/build}
[ -e "$PSTORE_BUILD_DIR/libpstore.so" ] ||
  { echo "python_venv: no $PSTORE_BUILD_DIR/libpstore.so; run scripts/build.sh first" >&2; exit 1; }
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --no-index --no-build-isolation --force-reinstall \
  --no-deps ./python
rm -rf python/build python/*.egg-info
"$venv/bin/python" -c 'import pstore, numpy, torch; print("pstore", pstore.__version__, "in", "'"$venv"'", "with numpy", numpy.__version__, "and torch", torch.__version__)'
