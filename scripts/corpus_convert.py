#!/usr/bin/env python3
"""Turns the TensorFlow.js models of an unpacked npm package into safetensors.

Usage: corpus_convert.py PACKAGE_DIR DEST

For every JSON file under PACKAGE_DIR that has a "weightsManifest" (a TF.js
graph or layers model), writes DEST/f/<name>.safetensors holding its weights
with the bytes exactly as the package stores them: a weight quantized to
float16 or uint8 is written as F16 or U8 (the stored values, not dequantized),
others in their own dtype. Then, for every such file with float32 tensors,
writes DEST/bf16/<name>.safetensors holding those tensors rounded to bfloat16
(round to nearest, ties to even; NaN stays a quiet NaN), the other tensors
left out. Prints one line per file written. Python 3 standard library only.
"""
import json
import os
import struct
import sys
from array import array

# dtype as stored in a TF.js weight file -> (safetensors dtype, bytes per element)
DTYPES = {
    "float32": ("F32", 4),
    "int32": ("I32", 4),
    "float16": ("F16", 2),
    "uint8": ("U8", 1),
    "uint16": ("U16", 2),
    "int8": ("I8", 1),
    "bool": ("BOOL", 1),
}


def safetensors_bytes(tensors, metadata):
    """tensors: [(name, dtype, shape, bytes)] in data order."""
    header, offset = {"__metadata__": metadata}, 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def read_tfjs(model_json):
    with open(model_json, encoding="utf-8") as f:
        model = json.load(f)
    groups = model.get("weightsManifest") if isinstance(model, dict) else None
    if not groups:
        return None
    folder = os.path.dirname(model_json)
    tensors, seen = [], set()
    for group in groups:
        blob = b""
        for p in group["paths"]:
            with open(os.path.join(folder, p), "rb") as f:
                blob += f.read()
        pos = 0
        for w in group["weights"]:
            stored = (w.get("quantization") or {}).get("dtype") or w["dtype"]
            if stored not in DTYPES:
                raise SystemExit(f"{model_json}: weight {w['name']} has dtype {stored}, "
                                 "which this converter does not know")
            dtype, size = DTYPES[stored]
            count = 1
            for d in w["shape"]:
                count *= d
            data = blob[pos:pos + count * size]
            if len(data) != count * size:
                raise SystemExit(f"{model_json}: weight {w['name']} runs past its files' end")
            pos += count * size
            name, k = w["name"], 1
            while name in seen:  # keep every weight even if a name repeats
                name, k = f"{w['name']}.{k}", k + 1
            seen.add(name)
            tensors.append((name, dtype, list(w["shape"]), data))
        if pos != len(blob):
            raise SystemExit(f"{model_json}: {len(blob) - pos} bytes of its weight files belong "
                             "to no weight")
    return tensors


def to_bf16(f32):
    words = array("I")
    words.frombytes(f32)
    if sys.byteorder == "big":
        words.byteswap()
    out = array("H", [
        ((w >> 16) | 0x40) if (w & 0x7F800000) == 0x7F800000 and (w & 0x7FFFFF)
        else ((w + 0x7FFF + ((w >> 16) & 1)) >> 16) & 0xFFFF
        for w in words])
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    package, dest = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.join(dest, "f"), exist_ok=True)
    os.makedirs(os.path.join(dest, "bf16"), exist_ok=True)
    found = []
    for dirpath, _, files in os.walk(package):
        found += [os.path.join(dirpath, n) for n in files if n.endswith(".json")]
    written = 0
    for path in sorted(found):
        tensors = read_tfjs(path)
        if not tensors:
            continue
        name = os.path.relpath(path, package)[:-len(".json")].replace(os.sep, "-")
        if name.startswith("models-"):
            name = name[len("models-"):]
        meta = {"source": os.path.relpath(path, package), "converter": "pstore corpus_convert"}
        out = os.path.join(dest, "f", name + ".safetensors")
        with open(out, "wb") as f:
            f.write(safetensors_bytes(tensors, meta))
        print(out)
        written += 1
        f32 = [(n, "BF16", s, to_bf16(d)) for n, dt, s, d in tensors if dt == "F32" and d]
        if f32:
            out = os.path.join(dest, "bf16", name + ".safetensors")
            with open(out, "wb") as f:
                f.write(safetensors_bytes(f32, dict(meta, dtype="bf16 from f32")))
            print(out)
    if written == 0:
        raise SystemExit(f"no TF.js model found under {package}")


if __name__ == "__main__":
    main()
