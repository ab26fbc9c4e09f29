#!/usr/bin/env python3
"""Readers and the writer at once.

A 256 MB model is exported by one process after another while another process runs the
writer's work: import a new model, remove a third model, compact (which
deletes the removed model's chunks and rewrites blob files). The writer's
work starts at different moments of the export in each round (before it, at
its start, a quarter, half and three quarters in), and in the last round the
writer removes the very model being exported and compacts, while that export is
stopped (SIGSTOP) in the middle of its work, holding its generation; it is let
go (SIGCONT) once the writer is done. Every export must
finish with exit 0 and a file byte-identical to the source (sha256), every
writer command must succeed, and afterwards the store verifies, lists exactly
the models expected, and - with no reader left - one compact leaves one
generation.

Environment: PSTORE_BIN, MAKE_MODEL.
"""
import os
import signal
import threading
import time

from harness import Result, Store, check, log, make_model, run_test, sha256, tree_sha256

BIG_MB = 256


def holds_generation(pid):
    """Whether process pid has a generation's READERS file open (a reader
    holds it from opening the store to its end)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "/gen/" in target and target.endswith("/READERS"):
            return True
    return False


def held_export(store, path):
    """Starts `pstore export big:v1 path` and stops it (SIGSTOP) as soon as
    it holds its generation, so that whatever runs next runs while that
    export is in the middle of its work; (process, start time), or None when
    the export ended before it could be stopped."""
    t0 = time.monotonic()
    p = store.popen("export", "big:v1", path)
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        if holds_generation(p.pid):
            os.kill(p.pid, signal.SIGSTOP)
            return p, t0
        time.sleep(0.0005)
    p.communicate()
    return None


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

        held = threading.Event()

        def exporter():
            if remove_big:
                # One export, stopped once it holds the generation that has
                # big:v1 and let go once the writer has removed big:v1 and
                # compacted: it must finish from that generation.
                path = os.path.join(work, "out0.safetensors")
                got = None
                for _ in range(20):
                    got = held_export(store, path)
                    if got:
                        break
                held.set()
                check(got, "every export of big:v1 ended before it could be stopped")
                p, t0 = got
                writer_done.wait(600)
                os.kill(p.pid, signal.SIGCONT)
                out, err = p.communicate(timeout=600)
                exports.append((t0 - start, path, Result(p.args, p.returncode, out, err,
                                                         time.monotonic() - t0)))
                return
            k = 0
            while k == 0 or not writer_done.is_set():
                path = os.path.join(work, f"out{k}.safetensors")
                t = time.monotonic() - start
                exports.append((t, path, store.run("export", "big:v1", path, timeout=600)))
                k += 1

        def writer():
            try:
                steps = [("import", new_src, new), ("rm", *gone), ("compact",)]
                if remove_big:
                    steps = steps[1:] + steps[:1]
                    held.wait(600)
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
