"""No copy: eight Python processes, each holding a zero-copy torch view of
every tensor of the corpus as one model (8317 tensors, 166.6 MB) with every
page read. Counted as the growth of their proportional set sizes (PSS) from
before the model was read (interpreter, numpy, torch and the open model
already there) to after, split as /proc/PID/smaps_rollup splits it:
  - shared memory and file pages (the tensors' bytes): at most 1.1 x the model
    over all eight, i.e. one copy on the host;
  - anonymous memory (Python and torch objects, about 1 KiB per tensor, and
    the loading process's scratch): no process grows by a copy of the model;
    at most 2 KiB per tensor in each process that did not load, 48 MiB in
    the one that did.
The whole growth is printed (docs/python.md records it)."""

import os
import subprocess
import sys
import textwrap
import time

from conftest import REPO

PROCS = 8
LIMIT = 1.1

WORKER = textwrap.dedent("""
    import gc, sys
    sys.path.insert(0, sys.argv[3])
    import numpy, torch, pstore
    from conftest import touch_pages
    m = pstore.Store(sys.argv[1]).open(sys.argv[2])
    m.names()
    gc.collect()
    print("opened", flush=True)
    sys.stdin.readline()
    sd = m.state_dict()
    s = sum(touch_pages(t) for t in sd.values())
    gc.collect()
    print("holding", len(sd), m.stats()["pinned_bytes"], flush=True)
    sys.stdin.readline()
""")


def pss(pid):
    """{"Pss": bytes, "Pss_Anon": ..., "Pss_File": ..., "Pss_Shmem": ...}"""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k = line.split(":")[0]
            if k in ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem"):
                out[k] = int(line.split()[1]) * 1024
    assert len(out) == 4, f"smaps_rollup of {pid} lacks PSS figures: {out}"
    return out


def settled(pids, seconds=1.5):
    """Each process's PSS at its lowest over a while (loaders give scratch
    memory back shortly after their last load)."""
    best = [None] * len(pids)
    end = time.monotonic() + seconds
    while True:
        for i, p in enumerate(pids):
            v = pss(p)
            if best[i] is None or v["Pss"] < best[i]["Pss"]:
                best[i] = v
        if time.monotonic() >= end:
            return best
        time.sleep(0.1)


def test_eight_processes_share_one_copy(combined_store):
    root, src = combined_store
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "python")
    tests = os.path.dirname(os.path.abspath(__file__))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, root, "combined:v1", tests],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(PROCS)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "opened"
        before = settled([p.pid for p in procs])
        for p in procs:  # one after another: the first loads, the others map
            p.stdin.write("go\n")
            p.stdin.flush()
            line = p.stdout.readline().split()
            assert line[:2] == ["holding", "8317"], line
        after = settled([p.pid for p in procs])
        for p in procs:
            assert p.poll() is None, "a worker died"
    finally:
        for p in procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in procs:
            p.wait(timeout=60)
    model = 166_559_100
    tensors = 8317

    def grown(k):
        return [a[k] - b[k] for a, b in zip(after, before)]

    total, anon = sum(grown("Pss")), grown("Pss_Anon")
    data = sum(grown("Pss_Shmem")) + sum(grown("Pss_File"))
    mib = 2**20
    print(f"{PROCS} processes added {total / mib:.1f} MiB of PSS ({total / model:.3f} x the "
          f"{model / mib:.1f} MiB model): shared memory and files {data / mib:.1f} MiB "
          f"({data / model:.3f} x), anonymous {sum(anon) / mib:.1f} MiB, per process "
          f"{[round(x / mib, 1) for x in anon]} MiB")
    assert data <= LIMIT * model, f"tensor memory {data / model:.3f} x the model (limit {LIMIT})"
    loader = max(range(PROCS), key=lambda i: anon[i])
    assert anon[loader] <= 48 * mib, f"the loading process grew by {anon[loader] / mib:.1f} MiB"
    for i in range(PROCS):
        if i != loader:
            assert anon[i] <= 2048 * tensors, f"process {i} grew by {anon[i] / mib:.1f} MiB"
