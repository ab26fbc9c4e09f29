#!/usr/bin/env python3
"""Faults: a process killed (SIGKILL) while loading, and another killed while
holding pins, at least 20 times each: the other processes finish within 2
seconds with correct bytes, and the dead processes' pins and claims are
reclaimed.

"Within 2 seconds" is 2 seconds more than the survivor's own work (a cold
load, or a walk), timed undisturbed on this machine just before: on a loaded
machine that work alone can take longer than 2 s, and what is checked is
that the survivor does not wait on the dead."""

import os
import random
import time

from harness import Store, check, log, make_model, run_test, at_exit
from pager_harness import Worker, drop_segments, ps

ROUNDS = 20


def body(work):
    store = Store(os.path.join(work, "store"))
    src = make_model(os.path.join(work, "m.safetensors"), mb=64, seed=9, tensors=48)
    store.ok("import", src, "m:1")
    at_exit(lambda: drop_segments(store))
    rng = random.Random(42)

    # Time one cold load to aim the kills inside it.
    drop_segments(store)
    t0 = time.monotonic()
    Worker(store.root, "m:1", src, "load").finish()
    load_s = time.monotonic() - t0
    log(f"a cold load takes {load_s:.3f} s; a survivor may take 2 s more")

    worst = 0.0
    for i in range(ROUNDS):
        drop_segments(store)
        victim = Worker(store.root, "m:1", src, "load")
        other = Worker(store.root, "m:1", src, "load")
        time.sleep(rng.uniform(0.02, max(0.05, load_s * 0.9)))
        victim.kill()
        killed_at = time.monotonic()
        d = other.finish(timeout=30)
        after = time.monotonic() - killed_at
        worst = max(worst, after)
        check(after <= 2.0 + load_s, f"round {i}: the surviving loader needed {after:.2f} s after "
                                     f"the kill (a whole cold load takes {load_s:.2f} s)")
        check(d["mismatches"] == 0, f"round {i}: wrong bytes")
    log(f"killed while loading {ROUNDS} times; survivors finished at most {worst:.3f} s after a kill")

    # Killed while holding pins: a walker with a small budget needs those slots.
    model_bytes = store.info("m:1")["raw_bytes"]
    budget = model_bytes // 3
    drop_segments(store)
    t0 = time.monotonic()
    Worker(store.root, "m:1", src, "walk", budget=budget).finish()
    walk_s = time.monotonic() - t0
    log(f"a walk under a third of the model's size takes {walk_s:.3f} s")
    worst = 0.0
    for i in range(ROUNDS):
        drop_segments(store)
        holder = Worker(store.root, "m:1", src, "all", budget=budget * 10)
        holder.wait_for("ready", timeout=60)
        holder.kill()
        killed_at = time.monotonic()
        walker = Worker(store.root, "m:1", src, "walk", budget=budget)
        d = walker.finish(timeout=30)
        after = time.monotonic() - killed_at
        worst = max(worst, after)
        walk = [l for l in walker.lines if l.get("walk")][0]
        check(after <= 2.0 + walk_s, f"round {i}: the walker needed {after:.2f} s after the kill "
                                     f"(a whole walk takes {walk_s:.2f} s)")
        check(d["mismatches"] == 0, f"round {i}: wrong bytes")
        check(walk["worst_over_budget_plus_pinned"] == 0,
              f"round {i}: a dead process's pins kept memory over budget "
              f"({walk['worst_over_budget_plus_pinned']} bytes)")
    log(f"killed holding pins {ROUNDS} times; walkers finished at most {worst:.3f} s after a kill")

    # Killed while evicting: a walker under a small budget evicts all the time;
    # a reader under the same budget must keep seeing right bytes, and nothing
    # may stay claimed by the dead.
    for i in range(ROUNDS):
        drop_segments(store)
        reader = Worker(store.root, "m:1", src, "hammer", seconds=1.5, budget=budget)
        evictor = Worker(store.root, "m:1", src, "walk", budget=budget)
        time.sleep(rng.uniform(0.02, 0.4))
        evictor.kill()
        d = reader.finish(timeout=30)
        check(d["mismatches"] == 0, f"round {i}: a reader saw wrong bytes beside a killed evictor")
        after = Worker(store.root, "m:1", src, "walk", budget=budget)
        a = after.finish(timeout=30)
        check(a["mismatches"] == 0, f"round {i}: wrong bytes after a killed evictor")
    log(f"killed while evicting {ROUNDS} times; readers beside them saw right bytes")

    j = ps(store)
    for s in j["segments"]:
        check(s["busy_slots"] == 0, f"claims of dead processes left behind: {s}")
        for p in s["processes"]:
            check(p["alive"], f"a dead process is still attached: {p}")


run_test("pager_faults", body)
