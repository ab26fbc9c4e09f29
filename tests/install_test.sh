#!/usr/bin/env bash
# install_test.sh: the installed tree works on its own. Installs the build
# into a temporary prefix with `cmake --install`, then compiles
# tests/c_api_check.c (C99, -Wall -Wextra -pedantic -Werror) against it twice,
# through pkg-config and through find_package(pstore) in a small CMake
# project, checks that the version macros come from the installed
# pstore_version.h and agree with the library, and runs both programs against
# a real model. The installed CMake package names no folder of the source or
# build tree.
#
#   install_test.sh BUILD_DIR SOURCE_DIR PSTORE_BIN MAKE_MODEL
set -euo pipefail
build=$1 src=$2 pstore=$3 make_model=$4
work=$(mktemp -d "${TMPDIR:-/tmp}/pstore-install-XXXXXX")
prefix=$work/prefix
cleanup() {
  "$pstore" --store "$work/store" ps --gc-all >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/pstore.h include/pstore_version.h; do
  [[ -f $prefix/$f ]] || fail "$f is not installed"
done
libdir=$(cd "$prefix" && ls -d lib*/pkgconfig | head -1 | xargs dirname)
[[ -n $libdir ]] || fail "no pkgconfig folder under $prefix"

# The installed package names no folder of the source or build tree: its
# include directory is the installed include/ alone.
targets=$(cat "$prefix/$libdir"/cmake/pstore/pstoreTargets*.cmake)
for tree in "$src" "$build"; do
  [[ $targets != *"$(cd "$tree" && pwd)"* ]] || fail "the installed CMake package names $tree"
done
grep -q 'INTERFACE_INCLUDE_DIRECTORIES "${_IMPORT_PREFIX}/include"' <<<"$targets" \
  || fail "pstore::pstore's installed include directory is not include/"

# The header set compiles on its own as C99 (no other pstore headers needed).
printf '#include <pstore.h>\nint main(void) { return PSTORE_VERSION_NUMBER >= 0 ? 0 : 1; }\n' \
  >"$work/alone.c"
cc -std=c99 -Wall -Wextra -pedantic -Werror -I"$prefix/include" -c "$work/alone.c" \
  -o "$work/alone.o" || fail "pstore.h does not compile alone as C99 from the installed tree"

# pkg-config.
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
want=$(pkg-config --modversion pstore)
cc -std=c99 -Wall -Wextra -pedantic -Werror "$src/tests/c_api_check.c" -o "$work/check_pc" \
  $(pkg-config --cflags --libs pstore) || fail "c_api_check.c does not build through pkg-config"

# The CMake package.
mkdir -p "$work/proj"
cat >"$work/proj/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.22)
project(client C)
find_package(pstore $want REQUIRED)
add_executable(check_cmake $src/tests/c_api_check.c)
target_link_libraries(check_cmake PRIVATE pstore::pstore)
set_target_properties(check_cmake PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON)
target_compile_options(check_cmake PRIVATE -Wall -Wextra -pedantic -Werror)
CMAKE
cmake -S "$work/proj" -B "$work/proj/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null \
  || fail "find_package(pstore $want) failed on the installed tree"
cmake --build "$work/proj/build" >/dev/null || fail "c_api_check.c does not build through find_package"

# The macros in the installed header and the library agree with the package.
cat >"$work/version.c" <<C
#include <stdio.h>
#include <string.h>
#include <pstore.h>
int main(void) {
  printf("%s %s\n", PSTORE_VERSION_STRING, pstore_version());
  return strcmp(PSTORE_VERSION_STRING, pstore_version()) != 0 ||
         PSTORE_VERSION_NUMBER != (int)pstore_version_number();
}
C
cc -std=c99 -Wall -Wextra -Werror "$work/version.c" -o "$work/version" \
  $(pkg-config --cflags --libs pstore)
got=$(LD_LIBRARY_PATH=$prefix/$libdir "$work/version") || fail "header and library versions differ: $got"
[[ $got == "$want $want" ]] || fail "versions: header and library '$got', package $want"

# Both programs read a real model through the installed library.
"$make_model" "$work/m.safetensors" --mb 4 --tensors 12 --seed 5 >/dev/null
"$pstore" --store "$work/store" import "$work/m.safetensors" m:1 >/dev/null
for exe in "$work/check_pc" "$work/proj/build/check_cmake"; do
  LD_LIBRARY_PATH=$prefix/$libdir "$exe" "$work/store" m:1 "$work/m.safetensors" \
    || fail "$exe failed against the installed library"
done
# The programs did use the installed library, not the build's.
linked=$(LD_LIBRARY_PATH=$prefix/$libdir ldd "$work/check_pc")
[[ $linked == *"$prefix/$libdir/libpstore.so"* ]] || fail "check_pc is not linked against $prefix: $linked"
# The installed command runs its remote commands in the installed
# pstore-remote, and opens models from a store's remote through the installed
# module (a remote that cannot be reached: the error is the connection's,
# not a module that cannot be loaded).
if [[ -x $build/pstore-remote ]]; then
  [[ -x $prefix/bin/pstore-remote ]] || fail "pstore-remote is not installed beside pstore"
  printf '[global]\nmon_host = 127.0.0.1:1\n' >"$work/none.conf"
  "$prefix/bin/pstore" --store "$work/store" remote add r rados:none --conf "$work/none.conf" \
    --timeout 2 >/dev/null || fail "the installed pstore could not run remote add"
  if out=$("$prefix/bin/pstore" --store "$work/store" warm nosuch:1 2>&1); then
    fail "warm of a model neither store has succeeded: $out"
  fi
  [[ $out != *"cannot be loaded"* ]] || fail "the installed pstore did not load the installed module: $out"
fi
echo "installed tree at version $want: header alone, pkg-config, find_package and both checks pass"
