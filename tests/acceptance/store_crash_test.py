#!/usr/bin/env python3
"""Crash safety: SIGKILL `pstore import` and `pstore compact` at random moments.

Two base models (one single-file, one sharded) are imported first and the
store's size measured (after a compact). Then, KILLS times in all (35 imports
of new 64 MB models and 15 compacts by default), a command is started and
killed with SIGKILL after a delay drawn (stratified) over its measured run time
(a few right at its start). After every kill:
  - `pstore verify` exits 0 and reports no problem;
  - `pstore ls` lists only the base models and, maybe, the killed import's
    name, every entry readable;
  - every listed model exports byte-identical to its source (sha256), so the
    killed import's name is either absent or names the complete model;
  - after a writer command that changes nothing (rm of a name that does not
    exist, exit 3), which must publish whatever the killed process committed
    but did not publish, the same holds, and the killed import is settled: a
    complete one is removed (so that the store does not grow), an absent one
    must never appear later.
At the end `pstore compact` must bring the store back to the base models'
chunks exactly, within 5% of the size measured before the kills, with one
generation left and no leftover files from the killed processes.

Environment: PSTORE_BIN, MAKE_MODEL; PSTORE_CRASH_SEED (random seed, printed),
PSTORE_CRASH_IMPORTS / PSTORE_CRASH_COMPACTS (how many of each).
"""
import os
import random
import signal
import subprocess
import time

from harness import (EXIT_NOT_FOUND, Store, check, du_bytes, log, make_model, popen, run_test,
                     tree_sha256)

MODEL_MB = 64
SPAN = 1.25  # delays are drawn from [0, SPAN x the measured run time]


def timed_import(store, src, ref):
    t0 = time.monotonic()
    store.ok("import", src, ref)
    return time.monotonic() - t0


def spawn_and_kill(store, args, delay):
    """Starts pstore ARGS, SIGKILLs it after delay seconds; returns (rc, stderr, ran_s)."""
    p = popen(store.argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
              stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    if delay > 0:
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=120)
    return p.returncode, err, time.monotonic() - t0


def check_listing(store, base, ref, ref_sum, scratch, what):
    """ls lists the base models and at most the killed import's name; every
    listed model exports byte-identical. Returns whether ref is listed."""
    names = store.ls()
    extra = set(names) - set(base) - ({ref} if ref else set())
    check(not extra, f"{what}: ls lists models nobody completed (or a killed import that was "
                     f"absent after a writer had opened the store): {sorted(extra)}")
    missing = set(base) - set(names)
    check(not missing, f"{what}: base models vanished: {sorted(missing)}")
    for n, e in names.items():
        check(e.get("ok") is True, f"{what}: ls cannot read model {n}: {e}")
    for n in base:
        store.export_matches(n, base[n], scratch)
    if ref in names:
        store.export_matches(ref, ref_sum, scratch)
    return ref in names


def body(work):
    seed = int(os.environ.get("PSTORE_CRASH_SEED", random.randrange(1 << 30)))
    n_imports = int(os.environ.get("PSTORE_CRASH_IMPORTS", 35))
    n_compacts = int(os.environ.get("PSTORE_CRASH_COMPACTS", 15))
    rng = random.Random(seed)
    log(f"seed {seed} (rerun with PSTORE_CRASH_SEED={seed}); {n_imports} import kills, "
        f"{n_compacts} compact kills")
    store = Store(os.path.join(work, "store"))
    scratch = os.path.join(work, "scratch")
    os.makedirs(scratch)

    # Base models, their checksums and the store's size before any kill.
    base = {}
    make_model(os.path.join(work, "base1.safetensors"), 24, seed=11, tensors=16, dtype="mixed")
    make_model(os.path.join(work, "base2"), 16, seed=12, tensors=12, dtype="BF16", shards=3)
    for ref, src in (("base/one:v1", "base1.safetensors"), ("base/sharded:v1", "base2")):
        path = os.path.join(work, src)
        store.ok("import", path, ref)
        base[ref] = tree_sha256(path)
    store.ok("compact")
    s0 = store.stat()
    size0 = s0["disk_bytes"]
    log(f"base: {s0['chunks']} chunks, {s0['stored_bytes']} stored bytes, {size0} bytes on disk")

    # How long an import and a compact take in the loop's conditions: each
    # after a killed import (so with the recovery that costs), timed three
    # times on new data that is then removed; the median counts.
    t_imports, t_compacts = [], []
    for k in range(3):
        killed = make_model(os.path.join(work, "probe0.safetensors"), MODEL_MB, seed=980 + k,
                            tensors=24)
        probe = make_model(os.path.join(work, "probe.safetensors"), MODEL_MB, seed=990 + k,
                           tensors=24)
        spawn_and_kill(store, ["import", killed, "probe:0"], 0.15)
        t_imports.append(timed_import(store, probe, "probe:1"))
        store.ok("rm", "probe:1")
        if "probe:0" in store.ls():
            store.ok("rm", "probe:0")
        spawn_and_kill(store, ["import", killed, "probe:0"], 0.15)
        t0 = time.monotonic()
        store.ok("compact")
        t_compacts.append(time.monotonic() - t0)
        if "probe:0" in store.ls():
            store.ok("rm", "probe:0")
            store.ok("compact")
        os.unlink(probe)
        os.unlink(killed)
    t_import = max(sorted(t_imports)[1], 0.05)
    # The machine's load changes during the run (other tests start and end):
    # an import that finishes before its kill is a fresh measure of the run
    # time, and the delays follow the median of the last few, so that a
    # machine that became faster does not leave most imports unkilled.
    recent_imports = list(t_imports)
    t_compact = max(sorted(t_compacts)[1], 0.05)
    log(f"import of {MODEL_MB} MB takes {t_import:.2f} s, compact removing a killed import's "
        f"leftovers {t_compact:.2f} s (medians of {t_imports}, {t_compacts})")

    kinds = ["import"] * n_imports + ["compact"] * n_compacts
    rng.shuffle(kinds)
    at_start = {"import": 5, "compact": 3}  # the first few of each kind die right at the start
    stats = {"import": [0, 0], "compact": [0, 0]}  # [killed, finished first]
    longest = {"import": 0.0, "compact": 0.0}  # longest delay drawn / measured run time
    # The other kills of each kind get delays stratified over [0, SPAN x run
    # time]: one uniform draw inside each of m equal strata, in random order,
    # so the whole run is covered every time, its end included.
    fractions = {}
    for kind, count in (("import", n_imports), ("compact", n_compacts)):
        m = count - at_start[kind]
        f = [SPAN * (k + rng.random()) / m for k in range(m)]
        rng.shuffle(f)
        fractions[kind] = f
    for i, kind in enumerate(kinds):
        if at_start[kind] > 0:
            at_start[kind] -= 1
            delay = rng.uniform(0, 0.01)
        else:
            frac = fractions[kind].pop()
            delay = frac * (t_import if kind == "import" else t_compact)
            longest[kind] = max(longest[kind], frac)
        ref, src = None, None
        if kind == "import":
            ref = f"crash/m{i}:v1"
            src = make_model(os.path.join(work, "victim.safetensors"), MODEL_MB, seed=1000 + i,
                             tensors=24)
            src_sum = tree_sha256(src)
            rc, err, ran = spawn_and_kill(store, ["import", src, ref], delay)
            if rc == 0:
                recent_imports = (recent_imports + [ran])[-5:]
                t_import = max(sorted(recent_imports)[len(recent_imports) // 2], 0.05)
        else:
            rc, err, ran = spawn_and_kill(store, ["compact"], delay)
        what = f"kill {i + 1}/{len(kinds)}: {kind} after {delay * 1000:.0f} ms"
        check(rc in (0, -signal.SIGKILL), f"{what}: the command failed on its own (exit {rc}): {err}")
        stats[kind][0 if rc != 0 else 1] += 1

        # What readers see right after the kill.
        store.verify_ok(what)
        check_listing(store, base, ref, src_sum if ref else None, scratch, what)
        # Any writer command must first publish a change that a killed writer
        # committed but did not publish; one that fails (rm of no such name)
        # changes nothing else. After it the killed import is settled: either
        # complete (and then removed, so the store does not grow) or gone for
        # good; a name showing up in a later round fails check_listing.
        r = store.run("rm", "crash/no-such-model:x")
        check(r.rc == EXIT_NOT_FOUND, f"{what}: rm of a missing name: want exit "
                                      f"{EXIT_NOT_FOUND}; " + r.describe())
        store.verify_ok(what + ", after a writer opened the store")
        present = check_listing(store, base, ref, src_sum if ref else None, scratch,
                                what + ", after a writer opened the store")
        if present:
            store.ok("rm", ref)
        if src:
            os.unlink(src)
        log(f"{what}: {'killed' if rc else 'finished'} ({ran:.2f} s); "
            f"{'complete' if present else 'absent' if ref else 'store intact'}; "
            f"disk {du_bytes(store.root) >> 20} MiB")

    log(f"imports killed {stats['import'][0]}, finished first {stats['import'][1]}; "
        f"compacts killed {stats['compact'][0]}, finished first {stats['compact'][1]}")
    for kind in ("import", "compact"):
        check(longest[kind] >= 1.0, f"no {kind} was killed after its measured run time "
                                    f"({longest[kind]:.2f} of it at most): the delays did not "
                                    "cover the whole run")
    check(stats["import"][0] >= n_imports // 2,
          f"too few imports were actually killed ({stats['import'][0]} of {n_imports}): "
          "the delays do not cover the run")

    # The kills' leftovers must all be reclaimed.
    store.ok("compact")
    store.verify_ok("after the final compact")
    s1 = store.stat()
    log(f"after: {s1['chunks']} chunks, {s1['stored_bytes']} stored bytes, "
        f"{s1['disk_bytes']} bytes on disk (before the kills {size0})")
    check(sorted(store.ls()) == sorted(base), f"final model list is {sorted(store.ls())}")
    check((s1["chunks"], s1["stored_bytes"], s1["unique_bytes"]) ==
          (s0["chunks"], s0["stored_bytes"], s0["unique_bytes"]),
          f"compact left chunks no model uses: before the kills {s0}, after {s1}")
    check(abs(s1["disk_bytes"] - size0) <= 0.05 * size0,
          f"store takes {s1['disk_bytes']} bytes after compact, {size0} before the kills "
          f"(more than 5% apart): the killed processes' leftovers were not reclaimed; files: "
          f"{sorted(os.listdir(os.path.join(store.root, 'db')))} gen: "
          f"{sorted(os.listdir(os.path.join(store.root, 'gen')))}")
    gens = sorted(os.listdir(os.path.join(store.root, "gen")))
    check(len(gens) == 1, f"store/gen holds {gens}: one generation expected with no reader open "
                          "(leftovers of killed publishes?)")
    for n in base:
        store.export_matches(n, base[n], scratch)


if __name__ == "__main__":
    run_test("store_crash", body)
