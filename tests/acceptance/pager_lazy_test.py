#!/usr/bin/env python3
"""Laziness: acquiring one tensor reads and decodes only its chunks (as the
stats show), and a process that touches one layer of N holds about that
layer's bytes, not the model's."""

import os
import time

from harness import Store, check, log, make_model, run_test, at_exit
from pager_harness import Worker, drop_segments, settled_pss


def body(work):
    store = Store(os.path.join(work, "store"))
    # 64 tensors in 16 layers ("layers.K."), 96 MB.
    src = make_model(os.path.join(work, "m.safetensors"), mb=96, seed=3, tensors=64)
    store.ok("import", src, "m:1")
    at_exit(lambda: drop_segments(store))
    info = store.info("m:1")
    tensors = {t["name"]: t for t in info["tensors"]}
    model_bytes = info["raw_bytes"]

    # One big tensor: exactly its chunks, nothing else.
    name = "layers.5.w1"
    t = tensors[name]
    w = Worker(store.root, "m:1", src, "one", arg=name)
    d = w.finish()
    log(f"{name}: {t['raw_bytes']} bytes in {t['chunks']} chunks; decoded {d['bytes_decoded']} "
        f"in {d['chunk_loads']} loads; read {d['bytes_read']} stored bytes")
    check(d["bytes_decoded"] == t["raw_bytes"],
          f"acquiring {name} decoded {d['bytes_decoded']} bytes, its size is {t['raw_bytes']}")
    check(d["chunk_loads"] == t["chunks"], f"{d['chunk_loads']} loads for {t['chunks']} chunks")
    check(d["bytes_read"] <= t["stored_bytes"] + 64,
          f"read {d['bytes_read']} stored bytes for a tensor stored in {t['stored_bytes']}")
    # Memory comes in 2 MiB units: a tensor's range pulls in at most a unit
    # of its neighbours at each end.
    check(d["resident_bytes"] <= t["raw_bytes"] + 2 * (2 << 20) + (256 << 10),
          f"the model holds {d['resident_bytes']} bytes of memory after one tensor")
    drop_segments(store)

    # One layer of sixteen: about that layer's bytes.
    layer = "layers.7."
    layer_bytes = sum(v["raw_bytes"] for k, v in tensors.items() if k.startswith(layer))
    small = sum(1 for k, v in tensors.items() if k.startswith(layer) and v["raw_bytes"] < 4096)
    w = Worker(store.root, "m:1", src, "prefix", arg=layer)
    r = w.wait_for("ready")
    pss = settled_pss([w.pid])[0]
    held = pss - r["pss_before_model"]
    log(f"layer {layer}: {layer_bytes} bytes of {model_bytes}; process holds {held} more bytes; "
        f"model resident {r['resident_bytes']}")
    w.finish()
    # Tensors under a page share pages with neighbours, which load with them.
    check(layer_bytes <= r["bytes_decoded"] <= layer_bytes + small * 4096,
          f"touching {layer} decoded {r['bytes_decoded']} bytes, the layer has {layer_bytes}")
    # Memory is allocated in 2 MiB units (huge pages): a layer's contiguous
    # range may pull in at most a unit of its neighbours at each end. The
    # process's own costs come on top: the store's database, opened at the
    # first load (RocksDB's code and tables), and loader scratch memory.
    units = 2 * (2 << 20)
    check(r["resident_bytes"] <= layer_bytes + units + (256 << 10),
          f"the model's shared memory is {r['resident_bytes']} bytes for a {layer_bytes}-byte layer")
    check(held <= r["resident_bytes"] + (6 << 20),
          f"the process holds {held} bytes for a {layer_bytes}-byte layer "
          f"({r['resident_bytes']} of them shared memory)")
    check(held < model_bytes / 4, "the process holds a large part of the model")


run_test("pager_lazy", body)
