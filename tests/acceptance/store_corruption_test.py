#!/usr/bin/env python3
"""Corruption: a flipped byte inside a stored chunk is found and never exported.

Three models with distinct data (tensors of about 1 MB, so their chunks live
in RocksDB blob files) are imported one by one: "clean" (single file),
"single" (single file) and "sharded" (3 shards). Each import flushes its own
blob file, so the newest two blob files hold the chunks of "single" and
"sharded". The test parses each blob file (header, records of key and value,
footer) and flips one byte in the middle of the value of its middle record,
remembering that record's chunk key. Then:
  - `pstore verify` exits 5; its --json report has problems for exactly the
    two corrupted chunk keys, each naming the model it belongs to, a tensor
    and a chunk index >= 0, and none for "clean"; the text report says CORRUPT
    with the model, tensor and chunk;
  - `pstore export` of either corrupted model exits 5 with a message naming
    the model, tensor, chunk and key ("model M tensor T chunk J (key K)", the
    same context verify's text report and the pager give), and leaves nothing
    at the target path (no file, no folder, no temporary file beside it);
  - `pstore warm` of either corrupted model (the pager's loads) exits 5 with
    the same context for the damaged chunk;
  - "clean" still exports byte-identical;
  - importing the damaged model's source again writes good copies over the
    damaged chunks: verify passes and the model exports byte-identical.
(Blob files are hard-linked into STORE/gen/*/, so the flip reaches the
published generation that readers open.)

Environment: PSTORE_BIN, MAKE_MODEL.
"""
import glob
import os
import re
import struct

from harness import EXIT_CORRUPT, Store, check, log, make_model, run_test, tree_sha256

BLOB_HEADER, BLOB_FOOTER, RECORD_HEADER = 30, 32, 32


def blob_records(path):
    """[(key bytes, value offset, value length)] of a RocksDB blob file, or a
    Failure when the layout does not parse exactly."""
    with open(path, "rb") as f:
        d = f.read()
    recs, off = [], BLOB_HEADER
    while off < len(d) - BLOB_FOOTER:
        check(off + RECORD_HEADER <= len(d), f"{path}: record header at {off} runs past the end")
        klen, vlen, _exp, _hcrc, _bcrc = struct.unpack_from("<QQQII", d, off)
        check(klen == 16, f"{path}: record at {off} has a key of {klen} bytes, not 16")
        key_at = off + RECORD_HEADER
        recs.append((d[key_at:key_at + 16], key_at + 16, vlen))
        off = key_at + 16 + vlen
    check(off == len(d) - BLOB_FOOTER,
          f"{path}: records end at {off}, the footer starts at {len(d) - BLOB_FOOTER}")
    return recs


def flip_middle_chunk(path):
    recs = blob_records(path)
    check(len(recs) >= 3, f"{path} holds only {len(recs)} chunks")
    key, voff, vlen = recs[len(recs) // 2]
    check(vlen > 4096, f"the middle chunk of {path} is only {vlen} bytes")
    at = voff + vlen // 2
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())
    log(f"flipped byte {at} of {os.path.basename(path)} ({os.path.getsize(path)} bytes), "
        f"inside chunk {key.hex()}")
    return key.hex()


def check_names_chunk(what, text, ref, key):
    """text names the damaged chunk as every reader does:
    "model REF tensor T chunk J (key KEY)"."""
    want = re.compile(r"model " + re.escape(ref) + r" tensor \S+ chunk \d+ \(key " + key + r"\)")
    check(want.search(text), f"{what} does not name model {ref}, a tensor and chunk {key}: {text!r}")


def check_failed_export(store, ref, target, key):
    parent = os.path.dirname(target)
    before = set(os.listdir(parent))
    r = store.run("export", ref, target)
    check(r.rc == EXIT_CORRUPT, f"export of corrupted {ref}: want exit {EXIT_CORRUPT}; " + r.describe())
    check_names_chunk(f"export of {ref}", r.err, ref, key)
    check(not os.path.lexists(target), f"failed export of {ref} left {target} behind")
    left = set(os.listdir(parent)) - before
    check(not left, f"failed export of {ref} left files beside the target: {sorted(left)}")
    log(f"export {ref}: exit {r.rc}: {r.err.strip()[:200]}")


def body(work):
    store = Store(os.path.join(work, "store"))
    out = os.path.join(work, "out")
    os.makedirs(out)
    srcs = {
        "clean:v1": make_model(os.path.join(work, "clean.safetensors"), 12, seed=31, tensors=12),
        "single:v1": make_model(os.path.join(work, "single.safetensors"), 12, seed=32, tensors=12),
        "sharded:v1": make_model(os.path.join(work, "sharded"), 12, seed=33, tensors=12, shards=3),
    }
    sums = {ref: tree_sha256(p) for ref, p in srcs.items()}
    blobs_before = set()
    blob_of = {}
    for ref, src in srcs.items():
        store.ok("import", src, ref)
        now = set(glob.glob(os.path.join(store.root, "db", "*.blob")))
        new = now - blobs_before
        check(len(new) == 1, f"import of {ref} added blob files {sorted(new)}, expected one")
        blob_of[ref] = new.pop()
        blobs_before = now
    store.verify_ok("before the damage")

    # The generations share the blob files (hard links): the flip reaches them.
    gen_links = os.stat(blob_of["single:v1"]).st_nlink
    check(gen_links >= 2, f"{blob_of['single:v1']} has {gen_links} links; expected it in a "
                          "generation too")
    bad_keys = {ref: flip_middle_chunk(blob_of[ref]) for ref in ("single:v1", "sharded:v1")}

    r = store.run("verify", json_out=True)
    check(r.rc == EXIT_CORRUPT, f"verify after the damage: want exit {EXIT_CORRUPT}; " + r.describe())
    rep = r.json()
    probs = rep.get("problems", [])
    check(rep.get("ok") is False and probs, f"verify --json reports no problem: {rep}")
    for p in probs:
        check(p.get("model") and p.get("tensor") and isinstance(p.get("chunk"), int)
              and p["chunk"] >= 0 and p.get("error"),
              f"problem lacks model, tensor, chunk or error: {p}")
        check(p["model"] != "clean:v1", f"verify blames the undamaged model: {p}")
    for ref, key in bad_keys.items():
        mine = [p for p in probs if p.get("chunk_key") == key]
        check(mine, f"verify does not report the damaged chunk {key} of {ref}: {probs}")
        check(all(p["model"] == ref for p in mine),
              f"damaged chunk {key} is {ref}'s, but verify names {[p['model'] for p in mine]}")
    check({p["chunk_key"] for p in probs} == set(bad_keys.values()),
          f"verify reports chunks that were not damaged: {probs}")
    log(f"verify --json: {[(p['model'], p['tensor'], p['chunk']) for p in probs]}")

    r = store.run("verify")
    check(r.rc == EXIT_CORRUPT, "verify (text) after the damage: " + r.describe())
    for p in probs:
        want = (f"CORRUPT model {p['model']} tensor {p['tensor']} chunk {p['chunk']} "
                f"(key {p['chunk_key']}): ")
        check(want in r.out, f"verify's text report lacks {want!r}: {r.out!r}")
    for ref, key in bad_keys.items():
        check_names_chunk("verify's text report", r.out, ref, key)

    check_failed_export(store, "single:v1", os.path.join(out, "single.safetensors"),
                        bad_keys["single:v1"])
    check_failed_export(store, "sharded:v1", os.path.join(out, "sharded"), bad_keys["sharded:v1"])

    # The pager's loads (warm) find the damage and name it the same way; the
    # undamaged model still loads.
    for ref, key in bad_keys.items():
        r = store.run("warm", ref)
        check(r.rc == EXIT_CORRUPT, f"warm of corrupted {ref}: want exit {EXIT_CORRUPT}; " + r.describe())
        check_names_chunk(f"warm of {ref}", r.err, ref, key)
        log(f"warm {ref}: exit {r.rc}: {r.err.strip()[:200]}")
    store.ok("warm", "clean:v1")
    store.export_matches("clean:v1", sums["clean:v1"], out)

    # Re-importing the source repairs the damaged chunks.
    for ref in bad_keys:
        name = ref.split(":")[0]
        r = store.ok("import", srcs[ref], f"{name}:repaired", json_out=True).json()
        check(r["new_chunks"] >= 1, f"re-import of {ref} wrote no chunk over the damaged one: {r}")
    store.verify_ok("after re-importing the damaged models")
    for ref in srcs:
        store.export_matches(ref, sums[ref], out)
    check(not re.search(r"\S", " ".join(os.listdir(out))), f"exports left {os.listdir(out)}")


if __name__ == "__main__":
    run_test("store_corruption", body)
