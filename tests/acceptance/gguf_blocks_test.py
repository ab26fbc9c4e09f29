#!/usr/bin/env python3
"""GGUF chunks on block boundaries.

Q8_0, Q4_0 and Q6_K tensors bigger than a chunk, imported at the default
chunk size (256 KiB):
  - `info --json` gives each tensor's chunk length: for the quantized ones
    the largest multiple of lcm(block bytes, 4096) not above the chunk size
    (or that lcm, when above it and at most 1 MiB), so every chunk but the
    last is a whole number of blocks and of pages; the chunk counts follow;
    F16/F32 tensors keep the store's chunk size;
  - export is byte-identical, the C API serves every tensor as the file
    holds it, `verify` passes;
  - a model put in the store as pstore wrote it before (manifest version 2,
    chunks every chunk_size bytes, mid-block: tests/tools/old_gguf_model)
    still opens, serves, verifies and exports byte-identical, beside the new
    model of the same file;
  - a byte flipped in a stored chunk of the quantized model is reported by
    `verify` (exit 5).

Environment: PSTORE_BIN, MAKE_MODEL, GGUF_WRITER, GGUF_API_CHECK, OLD_GGUF_MODEL.
"""
import glob
import math
import os

from gguf_c_api_test import read_gguf
from harness import Store, check, env_path, log, make_model, run_cmd, run_test, tree_sha256
from store_corruption_test import EXIT_CORRUPT, flip_middle_chunk

BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q6_K": 210}
CHUNK = 256 << 10


def chunk_length(block):
    lcm = block * 4096 // math.gcd(block, 4096)
    if lcm <= CHUNK:
        return CHUNK // lcm * lcm
    return lcm if lcm <= (1 << 20) else CHUNK


def write_gguf(out, src, *opts):
    p = run_cmd([env_path("GGUF_WRITER"), out, src] + list(opts), timeout=300)
    check(p.returncode == 0, f"gguf_writer: {p.stderr}")
    return out


# Bytes and elements per block of the GGML types the tests write.
TYPE_BLOCKS = {0: (4, 1), 1: (2, 1), 2: (18, 32), 8: (34, 32), 14: (210, 256), 24: (1, 1),
               25: (2, 1), 26: (4, 1)}


def served_as_in_file(store, ref, path, work, check_shared=False):
    """Every tensor the C API acquires from ref, and copies out of it (decoded from the
    store, and from shared memory), is the file's payload, whole: its size from its
    type and shape."""
    elements = {}
    tensors, _ = read_gguf(path, elements)
    dump = os.path.join(work, ref.replace("/", "_").replace(":", "_") +
                        ("-checked" if check_shared else "") + "-dump")
    os.makedirs(dump)
    cmd = [env_path("GGUF_API_CHECK"), store.root, ref, dump] + (["check"] if check_shared else [])
    r = run_cmd(cmd, timeout=300)
    check(r.returncode == 0, f"gguf_api_check on {ref}: {r.stderr}")
    seen = set()
    for line in r.stdout.splitlines()[1:]:
        i, gtype, nbytes, name = line.split("\t", 3)
        gtype, payload = int(gtype), tensors[name][1]
        if gtype in TYPE_BLOCKS:
            block_bytes, block_elems = TYPE_BLOCKS[gtype]
            size = elements[name] // block_elems * block_bytes
        else:
            size = int(nbytes)  # the rest of the file, for a type pstore does not know
        check(int(nbytes) == size, f"{ref}/{name}: {nbytes} bytes, the file has {size}")
        for what in ("bin", "copy.bin"):
            got = open(os.path.join(dump, f"{i}.{what}"), "rb").read()
            check(got == payload[:size],
                  f"{ref}/{name}: the {'copied' if 'copy' in what else 'acquired'} bytes "
                  f"({len(got)}) are not the file's ({size})")
        seen.add(name)
    check(seen == set(tensors), f"{ref}: {len(seen)} tensors served, {len(tensors)} in the file")
    return len(seen)


def check_chunks(info, ref):
    """Each tensor's chunk length and count, from info --json."""
    by_type = {}
    for t in info["tensors"]:
        ty, raw, n, length = t["ggml_type_name"], t["raw_bytes"], t["chunks"], t["chunk_length"]
        block = BLOCK_BYTES.get(ty)
        want = chunk_length(block) if block else CHUNK
        check(length == want, f"{ref}/{t['name']} ({ty}): chunk length {length}, want {want}")
        check(n == math.ceil(raw / length), f"{ref}/{t['name']}: {n} chunks of {length} for {raw}")
        if block:
            check(length % block == 0 and length % 4096 == 0,
                  f"{ref}/{t['name']}: chunk length {length} is not whole blocks and pages")
        by_type.setdefault(ty, []).append(n)
    return by_type


def body(work):
    store = Store(os.path.join(work, "store"))
    src = make_model(os.path.join(work, "m.safetensors"), 24, seed=3, tensors=6, dtype="F16")
    cases = {
        "q8": ["--type", "q8_0", "--q6k-blocks", "3000"],
        "q4": ["--type", "q4_0", "--alignment", "64"],
    }
    paths = {}
    for name, opts in cases.items():
        path = paths[name] = write_gguf(os.path.join(work, name + ".gguf"), src, *opts)
        ref = f"b/{name}:v1"
        store.ok("import", path, ref)
        by_type = check_chunks(store.info(ref), ref)
        quant = {t: n for t, n in by_type.items() if t in BLOCK_BYTES}
        check(quant and all(max(n) >= 2 for n in quant.values()),
              f"{ref}: no quantized tensor bigger than a chunk: {by_type}")
        store.export_matches(ref, tree_sha256(path), work)
        n = served_as_in_file(store, ref, path, work)
        served_as_in_file(store, ref, path, work, check_shared=True)
        log(f"{ref}: chunks on blocks ({ {t: max(v) for t, v in quant.items()} } at most), "
            f"export byte-identical, {n} tensors served as in the file")
    check("Q6_K" in {t["ggml_type_name"] for t in store.info("b/q8:v1")["tensors"]},
          "the Q6_K tensor is missing")

    # A model as pstore wrote it before: manifest version 2, mid-block chunks.
    p = run_cmd([env_path("OLD_GGUF_MODEL"), store.root, paths["q8"], "b/old:v1"], timeout=300)
    check(p.returncode == 0, f"old_gguf_model: {p.stderr}")
    old = store.info("b/old:v1")
    check(old["digest"] == p.stdout.strip(), f"b/old:v1 is not the old manifest: {old['digest']}")
    check(all(t["chunk_length"] == CHUNK for t in old["tensors"]),
          "the old model's tensors are not cut at the chunk size")
    store.export_matches("b/old:v1", tree_sha256(paths["q8"]), work)
    n = served_as_in_file(store, "b/old:v1", paths["q8"], work)
    store.verify_ok("with the old model")
    log(f"a version 2 model: opens, {n} tensors served, verified, exported byte-identical")

    # A GGUF file without quantized tensors is written as before (manifest
    # version 2): importing it gives the model old_gguf_model writes as
    # pstore did before chunk lengths, digest for digest.
    f16 = write_gguf(os.path.join(work, "f16.gguf"), src, "--type", "keep")
    p = run_cmd([env_path("OLD_GGUF_MODEL"), store.root, f16, "b/oldf16:v1"], timeout=300)
    check(p.returncode == 0, f"old_gguf_model: {p.stderr}")
    store.ok("import", f16, "b/f16:v1")
    got = store.info("b/f16:v1")["digest"]
    check(got == p.stdout.strip(),
          f"an F16 GGUF model's digest changed: {got}, written before as {p.stdout.strip()}")
    log("an F16 GGUF model: the same manifest (version 2) and digest as before")

    # A byte flipped in one of the quantized model's chunks.
    damaged = Store(os.path.join(work, "damaged"))
    damaged.ok("import", paths["q4"], "d/q4:v1")
    damaged.verify_ok("before the damage")
    blobs = sorted(glob.glob(os.path.join(damaged.root, "db", "*.blob")), key=os.path.getmtime)
    check(blobs, "no blob file in the store")
    key = flip_middle_chunk(blobs[-1])
    r = damaged.run("verify", json_out=True)
    check(r.rc == EXIT_CORRUPT, f"verify after a flipped byte: exit {r.rc}; " + r.describe())
    probs = r.json().get("problems", [])
    check(any(key in str(pr) for pr in probs), f"verify does not name chunk {key}: {probs}")
    log(f"verify reports the flipped chunk {key}")


if __name__ == "__main__":
    run_test("gguf_blocks", body)
