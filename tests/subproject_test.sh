#!/usr/bin/env bash
# subproject_test.sh: pstore as a part of another CMake project
# (add_subdirectory). A host project that sets its own C++ standard adds
# pstore's source tree, then checks at configure time that pstore changed
# none of the host's settings, defined no tests or benchmarks, and gives its
# C API as pstore::pstore with only api/ (and the generated version header)
# as include directories; then it builds a C client and a C++17 client of
# the C API and runs the C one against a real model.
#
#   subproject_test.sh SOURCE_DIR PSTORE_BIN MAKE_MODEL
set -euo pipefail
src=$1 pstore=$2 make_model=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/pstore-subproject-XXXXXX")
cleanup() {
  "$pstore" --store "$work/store" ps --gc-all >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }

mkdir -p "$work/host"
cat >"$work/host/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.22)
project(host C CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
add_subdirectory("$src" pstore)

# pstore left the host's settings alone and built no tests or benchmarks.
if(NOT CMAKE_CXX_STANDARD EQUAL 17)
  message(FATAL_ERROR "pstore changed the host's CMAKE_CXX_STANDARD to \${CMAKE_CXX_STANDARD}")
endif()
foreach(t codec_test store_test pager_test make_model import_bench pager_bench)
  if(TARGET \${t})
    message(FATAL_ERROR "pstore defined its test or benchmark target \${t} in a host project")
  endif()
endforeach()
# Its C API's include directories: api/ and the generated header's folder in
# the build, include/ once installed.
get_target_property(inc pstore INTERFACE_INCLUDE_DIRECTORIES)
foreach(d IN LISTS inc)
  if(NOT d MATCHES "/api>?\$" AND NOT d STREQUAL "\\$<INSTALL_INTERFACE:include>")
    message(FATAL_ERROR "pstore::pstore has the include directory \${d}")
  endif()
endforeach()

add_executable(client_c "$src/tests/c_api_check.c")
target_link_libraries(client_c PRIVATE pstore::pstore)
set_target_properties(client_c PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON)
target_compile_options(client_c PRIVATE -Wall -Wextra -pedantic -Werror)

# A C++17 target of the host includes pstore.h and is still built as C++17.
file(WRITE "\${CMAKE_CURRENT_BINARY_DIR}/client17.cc"
  "#include <pstore.h>\n"
  "static_assert(__cplusplus == 201703L, \"the host's C++17 target is not C++17\");\n"
  "int main() { return pstore_version()[0] == 0; }\n")
add_executable(client_cxx17 "\${CMAKE_CURRENT_BINARY_DIR}/client17.cc")
target_link_libraries(client_cxx17 PRIVATE pstore::pstore)
target_compile_options(client_cxx17 PRIVATE -Wall -Wextra -Werror)
CMAKE

cmake -S "$work/host" -B "$work/host/build" -DCMAKE_BUILD_TYPE=Release \
  >"$work/configure.log" 2>&1 || { cat "$work/configure.log" >&2; fail "the host project does not configure"; }
cmake --build "$work/host/build" -j2 --target client_c client_cxx17 >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log" >&2; fail "the host project's clients do not build"; }

"$make_model" "$work/m.safetensors" --mb 4 --tensors 12 --seed 7 >/dev/null
"$pstore" --store "$work/store" import "$work/m.safetensors" m:1 >/dev/null
"$work/host/build/client_c" "$work/store" m:1 "$work/m.safetensors" \
  || fail "the C client built inside the host project failed against a model"
"$work/host/build/client_cxx17" || fail "the C++17 client failed"
echo "pstore as a subproject: host settings kept, no tests, C and C++17 clients built and run"
