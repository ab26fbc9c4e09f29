#!/usr/bin/env python3
"""Writes malformed safetensors models, one per case, for import tests.

Usage: make_bad_safetensors.py OUT_DIR

OUT_DIR (created if missing) receives valid.safetensors, a well-formed file
that must import, and one entry per malformed case that must be refused:
`<case>.safetensors` for a single-file case, `<case>/` (holding
model.safetensors.index.json and its shards) for a sharded case. The script
prints the case names, one a line. Python 3 standard library only.

Single-file cases (<case>.safetensors):
  empty_file                 0 bytes
  truncated_prefix           5 bytes, shorter than the 8-byte header length
  header_len_zero            header length 0
  header_len_absurd          header length 2^40, beyond the 100 MiB limit
  header_len_past_end        header length larger than the rest of the file
  bad_json                   header is not valid JSON
  non_object_json            header is a JSON array
  leading_whitespace         header starts with a space
  nul_padding                header padded with NUL bytes instead of spaces
  invalid_utf8               tensor name with a byte that is not UTF-8
  unknown_dtype              dtype "F128"
  missing_field              entry without data_offsets
  extra_field                entry with an unknown field
  duplicate_field            entry with "shape" twice
  negative_number            negative shape dimension
  fractional_number          fractional shape dimension
  huge_number                data_offsets end beyond 2^64 - 1
  shape_size_mismatch        shape x dtype size differs from the offsets' span
  offsets_past_end           data_offsets run past the end of the data section
  begin_after_end            data_offsets [8, 0]
  overlap                    two tensors share bytes
  gap                        bytes between two tensors belong to neither
  trailing_bytes             bytes after the last tensor
  duplicate_name             two entries with the same tensor name
  empty_name                 tensor named ""
  product_overflow           shape product overflows 64 bits
  rank_too_large             shape of 33 dimensions
  metadata_non_string        __metadata__ with a number value

Sharded cases (<case>/model.safetensors.index.json plus shards):
  sharded_missing_shard      weight_map names a shard file that does not exist
  sharded_path_traversal     weight_map names "../valid.safetensors"
  sharded_tensor_missing     weight_map lists a tensor its shard lacks
  sharded_unlisted_tensor    a shard holds a tensor weight_map does not list
  sharded_tensor_in_two      one tensor in two shards
  sharded_wrong_shard        weight_map puts a tensor in the other shard
  sharded_duplicate_key      weight_map lists a tensor twice
  sharded_bad_index_json     index is not valid JSON
  sharded_no_weight_map      index without weight_map
"""

import json
import os
import struct
import sys


def st_file(header, data=b"", pad=0):
    """Bytes of a safetensors file: length prefix, header text, padding, data."""
    h = header.encode("utf-8") if isinstance(header, str) else header
    h += b" " * pad
    return struct.pack("<Q", len(h)) + h + data


def entry(name, dtype, shape, begin, end):
    """One header entry as JSON text (name may be any str)."""
    return "%s:%s" % (
        json.dumps(name),
        json.dumps({"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}),
    )


def obj(*entries):
    return "{" + ",".join(entries) + "}"


def data(n, seed=1):
    return bytes((seed + 7 * i) & 0xFF for i in range(n))


A8 = entry("a", "F32", [2], 0, 8)  # a well-formed tensor of 8 bytes
D8 = data(8)


def raw_a(fields):
    """Tensor "a" with dtype F32 and the given raw field text."""
    return '"a":{"dtype":"F32",%s}' % fields


def single_cases():
    return {
        "empty_file": b"",
        "truncated_prefix": b"\x02\x00\x00\x00\x00",
        "header_len_zero": struct.pack("<Q", 0) + b"{}",
        "header_len_absurd": struct.pack("<Q", 1 << 40) + b"{}",
        "header_len_past_end": struct.pack("<Q", 100) + b"{}",
        "bad_json": st_file('{"a":{"dtype":"F32",'),
        "non_object_json": st_file("[1,2]"),
        "leading_whitespace": st_file(" " + obj(A8), D8),
        "nul_padding": st_file(obj(A8).encode() + b"\x00\x00\x00", D8),
        "invalid_utf8": st_file(b'{"\xff":' + obj(A8)[5:].encode(), D8),
        "unknown_dtype": st_file(obj(entry("a", "F128", [2], 0, 8)), D8),
        "missing_field": st_file(obj(raw_a('"shape":[2]')), D8),
        "extra_field": st_file(obj(raw_a('"shape":[2],"data_offsets":[0,8],"x":1')), D8),
        "duplicate_field": st_file(
            obj(raw_a('"shape":[2],"shape":[2],"data_offsets":[0,8]')), D8
        ),
        "negative_number": st_file(obj(raw_a('"shape":[-2],"data_offsets":[0,8]')), D8),
        "fractional_number": st_file(obj(raw_a('"shape":[2.5],"data_offsets":[0,8]')), D8),
        "huge_number": st_file(
            obj(raw_a('"shape":[2],"data_offsets":[0,18446744073709551624]')), D8
        ),
        "shape_size_mismatch": st_file(obj(entry("a", "F32", [3], 0, 8)), D8),
        "offsets_past_end": st_file(obj(A8), data(4)),
        "begin_after_end": st_file(obj(entry("a", "F32", [0], 8, 0)), D8),
        "overlap": st_file(obj(A8, entry("b", "F32", [2], 4, 12)), data(12)),
        "gap": st_file(obj(A8, entry("b", "F32", [1], 12, 16)), data(16)),
        "trailing_bytes": st_file(obj(A8), data(9)),
        "duplicate_name": st_file(obj(A8, entry("a", "F32", [2], 8, 16)), data(16)),
        "empty_name": st_file(obj(entry("", "F32", [2], 0, 8)), D8),
        "product_overflow": st_file(obj(entry("a", "U8", [1 << 32, 1 << 32], 0, 0))),
        "rank_too_large": st_file(obj(entry("a", "F32", [1] * 33, 0, 4)), data(4)),
        "metadata_non_string": st_file(obj('"__metadata__":{"format":1}', A8), D8),
    }


def valid_file():
    """Three tensors, metadata, an empty tensor, header padded to 8 bytes."""
    header = obj(
        '"__metadata__":{"format":"pt"}',
        entry("w", "F32", [2, 2], 0, 16),
        entry("b", "BF16", [3], 16, 22),
        entry("e", "F16", [0, 4], 22, 22),
        entry("i", "U8", [2], 22, 24),
    )
    pad = (8 - (8 + len(header)) % 8) % 8
    return st_file(header, data(24, 3), pad)


def shard(names):
    """A shard holding F16 tensors of shape [2], in the order given."""
    entries = [entry(n, "F16", [2], 4 * i, 4 * i + 4) for i, n in enumerate(names)]
    return st_file(obj(*entries), data(4 * len(names), 5))


def index(weight_map):
    return json.dumps({"metadata": {"total_size": 12}, "weight_map": weight_map}).encode()


S1 = "model-00001-of-00002.safetensors"
S2 = "model-00002-of-00002.safetensors"
GOOD_MAP = {"a": S1, "b": S1, "c": S2}
INDEX = "model.safetensors.index.json"


def sharded_cases():
    """case -> {file name: bytes}."""
    shards = {S1: shard(["a", "b"]), S2: shard(["c"])}
    return {
        "sharded_missing_shard": {INDEX: index(GOOD_MAP), S1: shards[S1]},
        # ../valid.safetensors exists (in OUT_DIR): only the name rule stops it.
        "sharded_path_traversal": {
            INDEX: index({"w": "../valid.safetensors", "b": "../valid.safetensors",
                          "e": "../valid.safetensors", "i": "../valid.safetensors"}),
        },
        "sharded_tensor_missing": {INDEX: index(dict(GOOD_MAP, d=S2)), **shards},
        "sharded_unlisted_tensor": {INDEX: index({"a": S1, "c": S2}), **shards},
        "sharded_tensor_in_two": {
            INDEX: index(GOOD_MAP), S1: shards[S1], S2: shard(["c", "b"]),
        },
        "sharded_wrong_shard": {INDEX: index({"a": S1, "b": S2, "c": S2}), **shards},
        "sharded_duplicate_key": {
            INDEX: ('{"weight_map":{"a":"%s","b":"%s","c":"%s","a":"%s"}}'
                    % (S1, S1, S2, S2)).encode(),
            **shards,
        },
        "sharded_bad_index_json": {INDEX: b'{"weight_map":{"a":', **shards},
        "sharded_no_weight_map": {INDEX: b'{"metadata":{}}', **shards},
    }


def write(path, content):
    with open(path, "wb") as f:
        f.write(content)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "valid.safetensors"), valid_file())
    for name, content in single_cases().items():
        write(os.path.join(out, name + ".safetensors"), content)
        print(name)
    for name, files in sharded_cases().items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for file_name, content in files.items():
            write(os.path.join(d, file_name), content)
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
