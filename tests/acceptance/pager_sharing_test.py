#!/usr/bin/env python3
"""Sharing: 8 processes acquire every tensor of one model of at least 100 MB.
The sum of their PSS, less what each held before it opened the model, is at
most 1.1 x the model's raw bytes; each sees the source file's bytes; every
chunk was decoded once on the host, not once per process."""

import os
import time

from harness import Store, check, log, make_model, run_test, at_exit
from pager_harness import Worker, drop_segments, settled_pss


def body(work):
    store = Store(os.path.join(work, "store"))
    src = make_model(os.path.join(work, "m.safetensors"), mb=120, seed=11, tensors=64)
    store.ok("import", src, "big:1")
    at_exit(lambda: drop_segments(store))
    raw = os.path.getsize(src)
    workers = [Worker(store.root, "big:1", src, "all") for _ in range(8)]
    ready = [w.wait_for("ready", timeout=120) for w in workers]
    # Measure while all eight map the model, once they have settled (a loader
    # gives its scratch memory back after 50 ms without loads).
    pss = settled_pss([w.pid for w in workers])
    extra = sum(p - r["pss_before_model"] for p, r in zip(pss, ready))
    model_bytes = ready[0]["model_bytes"]
    log(f"model {model_bytes} bytes; PSS per process {pss}; sum over baselines {extra} "
        f"= {extra / model_bytes:.3f} x the model")
    done = [w.finish() for w in workers]
    check(model_bytes >= 100e6, f"the model has {model_bytes} bytes, not 100 MB or more")
    check(extra <= 1.1 * model_bytes,
          f"the processes hold {extra} bytes beyond their baselines, over 1.1 x {model_bytes}")
    check(all(r["mismatches"] == 0 for r in ready), "a process saw bytes unlike the source")
    decoded_here = sum(r["bytes_decoded"] for r in ready)
    host = ready[-1]["host_bytes_decoded"]
    log(f"decoded by the eight together: {decoded_here} bytes; host counter {host}")
    check(decoded_here == model_bytes,
          f"the eight processes decoded {decoded_here} bytes for a {model_bytes}-byte model "
          "(each chunk should be decoded once)")
    check(done[0]["host_bytes_decoded"] == model_bytes,
          f"the segment counts {done[0]['host_bytes_decoded']} decoded bytes, not {model_bytes}")


run_test("pager_sharing", body)
