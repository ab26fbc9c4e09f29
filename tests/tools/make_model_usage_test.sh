#!/usr/bin/env bash
# make_model's command line: --help and -h print the usage and write nothing;
# an output path that looks like an option is refused, and no file is made.
# Usage: make_model_usage_test.sh MAKE_MODEL
set -u
make_model=$1
dir=$(mktemp -d /tmp/pstore-make-model-XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
fail=0
for opt in --help -h; do
  out=$("$make_model" "$opt" 2>/dev/null)
  rc=$?
  [ "$rc" -eq 0 ] || { echo "make_model $opt exited $rc, expected 0"; fail=1; }
  case $out in usage:*) ;; *) echo "make_model $opt printed no usage: $out"; fail=1 ;; esac
done
err=$("$make_model" --mb 1 2>&1 >/dev/null)
rc=$?
[ "$rc" -eq 2 ] || { echo "make_model --mb 1 exited $rc, expected 2"; fail=1; }
case $err in *"output path"*) ;; *) echo "make_model --mb 1 said: $err"; fail=1 ;; esac
left=$(ls -A)
[ -z "$left" ] || { echo "make_model wrote files: $left"; fail=1; }
exit $fail
