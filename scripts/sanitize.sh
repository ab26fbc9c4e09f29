#!/usr/bin/env bash
# Builds pstore with a sanitizer build type in build-<type>/ and runs the unit
# tests (ctest -L unit) and the C API check (the pager_c_api acceptance test:
# a C program acquiring every tensor through libpstore, with models imported by
# the sanitized pstore command) under it. Part of scripts/test.sh.
#
#   scripts/sanitize.sh [asan|tsan]     (default asan)
#
# RocksDB, Boost and libstdc++ come from Debian and are not instrumented: the
# sanitizers see pstore's own code, and calls into those libraries only where
# pstore hands them its memory. The few reports that are about those libraries
# alone are suppressed, each with its reason, in tests/sanitizers/.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-asan}
case "$kind" in
  asan) type=Asan ;;
  tsan) type=Tsan ;;
  *) echo "usage: scripts/sanitize.sh [asan|tsan]" >&2; exit 2 ;;
esac
dir=build-$kind
supp=$PWD/tests/sanitizers
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=$type -DPSTORE_BUILD_BENCH=OFF -DPSTORE_WERROR=ON >/dev/null
# Every target: a test whose executable is not built is registered as
# <name>_NOT_BUILT, which -L unit would leave out without a word.
cmake --build "$dir" -j2
not_built=$(ctest --test-dir "$dir" -N | grep '_NOT_BUILT' || true)
if [ -n "$not_built" ]; then
  echo "sanitize.sh: tests registered but not built:" >&2
  echo "$not_built" >&2
  exit 1
fi
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=0"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# ignore_noninstrumented_modules: memory accesses made by interceptors
# (memcpy, memcmp, strlen, ...) called from uninstrumented code are not
# recorded; see tests/sanitizers/tsan.supp for why.
export TSAN_OPTIONS="suppressions=$supp/tsan.supp:halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1"
ctest --test-dir "$dir" --output-on-failure --timeout 1800 -L unit
ctest --test-dir "$dir" --output-on-failure --timeout 1800 -R '^pager_c_api$'
