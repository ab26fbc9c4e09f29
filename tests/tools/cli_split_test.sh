#!/usr/bin/env bash
# The pstore command without the remote tier: `pstore` does not load librados;
# its remote commands run in pstore-remote beside it (the same process, by
# exec), with their full usage, JSON and exit codes; without pstore-remote
# they fail saying what is missing.
# Usage: cli_split_test.sh PSTORE_BIN MAKE_MODEL
set -u
pstore=$1 make_model=$2
dir=$(mktemp -d /tmp/pstore-cli-split-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail=0
bad() { echo "FAILED: $*"; fail=1; }
"$make_model" "$dir/m.safetensors" --mb 1 --tensors 3 --seed 1 >/dev/null || exit 1
"$pstore" --store "$dir/s" import "$dir/m.safetensors" m:1 >/dev/null || exit 1

libs=$(ldd "$pstore")
[[ $libs != *librados* ]] || bad "pstore links librados: $libs"
[[ $(ldd "$(dirname "$pstore")/pstore-remote") == *librados* ]] || bad "pstore-remote lacks librados"

help=$("$pstore" --help)
for c in remote push pull; do
  grep -Eq "^  $c +[A-Z]" <<<"$help" || bad "pstore --help does not list $c"
done
# Usage comes from pstore-remote, which knows the options.
out=$("$pstore" push --help) || bad "pstore push --help exited $?"
[[ $out == *--remote* && $out == *NAME:TAG* ]] || bad "pstore push --help: $out"
out=$("$pstore" --json --store "$dir/s" remote ls) || bad "remote ls exited $?"
[[ $out == *'"ok": true'* && $out == *'"remotes": []'* ]] || bad "remote ls --json: $out"
"$pstore" --store "$dir/s" pull >/dev/null 2>&1
rc=$?
[ "$rc" -eq 2 ] || bad "pull without a model exited $rc, expected 2 (usage)"
"$pstore" --store "$dir/s" ls --remote nosuch >/dev/null 2>&1
rc=$?
[ "$rc" -eq 3 ] || bad "ls --remote of an unknown remote exited $rc, expected 3 (not found)"
"$pstore" --store "$dir/s" rm --remote nosuch a:1 >/dev/null 2>&1
rc=$?
[ "$rc" -eq 3 ] || bad "rm --remote of an unknown remote exited $rc, expected 3 (not found)"

# Without pstore-remote beside it.
mkdir "$dir/alone"
cp "$pstore" "$dir/alone/pstore"
for args in "push a:1" "remote ls" "ls --remote r"; do
  # shellcheck disable=SC2086
  err=$("$dir/alone/pstore" --store "$dir/s" $args 2>&1 >/dev/null)
  rc=$?
  [ "$rc" -eq 3 ] || bad "$args without pstore-remote exited $rc, expected 3"
  [[ $err == *"$dir/alone/pstore-remote"*"could not be started"* ]] || bad "$args said: $err"
done
# Local commands do not need it.
"$dir/alone/pstore" --store "$dir/s" ls >/dev/null || bad "ls without pstore-remote failed"
exit $fail
