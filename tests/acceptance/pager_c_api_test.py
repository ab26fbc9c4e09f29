#!/usr/bin/env python3
"""A C program (tests/c_api_check.c, compiled as C) opens a model through the
C API, acquires every tensor and finds the same bytes as the source file:
for a model of every dtype, and for each model of a sharded set's source."""

import os
from harness import Store, at_exit, check, env_path, log, make_model, run_cmd, run_test
from pager_harness import drop_segments


def run_c(store, ref, src):
    p = run_cmd([env_path("C_API_CHECK"), store.root, ref, src], timeout=600)
    check(p.returncode == 0, f"c_api_check {ref} failed ({p.returncode}): {p.stdout} {p.stderr[-1500:]}")
    log(p.stdout.strip())


def body(work):
    store = Store(os.path.join(work, "store"))
    at_exit(lambda: drop_segments(store))
    for dtype in ["F16", "BF16", "F32", "U8", "mixed"]:
        src = make_model(os.path.join(work, f"{dtype}.safetensors"), mb=12, seed=7,
                         tensors=40, dtype=dtype)
        store.ok("import", src, f"m-{dtype.lower()}:1")
        run_c(store, f"m-{dtype.lower()}:1", src)
        run_c(store, f"m-{dtype.lower()}:1", src)  # second process: all resident
    # A sharded model: every tensor of every shard, through one model handle.
    sharded = make_model(os.path.join(work, "sharded"), mb=12, seed=8, tensors=24, shards=3)
    store.ok("import", sharded, "sharded:1")
    for shard in sorted(os.listdir(sharded)):
        if shard.endswith(".safetensors"):
            p = run_cmd([env_path("C_API_CHECK"), store.root, "sharded:1",
                         os.path.join(sharded, shard)], timeout=600)
            # Tensors of other shards are reported missing from this file; the
            # ones in it must match: no "bytes differ" lines.
            check("bytes differ" not in p.stderr, f"sharded model bytes differ: {p.stderr[-1500:]}")


run_test("pager_c_api", body)
