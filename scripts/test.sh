#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every
# test (unit tests, then the multi-process, crash and corpus tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 1800 "$@"
