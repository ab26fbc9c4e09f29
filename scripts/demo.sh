#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs
# pstore's main job on the default store (import a real model, open it from
# several processes, print what it cost). See scripts/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec python3 scripts/demo.py
