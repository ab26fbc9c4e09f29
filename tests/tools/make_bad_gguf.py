#!/usr/bin/env python3
"""Writes malformed GGUF files, one per rule pstore's GGUF reader enforces, and
valid.gguf (the well-formed file they are variations of), into OUT_DIR; prints
each malformed case's name (OUT_DIR/NAME.gguf, or OUT_DIR/NAME/ for a split
model whose first split is OUT_DIR/NAME/m-00001-of-0000N.gguf).

    make_bad_gguf.py OUT_DIR

Test equipment: GGUF version 3 as ggml's docs/gguf.md describes it, Python 3
standard library only.
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
F32_T, F16_T, Q4_0_T, Q8_0_T = 0, 1, 2, 8


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return s(key) + struct.pack("<I", vtype) + payload


def u32v(v):
    return struct.pack("<I", v)


def tinfo(name, dims, ggml_type, offset):
    return (s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IQ", ggml_type, offset))


def pad(b, align, byte=b"\0"):
    return b + byte * ((-len(b)) % align)


def gguf(kvs, infos, data, version=3, align=32, n_tensors=None, n_kv=None, magic=b"GGUF",
         header_pad=True):
    head = magic + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(infos)
    if header_pad:
        head = pad(head, align)
    return head + data


def base_kvs():
    return [kv("general.architecture", STRING, s("llama")),
            kv("llama.context_length", U32, u32v(4096)),
            kv("general.file_type", U32, u32v(7))]


def q8_block(seed):
    return struct.pack("<e", 0.01 * (seed + 1)) + bytes((seed * 7 + j) % 256 for j in range(32))


def valid_parts():
    """Three tensors: an F32 norm, a Q8_0 matrix and an F16 vector, 32-aligned."""
    norm = struct.pack("<8f", *[1.0 + i for i in range(8)])           # 32 bytes
    q8 = b"".join(q8_block(i) for i in range(4))                       # 2x64 -> 4 blocks, 136 B
    f16 = struct.pack("<16e", *[0.5 * i for i in range(16)])            # 32 bytes
    infos = [tinfo("norm.weight", [8], F32_T, 0),
             tinfo("blk.0.w", [64, 2], Q8_0_T, 32),
             tinfo("out.bias", [16], F16_T, 192)]
    data = pad(norm, 32) + pad(q8, 32) + pad(f16, 32)
    return infos, data


def cases():
    infos, data = valid_parts()
    kvs = base_kvs()
    c = {}
    c["bad_magic"] = gguf(kvs, infos, data, magic=b"GGUG")
    c["version_1"] = gguf(kvs, infos, data, version=1)
    c["version_99"] = gguf(kvs, infos, data, version=99)
    c["big_endian"] = gguf(kvs, infos, data, version=3 << 24)
    c["truncated_header"] = gguf(kvs, infos, data)[:20]
    c["tensor_count_huge"] = gguf(kvs, infos, data, n_tensors=1 << 62)
    c["kv_count_huge"] = gguf(kvs, infos, data, n_kv=(1 << 64) - 1)
    c["kv_count_too_many"] = gguf(kvs, infos, data, n_kv=len(kvs) + 1)
    c["key_longer_than_file"] = gguf([struct.pack("<Q", 1 << 40) + b"general"] + kvs, infos, data)
    c["string_value_longer_than_file"] = gguf(
        kvs + [kv("general.name", STRING, struct.pack("<Q", 10 ** 9) + b"abc")], infos, data)
    c["unknown_value_type"] = gguf(kvs + [kv("x.y", 13, u32v(1))], infos, data)
    c["array_count_overflows"] = gguf(
        kvs + [kv("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", F32, (1 << 62) + 1))],
        infos, data)
    c["array_longer_than_file"] = gguf(
        kvs + [kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 10 ** 6))],
        infos, data)
    nested = struct.pack("<IQ", U8, 1) + b"\x01"
    for _ in range(6):
        nested = struct.pack("<IQ", ARRAY, 1) + nested
    c["arrays_nested_too_deep"] = gguf(kvs + [kv("x.nested", ARRAY, nested)], infos, data)
    c["bad_bool"] = gguf(kvs + [kv("x.flag", BOOL, b"\x02")], infos, data)
    c["duplicate_key"] = gguf(kvs + [kv("llama.context_length", U32, u32v(8))], infos, data)
    c["empty_key"] = gguf(kvs + [kv("", U32, u32v(8))], infos, data)
    c["alignment_wrong_type"] = gguf(
        kvs + [kv("general.alignment", U64, struct.pack("<Q", 32))], infos, data)
    c["alignment_not_power_of_two"] = gguf(
        kvs + [kv("general.alignment", U32, u32v(48))], infos, data, align=48)
    c["alignment_zero"] = gguf(kvs + [kv("general.alignment", U32, u32v(0))], infos, data)
    # Aligned to 32 but the file says 64: the Q8_0 tensor's offset 32 is not a multiple.
    c["offset_not_aligned"] = gguf(
        kvs + [kv("general.alignment", U32, u32v(64))], infos, data, align=64)
    bad = list(infos)
    bad[1] = tinfo("blk.0.w", [64, 2], Q8_0_T, 48)
    c["offset_not_multiple_of_32"] = gguf(kvs, bad, data)
    bad = list(infos)
    bad[2] = tinfo("out.bias", [16], F16_T, 160)
    c["tensors_overlap"] = gguf(kvs, bad, data)
    bad = list(infos)
    bad[2] = tinfo("out.bias", [16], F16_T, 4096)
    c["offset_past_end"] = gguf(kvs, bad, data)
    c["last_tensor_past_end"] = gguf(kvs, infos, data[:-20])
    bad = list(infos)
    bad[0] = tinfo("norm.weight", [8, 1, 1, 1, 1], F32_T, 0)
    c["five_dimensions"] = gguf(kvs, bad, data)
    bad = list(infos)
    bad[0] = tinfo("norm.weight", [1 << 32, 1 << 32], F32_T, 0)
    c["element_count_overflows"] = gguf(kvs, bad, data)
    bad = list(infos)
    bad[0] = tinfo("norm.weight", [1 << 63, 1], F32_T, 0)
    c["dimension_over_2_63"] = gguf(kvs, bad, data)
    bad = list(infos)
    bad[1] = tinfo("blk.0.w", [48, 2], Q8_0_T, 32)
    c["not_whole_blocks"] = gguf(kvs, bad, data)
    bad = list(infos)
    bad[2] = tinfo("norm.weight", [16], F16_T, 192)
    c["duplicate_tensor_name"] = gguf(kvs, bad, data)
    bad = list(infos)
    bad[2] = tinfo("", [16], F16_T, 192)
    c["empty_tensor_name"] = gguf(kvs, bad, data)
    bad = list(infos)
    bad[2] = tinfo("out.bias", [16], 200, 32)  # unknown type sharing an offset
    c["unknown_type_shares_offset"] = gguf(kvs, bad, data)
    c["tensor_infos_truncated"] = gguf(kvs, infos, b"", header_pad=False)[:-10]
    c["header_padding_past_end"] = gguf(kvs, infos, b"", header_pad=False)
    # A split model whose second split is missing, and one whose split.no is wrong.
    return c


def split_file(i, n, infos, data, no=None):
    kvs = base_kvs() if i == 0 else []
    kvs += [kv("split.no", U16, struct.pack("<H", i if no is None else no)),
            kv("split.count", U16, struct.pack("<H", n)),
            kv("split.tensors.count", I32, struct.pack("<i", 3))]
    return gguf(kvs, infos, data)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    infos, data = valid_parts()
    with open(os.path.join(out, "valid.gguf"), "wb") as f:
        f.write(gguf(base_kvs(), infos, data))
    names = []
    for name, blob in cases().items():
        with open(os.path.join(out, name + ".gguf"), "wb") as f:
            f.write(blob)
        names.append(name)
    # Split models, as folders.
    norm = data[:32]
    for name, files in {
        "split_missing": {"m-00001-of-00002.gguf": split_file(
            0, 2, [tinfo("norm.weight", [8], F32_T, 0)], norm)},
        "split_wrong_number": {
            "m-00001-of-00002.gguf": split_file(0, 2, [tinfo("norm.weight", [8], F32_T, 0)], norm),
            "m-00002-of-00002.gguf": split_file(1, 2, [tinfo("x.weight", [8], F32_T, 0)], norm,
                                                no=0)},
        "split_same_tensor_twice": {
            "m-00001-of-00002.gguf": split_file(0, 2, [tinfo("norm.weight", [8], F32_T, 0)], norm),
            "m-00002-of-00002.gguf": split_file(1, 2, [tinfo("norm.weight", [8], F32_T, 0)], norm)},
    }.items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for fn, blob in files.items():
            with open(os.path.join(d, fn), "wb") as f:
                f.write(blob)
        names.append(name)
    print("\n".join(names))


if __name__ == "__main__":
    main()
