#!/usr/bin/env python3
"""Dedup: identical chunks are stored once across models and versions.

  - The same file imported under a second tag adds under 1% to stat's
    stored_bytes and disk_bytes (and no chunk).
  - The same tensors as a sharded model (3 shards) add under 1% too.
  - A copy in which 10% of the tensors changed (make_model --change 0.1) adds
    about the compressed size of those tensors alone: the changed tensors are
    found by comparing the two source files tensor by tensor (not by asking
    the store), their stored size is read from `pstore info --json` of the
    new model, and the growth of stored_bytes must be within 10% of it; the
    import's own report (new_stored_bytes) must agree with stat's growth, and
    the disk must grow by no more than that plus 1 MB.
  - Removing the copies and compacting gives back exactly the first model's
    chunks; removing the first model too, keeping only the changed copy,
    and compacting brings the disk down to that copy's stored size (the blob
    file that mixes its chunks with dead ones is rewritten).

Environment: PSTORE_BIN, MAKE_MODEL.
"""
import json
import os
import struct

from harness import Store, check, log, make_model, run_test, tree_sha256

MB = 64


def tensor_bytes(path):
    """{tensor name: its bytes} of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack_from("<Q", data, 0)[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    return {k: data[base + v["data_offsets"][0]:base + v["data_offsets"][1]]
            for k, v in header.items() if k != "__metadata__"}


def growth(before, after, key):
    return after[key] - before[key]


def body(work):
    store = Store(os.path.join(work, "store"))
    a = make_model(os.path.join(work, "a.safetensors"), MB, seed=51, tensors=40, dtype="mixed")
    store.ok("import", a, "llm:v1")
    s1 = store.stat()
    log(f"llm:v1: {s1['chunks']} chunks, {s1['stored_bytes']} stored, {s1['disk_bytes']} on disk")

    # The same file under a second tag.
    r = store.ok("import", a, "llm:v1-again", json_out=True).json()
    s2 = store.stat()
    log(f"same file again: stored +{growth(s1, s2, 'stored_bytes')}, disk "
        f"+{growth(s1, s2, 'disk_bytes')}, chunks +{growth(s1, s2, 'chunks')}")
    check(r["new_chunks"] == 0 and r["new_stored_bytes"] == 0,
          f"importing the same file again wrote chunks: {r}")
    check(growth(s1, s2, "stored_bytes") < 0.01 * s1["stored_bytes"],
          f"the same file again grew stored_bytes by {growth(s1, s2, 'stored_bytes')}")
    check(growth(s1, s2, "disk_bytes") < 0.01 * s1["disk_bytes"],
          f"the same file again grew disk_bytes by {growth(s1, s2, 'disk_bytes')} "
          f"(of {s1['disk_bytes']})")
    check(s2["logical_bytes"] == 2 * s1["logical_bytes"] and s2["dedup_ratio"] > 1.99,
          f"logical bytes or dedup ratio wrong after a second name: {s2}")

    # The same tensors as a sharded model.
    sh = make_model(os.path.join(work, "a-sharded"), MB, seed=51, tensors=40, dtype="mixed",
                    shards=3)
    store.ok("import", sh, "llm-sharded:v1")
    s3 = store.stat()
    log(f"same tensors sharded: stored +{growth(s2, s3, 'stored_bytes')}, disk "
        f"+{growth(s2, s3, 'disk_bytes')}")
    check(growth(s2, s3, "stored_bytes") < 0.01 * s1["stored_bytes"],
          f"the sharded copy grew stored_bytes by {growth(s2, s3, 'stored_bytes')}")
    check(growth(s2, s3, "disk_bytes") < 0.01 * s1["disk_bytes"],
          f"the sharded copy grew disk_bytes by {growth(s2, s3, 'disk_bytes')}")

    # A copy with 10% of its tensors changed.
    b = make_model(os.path.join(work, "b.safetensors"), MB, seed=51, tensors=40, dtype="mixed",
                   change=0.1, change_seed=7)
    ta, tb = tensor_bytes(a), tensor_bytes(b)
    check(sorted(ta) == sorted(tb), "the changed copy has other tensor names")
    changed = sorted(k for k in ta if ta[k] != tb[k])
    check(len(changed) == 4, f"expected 4 of 40 tensors changed, found {changed}")
    r = store.ok("import", b, "llm:v2", json_out=True).json()
    s4 = store.stat()
    info = {t["name"]: t for t in store.info("llm:v2")["tensors"]}
    expected = sum(info[k]["stored_bytes"] for k in changed)
    grew = growth(s3, s4, "stored_bytes")
    log(f"10% changed ({', '.join(changed)}): stored +{grew}, those tensors take {expected} "
        f"stored ({sum(len(tb[k]) for k in changed)} raw); disk +{growth(s3, s4, 'disk_bytes')}")
    check(abs(grew - expected) <= 0.1 * expected,
          f"stored_bytes grew by {grew}, the changed tensors take {expected}: more than 10% apart")
    check(r["new_stored_bytes"] == grew,
          f"import reports {r['new_stored_bytes']} new stored bytes, stat's growth is {grew}")
    unchanged = [t for k, t in info.items() if k not in changed]
    check(all(t["shared_chunks"] == t["chunks"] for t in unchanged),
          "info says some unchanged tensor's chunks are not shared with llm:v1")
    check(all(info[k]["shared_chunks"] == 0 for k in changed),
          "info says a changed tensor's chunks are shared")
    check(growth(s3, s4, "disk_bytes") <= grew + (1 << 20),
          f"disk grew by {growth(s3, s4, 'disk_bytes')} for {grew} new stored bytes")

    for ref, src in (("llm:v1", a), ("llm:v1-again", a), ("llm-sharded:v1", sh), ("llm:v2", b)):
        store.export_matches(ref, tree_sha256(src), work)
    store.verify_ok()

    # Removing the copies and compacting leaves llm:v1's chunks exactly.
    store.ok("rm", "llm:v1-again", "llm-sharded:v1", "llm:v2")
    c = store.ok("compact", json_out=True).json()
    s5 = store.stat()
    check((s5["chunks"], s5["stored_bytes"]) == (s1["chunks"], s1["stored_bytes"]),
          f"after removing the copies: {s5}, want the chunks of llm:v1 alone: {s1}")
    check(c["stored_bytes_removed"] == grew,
          f"compact removed {c['stored_bytes_removed']} stored bytes, the changed copy added {grew}")
    store.export_matches("llm:v1", tree_sha256(a), work)

    # Keeping only the changed copy: llm:v1's blob file now mixes 90% live
    # chunks (llm:v2's) with dead ones, and compact must rewrite it to give
    # the dead ones' space back.
    store.ok("import", b, "llm:v2")
    store.ok("rm", "llm:v1")
    c = store.ok("compact", json_out=True).json()
    s6 = store.stat()
    v2 = store.info("llm:v2")
    log(f"only llm:v2 left: {s6['stored_bytes']} stored, {s6['disk_bytes']} on disk "
        f"(compact: {c['disk_before']} -> {c['disk_after']})")
    check(s6["stored_bytes"] == v2["stored_bytes"] and s6["chunks"] == v2["unique_chunks"],
          f"after removing llm:v1 the store holds other chunks than llm:v2's: {s6}, {v2}")
    check(s6["disk_bytes"] <= 1.05 * s6["stored_bytes"] + (1 << 20),
          f"the store takes {s6['disk_bytes']} bytes on disk for {s6['stored_bytes']} stored: "
          "compact left the dead chunks of a blob file shared with live ones")
    store.export_matches("llm:v2", tree_sha256(b), work)
    store.verify_ok("after compacting a blob file shared by live and dead chunks")


if __name__ == "__main__":
    run_test("store_dedup", body)
