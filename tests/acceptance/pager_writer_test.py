#!/usr/bin/env python3
"""While readers run: an import, an rm of another model and a compact do not
disturb them; a model imported after a reader opened the store can be opened
by that reader."""

import os

from harness import Store, check, log, make_model, run_test, at_exit
from pager_harness import Worker, drop_segments


def body(work):
    store = Store(os.path.join(work, "store"))
    a = make_model(os.path.join(work, "a.safetensors"), mb=64, seed=1, tensors=32)
    b = make_model(os.path.join(work, "b.safetensors"), mb=32, seed=2, tensors=16)
    c = make_model(os.path.join(work, "c.safetensors"), mb=48, seed=3, tensors=24)
    store.ok("import", a, "a:1")
    store.ok("import", b, "b:1")
    at_exit(lambda: drop_segments(store))

    later = Worker(store.root, "c:1", c, "later", arg="c:1")
    later.wait_for("ready")
    readers = [Worker(store.root, "a:1", a, "hammer", seconds=6, budget=48 << 20) for _ in range(2)]
    store.ok("import", c, "c:1")
    store.ok("rm", "b:1")
    store.ok("compact")
    later.send()
    d = later.finish(timeout=60)
    check(d["mismatches"] == 0, "the model imported later had wrong bytes")
    for r in readers:
        f = r.finish(timeout=60)
        rounds = [l for l in r.lines if "rounds" in l][0]["rounds"]
        log(f"reader {r.pid}: {rounds} acquires, {f['mismatches']} mismatches")
    store.verify_ok("after the writer's work")
    log("readers undisturbed; the later import was visible to the open store")


run_test("pager_writer", body)
