#!/usr/bin/env python3
"""Writes one safetensors file holding every tensor of a folder of safetensors
files (names prefixed with the file's name), so benchmarks can use a single
real-weights model of the corpus's whole size.

Usage: corpus_combine.py SRC_DIR OUT.safetensors   (standard library only)
"""
import json
import os
import struct
import sys


def main():
    src, out = sys.argv[1], sys.argv[2]
    header, parts, offset = {}, [], 0
    for name in sorted(os.listdir(src)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(src, name), "rb") as f:
            data = f.read()
        n = struct.unpack("<Q", data[:8])[0]
        h = json.loads(data[8:8 + n])
        base = 8 + n
        model = name[: -len(".safetensors")]
        entries = sorted(((k, v) for k, v in h.items() if k != "__metadata__"),
                         key=lambda kv: kv[1]["data_offsets"][0])
        for k, v in entries:
            a, b = v["data_offsets"]
            header[f"{model}/{k}"] = {"dtype": v["dtype"], "shape": v["shape"],
                                      "data_offsets": [offset, offset + b - a]}
            parts.append(data[base + a:base + b])
            offset += b - a
    header["__metadata__"] = {"source": os.path.basename(os.path.abspath(src)),
                              "format": "combined"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for p in parts:
            f.write(p)
    print(f"{out}: {len(header) - 1} tensors, {offset} bytes of tensor data")


if __name__ == "__main__":
    main()
