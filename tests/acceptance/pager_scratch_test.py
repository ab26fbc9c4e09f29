#!/usr/bin/env python3
"""Loader scratch: a process that has loaded a model itself keeps little more
memory of its own, once its loaders are idle, than one that attached to the
model another process loaded (the store's tables it opened, a few hundred KB).

The model is made to be like real ones where it matters: 8000 small tensors
(opening it builds megabyte-sized tables, whose freeing raises glibc's
threshold for serving a block by mmap) and 64 tensors of several 256 KiB
chunks (planes of up to 128 KiB to decode, frames of that size to read).
Scratch of that size taken from malloc on a loader thread then comes from
that thread's arena, which keeps it after malloc_trim: the process that
loaded kept 2.3 to 2.4 MB more than the one that attached; with decoder scratch
mapped apart and the store read in small runs, 1.2 to 1.3 MB."""

import os
import sys

from harness import Store, check, log, make_model, run_cmd, run_test, at_exit
from pager_harness import Worker, anonymous_of, drop_segments, settled_pss

ALLOWANCE = 1792 << 10


def combine(folder, out):
    """One safetensors file of every model in folder (scripts/corpus_combine.py)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts",
                          "corpus_combine.py")
    p = run_cmd([sys.executable, script, folder, out], timeout=300)
    check(p.returncode == 0, f"corpus_combine.py failed: {p.returncode} {p.stderr}")
    return out


def body(work):
    store = Store(os.path.join(work, "store"))
    parts = os.path.join(work, "parts")
    os.mkdir(parts)
    make_model(os.path.join(parts, "small.safetensors"), mb=8, seed=3, tensors=8000)
    make_model(os.path.join(parts, "big.safetensors"), mb=64, seed=4, tensors=64)
    src = combine(parts, os.path.join(work, "m.safetensors"))
    store.ok("import", src, "scratch:1")
    at_exit(lambda: drop_segments(store))
    drop_segments(store)
    # Two loader threads, as on a machine of two cores: each thread's arena
    # keeps some of RocksDB's read buffers (docs/pager.md), so more threads
    # would need a larger allowance.
    loader = Worker(store.root, "scratch:1", src, "all", loader_threads=2)
    first = loader.wait_for("ready", timeout=120)
    attacher = Worker(store.root, "scratch:1", src, "all", loader_threads=2)
    second = attacher.wait_for("ready", timeout=120)
    anon = settled_pss([loader.pid, attacher.pid], figure=anonymous_of)
    extra = anon[0] - anon[1]
    log(f"anonymous memory: loader {anon[0]} bytes, attacher {anon[1]} bytes, "
        f"{extra} more in the loader (decoded {first['bytes_decoded']} and "
        f"{second['bytes_decoded']} bytes)")
    for w in (loader, attacher):
        w.finish()
    check(first["mismatches"] == 0 and second["mismatches"] == 0,
          "a process saw bytes unlike the source")
    check(first["bytes_decoded"] == first["model_bytes"],
          f"the first process decoded {first['bytes_decoded']} of {first['model_bytes']} bytes")
    check(second["bytes_decoded"] == 0,
          f"the second process decoded {second['bytes_decoded']} bytes of a resident model")
    check(extra <= ALLOWANCE,
          f"the process that loaded the model keeps {extra} bytes more anonymous memory than "
          f"one that attached, over {ALLOWANCE}: loader scratch was not given back")


run_test("pager_scratch", body)
