#!/usr/bin/env python3
"""The C API serves GGUF tensors: each acquired tensor's bytes are the file's
payload at its offset, its pointer is aligned to general.alignment, its GGML
type is the file's, and the metadata calls answer (tests/gguf_api_check.c, a
C99 program, does the calls; this script reads the GGUF files itself).

Cases: Q8_0 at the default alignment 32, Q4_0 at 64 with non-zero padding and
a tensor of an unknown GGML type, F16 at 8192 (over a page) and a split model
at alignment 1.

Environment: PSTORE_BIN, MAKE_MODEL, GGUF_WRITER, GGUF_API_CHECK.
"""
import os
import struct

from harness import Store, check, env_path, log, make_model, run_cmd, run_test

SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def read_gguf(path, elements=None):
    """{name: (ggml_type, bytes from its offset)} and the alignment, by ggml's docs/gguf.md;
    each tensor's element count into `elements` when given."""
    data = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        pos += n
        return data[pos - n:pos]

    def value(t):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        fmt = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q",
               12: "d"}[t]
        return take(fmt)

    check(data[:4] == b"GGUF", f"{path} is not GGUF")
    pos = 8
    nt, nkv = take("Q"), take("Q")
    align = 32
    for _ in range(nkv):
        key = string().decode()
        v = value(take("I"))
        if key == "general.alignment":
            align = v
    infos = []
    for _ in range(nt):
        name = string().decode()
        nd = take("I")
        count = 1
        for _ in range(nd):
            count *= take("Q")
        if elements is not None:
            elements[name] = count
        infos.append((name, take("I"), take("Q")))
    start = (pos + align - 1) // align * align
    return {name: (t, data[start + off:]) for name, t, off in infos}, align


def body(work):
    src = make_model(os.path.join(work, "m.safetensors"), 4, seed=9, tensors=20, dtype="mixed")
    store = Store(os.path.join(work, "store"))
    writer, checker = env_path("GGUF_WRITER"), env_path("GGUF_API_CHECK")
    cases = {
        "q8": ["--type", "q8_0"],
        "q4": ["--type", "q4_0", "--alignment", "64", "--pad-byte", "9", "--unknown-type", "300"],
        "f16": ["--type", "f16", "--alignment", "8192"],
        "split": ["--type", "q8_0", "--alignment", "1", "--split", "2"],
    }
    for name, opts in cases.items():
        out = os.path.join(work, name, "m.gguf")
        os.makedirs(os.path.dirname(out))
        p = run_cmd([writer, out, src] + opts, timeout=300)
        check(p.returncode == 0, f"gguf_writer: {p.stderr}")
        files = p.stdout.split()
        store.ok("import", files[0], f"c/{name}:v1")
        tensors, align = {}, None
        for f in files:
            t, align = read_gguf(f)
            tensors.update(t)
        dump = os.path.join(work, name + "-dump")
        os.makedirs(dump)
        r = run_cmd([checker, store.root, f"c/{name}:v1", dump], timeout=300)
        check(r.returncode == 0, f"gguf_api_check on {name}: {r.stderr}")
        lines = r.stdout.splitlines()
        check(lines[0] == f"alignment\t{align}", f"{name}: {lines[0]} but the file says {align}")
        seen = set()
        for line in lines[1:]:
            i, gtype, nbytes, tname = line.split("\t", 3)
            want_type, tail = tensors[tname]
            check(int(gtype) == want_type, f"{name}/{tname}: GGML type {gtype}, file {want_type}")
            got = open(os.path.join(dump, i + ".bin"), "rb").read()
            check(len(got) == int(nbytes) and got == tail[:len(got)],
                  f"{name}/{tname}: the acquired bytes are not the file's")
            seen.add(tname)
        check(seen == set(tensors), f"{name}: tensors served {len(seen)}, in the file {len(tensors)}")
        log(f"{name}: {len(seen)} tensors served aligned to {align}, bytes as in the file")


if __name__ == "__main__":
    run_test("gguf_c_api", body)
