#!/usr/bin/env python3
"""Budget: with a budget smaller than the model, a process that walks every
tensor (acquire, check, release) succeeds and resident memory stays within
the budget plus what is pinned; a pinned tensor is never evicted; and no
reader sees zeroed or stale bytes while an evictor runs beside it."""

import os

from harness import Store, check, log, make_model, run_test, at_exit
from pager_harness import Worker, drop_segments, ps


def body(work):
    store = Store(os.path.join(work, "store"))
    src = make_model(os.path.join(work, "m.safetensors"), mb=96, seed=5, tensors=96)
    store.ok("import", src, "m:1")
    at_exit(lambda: drop_segments(store))
    model_bytes = store.info("m:1")["raw_bytes"]
    budget = model_bytes // 3

    w = Worker(store.root, "m:1", src, "walk", budget=budget)
    d = w.finish()
    walk = [l for l in w.lines if l.get("walk")][0]
    log(f"walk with budget {budget} of {model_bytes}: max store resident "
        f"{walk['max_store_resident']}, worst over budget+pinned {walk['worst_over_budget_plus_pinned']}, "
        f"evictions {d['evictions']}")
    check(walk["worst_over_budget_plus_pinned"] == 0,
          f"resident memory went {walk['worst_over_budget_plus_pinned']} bytes over budget + pinned")
    check(d["evictions"] > 0, "nothing was evicted, so the budget was not exercised")
    drop_segments(store)

    # A pinned tensor stays, and readers see right bytes, while walkers evict.
    small_budget = model_bytes // 4
    pinned = Worker(store.root, "m:1", src, "pin", arg="layers.2.w1", seconds=8, budget=small_budget)
    pinned.wait_for("ready")
    readers = [Worker(store.root, "m:1", src, "hammer", seconds=6, budget=small_budget)
               for _ in range(2)]
    walkers = [Worker(store.root, "m:1", src, "walk", budget=small_budget) for _ in range(2)]
    for x in walkers + readers:
        x.finish(timeout=300)
    p = pinned.finish(timeout=60)
    checks = [l for l in pinned.lines if "checks" in l][0]["checks"]
    evictions = p["evictions"]
    log(f"pinned tensor checked {checks} times while {evictions} slots were evicted around it")
    check(evictions > 0, "nothing was evicted while the tensor was pinned")
    check(p["mismatches"] == 0, "the pinned tensor's bytes changed")
    j = ps(store)
    for s in j["segments"]:
        check(s["busy_slots"] == 0, f"slots left loading or evicting: {s}")


run_test("pager_budget", body)
