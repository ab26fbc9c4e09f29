#!/usr/bin/env bash
# Checks pstore's thread-safety annotations (common/thread_annotations.h:
# GUARDED_BY, REQUIRES, ...) with clang's -Wthread-safety, which GCC does not
# have. Every translation unit of the pager, the store and the C API is
# compiled with clang 14 for its diagnostics only (-fsyntax-only), with the
# include paths and definitions of the build's compile_commands.json. Part of
# scripts/test.sh; run after a build (scripts/build.sh). Files that include
# librados' C++ headers are left out: Debian's librados.hpp does not compile
# with clang in C++20 (an ambiguous operator== in rados/buffer.h); none of
# them declares an annotated field. store/remote/pack_layout.h includes them
# too, so its includers are left out (lazy_remote.cc's annotations are then
# checked by no compiler here).
#
#   scripts/check_thread_safety.sh [BUILD_DIR]     (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
clang=$(command -v clang++-14 || command -v clang++ || true)
if [ -z "$clang" ]; then
  echo "check_thread_safety.sh: clang++-14 is not installed (scripts/setup.sh installs clang-14)" >&2
  exit 1
fi
if [ ! -f "$build/compile_commands.json" ]; then
  echo "check_thread_safety.sh: no $build/compile_commands.json: build first (scripts/build.sh)" >&2
  exit 1
fi
python3 - "$clang" "$build/compile_commands.json" "$PWD" <<'PY'
import json, os, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
clang, db, root = sys.argv[1], sys.argv[2], sys.argv[3]
units = []
for e in json.load(open(db)):
    rel = os.path.relpath(e["file"], root)
    if not rel.startswith(("pager/", "store/", "api/", "common/")) or not rel.endswith(".cc"):
        continue
    text = open(e["file"]).read()
    if any(h in text for h in ("librados", "rados_connection.h", "rados_io.h", "pack_layout.h")):
        continue
    args = shlex.split(e["command"]) if "command" in e else e["arguments"]
    keep = [a for a in args[1:] if a.startswith(("-I", "-D", "-std=", "-isystem"))]
    # -isystem takes its path as the next argument
    for i, a in enumerate(args):
        if a == "-isystem" and i + 1 < len(args):
            keep += ["-isystem", args[i + 1]]
    units.append((rel, [clang, "-fsyntax-only", "-Wno-everything", "-Wthread-safety",
                        "-Werror=thread-safety", *keep, e["file"]], e["directory"]))
def check(u):
    rel, cmd, cwd = u
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return rel, p.returncode, p.stdout
bad = 0
with ThreadPoolExecutor(max_workers=2) as ex:
    for rel, rc, out in ex.map(check, units):
        if rc != 0:
            bad += 1
            print(f"{rel}:\n{out}", file=sys.stderr)
if bad:
    sys.exit(f"check_thread_safety.sh: {bad} of {len(units)} files fail clang's -Wthread-safety")
print(f"check_thread_safety.sh: {len(units)} files pass clang's -Wthread-safety")
PY
