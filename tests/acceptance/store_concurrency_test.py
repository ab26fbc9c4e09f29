#!/usr/bin/env python3
"""Readers and the writer at once.

A 256 MB model is exported by one process after another while another process runs the
writer's work: import a new model, remove a third model, compact (which
deletes the removed model's chunks and rewrites blob files). The writer's
work starts at different moments of the export in each round (before it, at
its start, a quarter, half and three quarters in), and in the last round the
writer removes the very model being exported and compacts. Every export must
finish with exit 0 and a file byte-identical to the source (sha256), every
writer command must succeed, and afterwards the store verifies, lists exactly
the models expected, and - with no reader left - one compact leaves one
generation.

Environment: PSTORE_BIN, MAKE_MODEL.
"""
import os
import threading
import time

from harness import Store, check, log, make_model, run_test, sha256, tree_sha256

BIG_MB = 256


def body(work):
    store = Store(os.path.join(work, "store"))
    big = make_model(os.path.join(work, "big.safetensors"), BIG_MB, seed=41, tensors=32,
                     dtype="mixed")
    big_sum = sha256(big)
    store.ok("import", big, "big:v1")
    out = os.path.join(work, "out.safetensors")
    t0 = time.monotonic()
    store.ok("export", "big:v1", out)
    t_export = time.monotonic() - t0
    check(sha256(out) == big_sum, "export of big:v1 differs from its source (no writer running)")
    os.unlink(out)
    log(f"export of {BIG_MB} MB alone takes {t_export:.2f} s")

    # Per round: when the first export starts relative to the writer (in units
    # of t_export; negative: before it), and whether the writer removes
    # big:v1 itself. Exports then follow each other until the writer is done,
    # so every phase of its work (import, rm, compact) runs under some export.
    # In the last round one export starts before the writer removes big:v1 and
    # runs on through the compact that deletes its chunks.
    # (There the writer removes and compacts first, then imports.)
    rounds = [(-0.5, False), (0.0, False), (0.3, False), (0.6, False), (0.9, False), (-0.1, True)]
    expected = {"big:v1": {"": big_sum}}
    held_rounds = 0
    for i, (when, remove_big) in enumerate(rounds):
        victim_src = make_model(os.path.join(work, f"victim{i}.safetensors"), 24, seed=100 + i,
                                tensors=8)
        new_src = make_model(os.path.join(work, f"new{i}.safetensors"), 32, seed=200 + i, tensors=8)
        victim = f"victim/r{i}:v1"
        store.ok("import", victim_src, victim)
        os.unlink(victim_src)
        new = f"new/r{i}:v1"
        gone = [victim, "big:v1"] if remove_big else [victim]

        exports, writes = [], []
        writer_done = threading.Event()

        def exporter():
            k = 0
            while k == 0 or not (writer_done.is_set() or remove_big):
                path = os.path.join(work, f"out{k}.safetensors")
                t = time.monotonic() - start
                exports.append((t, path, store.run("export", "big:v1", path, timeout=600)))
                k += 1

        def writer():
            try:
                steps = [("import", new_src, new), ("rm", *gone), ("compact",)]
                if remove_big:
                    steps = steps[1:] + steps[:1]
                for args in steps:
                    t = time.monotonic() - start
                    r = store.run(*args, json_out=True, timeout=600)
                    writes.append((args[0], t, r))
                    if r.rc != 0:
                        return
            finally:
                writer_done.set()

        e, w = threading.Thread(target=exporter), threading.Thread(target=writer)
        start = time.monotonic()
        if when < 0:
            e.start()
            time.sleep(-when * t_export)
            w.start()
        else:
            w.start()
            time.sleep(when * t_export)
            e.start()
        w.join()
        e.join()
        for _, _, r in writes:
            check(r.rc == 0, f"round {i}: writer command failed: " + r.describe())
        check(len(writes) == 3, f"round {i}: the writer did not run every command")
        for t, path, r in exports:
            check(r.rc == 0, f"round {i}: export started at {t:.2f} s failed: " + r.describe())
            check(sha256(path) == big_sum,
                  f"round {i}: export started at {t:.2f} s differs from the source")
            os.unlink(path)
        step = {cmd: (t, r) for cmd, t, r in writes}
        c = step["compact"][1].json()
        held_rounds += c["generations_in_use"] > 0
        log(f"round {i}: removing {', '.join(gone)}; writer's import at {step['import'][0]:.2f} s "
            f"({step['import'][1].seconds:.2f} s), rm at {step['rm'][0]:.2f} s, compact at "
            f"{step['compact'][0]:.2f} s ({step['compact'][1].seconds:.2f} s, {c['chunks_removed']} chunks "
            f"removed, {c['generations_in_use']} generation(s) held by readers); exports at "
            + ", ".join(f"{t:.2f}-{t + r.seconds:.2f} s" for t, _, r in exports))
        check(c["chunks_removed"] > 0, f"round {i}: compact removed no chunk of {gone}: {c}")
        if remove_big:
            t, _, r = exports[0]
            check(t + r.seconds > step["compact"][0],
                  f"round {i}: the export of big:v1 ended before the compact began; lengthen it")

        expected[new] = {"": sha256(new_src)}
        os.unlink(new_src)
        for g in gone:
            expected.pop(g, None)
        names = set(store.ls())
        check(names == set(expected), f"round {i}: store lists {sorted(names)}, "
                                      f"want {sorted(expected)}")
    check(held_rounds > 0, "no compact ran while an export held an older generation: the test "
                           "did not exercise readers during compaction")

    store.verify_ok("after the rounds")
    for ref, want in expected.items():
        store.export_matches(ref, want, work)
    c = store.ok("compact", json_out=True).json()
    gens = os.listdir(os.path.join(store.root, "gen"))
    check(c["generations_in_use"] == 0 and len(gens) == 1,
          f"with no reader open, compact left generations {sorted(gens)}: {c}")
    store.verify_ok("after the final compact")


if __name__ == "__main__":
    run_test("store_concurrency", body)
