"""Lifetimes: views used after `del model`, model.close(), store.close(), and
after the model's name is removed and the store compacted; views of pinned
tensors while another process evicts under a tiny budget; os.fork() and
multiprocessing's spawn. Each case runs in its own interpreter, so that a
crash shows as a signal instead of killing the test run: it must print right
bytes or raise a pstore exception, never die of a signal."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, pstore_bin, run_python

# The child's common part: opens the model, takes views of three tensors
# (numpy, torch, a slice derived from a torch view, a state_dict), remembers
# their bytes as read through copy_into (not through the views).
PRELUDE = textwrap.dedent("""
    import gc, os, subprocess, sys
    import numpy as np, torch
    import pstore
    root, ref, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    store = pstore.Store(root)
    m = store.open(ref)
    names = ["layers.0.f32", "layers.2.bf16", "layers.17.f16"]
    want = {}
    for n in names:
        buf = bytearray(m.info(n).nbytes)
        m.copy_into(n, buf)
        want[n] = bytes(buf)
    a = m.numpy(names[0])
    t = m.torch(names[1])
    part = t[10:20]          # derived from a view: keeps it alive too
    sd = m.state_dict(prefix="layers.17.", framework="torch")
    def check_views(tag):
        ok = a.tobytes() == want[names[0]]
        ok &= t.view(torch.int16).numpy().tobytes() == want[names[1]]
        row = len(want[names[1]]) // t.shape[0]
        ok &= part.view(torch.int16).numpy().tobytes() == want[names[1]][10 * row:20 * row]
        ok &= sd[names[2]].numpy().tobytes() == want[names[2]]
        print(f"{tag}: {'right bytes' if ok else 'WRONG BYTES'}", flush=True)
        if not ok:
            sys.exit(3)
""")

CASES = {
    "del_model": """
        del m
        gc.collect()
        check_views("after del model")
    """,
    "close_model": """
        m.close()
        try:
            m.numpy(names[0])
            print("use after close did not raise"); sys.exit(4)
        except pstore.Closed as e:
            print("use after close raises:", e)
        # The pins live on with the views, and go with them.
        m2 = store.open(ref)
        pinned = m2.stats()["pinned_bytes"]
        check_views("after model.close()")
        del a, t, part, sd
        gc.collect()
        left = m2.stats()["pinned_bytes"]
        print(f"pinned while views lived {pinned}, after {left}")
        if not (pinned > 0 and left == 0):
            sys.exit(5)
    """,
    "close_store": """
        m.close()
        store.close()
        del m, store
        gc.collect()
        check_views("after model.close() and store.close()")
    """,
    "rm_compact": """
        m.close()
        store.close()
        del m, store
        gc.collect()
        pstore_bin = os.environ["PSTORE_BIN"]
        for args in (["rm", ref], ["compact"], ["ps", "--gc"]):
            p = subprocess.run([pstore_bin, "--store", root, *args], capture_output=True, text=True)
            print("pstore", *args, "->", p.returncode, p.stderr.strip()[-200:])
            if p.returncode != 0:
                sys.exit(6)
        check_views("after rm and compact")
        try:
            pstore.Store(root).open(ref)
            print("the removed name still opens"); sys.exit(7)
        except pstore.NotFound as e:
            print("the removed name:", e)
    """,
    "evicted_around": """
        m.close()
        # Another process with a 1 MiB budget reads every tensor: it evicts
        # whatever is not pinned, never what these views pin.
        code = ("import pstore,sys\\n"
                "s = pstore.Store(sys.argv[1], budget=1 << 20)\\n"
                "m = s.open(sys.argv[2])\\n"
                "for n in m.names():\\n"
                "    m.numpy(n).sum()\\n"
                "print('evictions', m.stats()['evictions'])\\n")
        p = subprocess.run([sys.executable, "-c", code, root, ref], capture_output=True, text=True)
        print(p.stdout.strip(), p.stderr.strip()[-300:])
        if p.returncode != 0:
            sys.exit(8)
        check_views("after another process evicted under a tiny budget")
    """,
    "fork": """
        before = m.stats()["pinned_bytes"]
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                m.numpy(names[0])
                print("child: the parent's model worked in the child"); code = 10
            except pstore.Closed as e:
                print("child: parent's model refuses:", e)
            try:
                store.open(ref)
                print("child: the parent's store worked in the child"); code = 11
            except pstore.Closed as e:
                print("child: parent's store refuses:", e)
            check_views("child, inherited views")     # the parent holds the pins
            mine = pstore.Store(root).open(ref)       # what a child should do
            if mine.numpy(names[0]).tobytes() != want[names[0]]:
                code = 12
            del a, t, part, sd, m, store              # finalizers must not release the parent's pins
            gc.collect()
            sys.stdout.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            print("child died of signal", os.WTERMSIG(status)); sys.exit(20)
        if os.WEXITSTATUS(status) != 0:
            print("child exit", os.WEXITSTATUS(status)); sys.exit(21)
        after = m.stats()["pinned_bytes"]
        print(f"parent pinned before fork {before}, after the child exited {after}")
        if after != before:
            sys.exit(22)
        check_views("parent, after the child")
    """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_views_outlive_their_handles(small_model, case):
    root, ref, _ = small_model
    code = PRELUDE + textwrap.dedent(CASES[case])
    p = run_python(code, root, ref, case, env={"PSTORE_BIN": pstore_bin()})
    out = p.stdout + p.stderr
    assert p.returncode >= 0, f"{case}: killed by {signal.Signals(-p.returncode).name}:\n{out}"
    assert p.returncode == 0, f"{case}: exit {p.returncode}:\n{out}"
    assert "WRONG BYTES" not in out and "right bytes" in out, out


SPAWN = textwrap.dedent("""
    import hashlib, multiprocessing, sys
    import pstore

    def work(job):
        model, name = job                 # a Model pickles as its store and digest
        a = model.numpy(name)
        with open("/proc/self/maps") as f:
            shm = any("/dev/shm/pstore-" in l and model.digest in l for l in f)
        return name, hashlib.sha256(a.tobytes()).hexdigest(), shm

    if __name__ == "__main__":
        root, ref = sys.argv[1], sys.argv[2]
        m = pstore.Store(root).open(ref)
        names = m.names()
        want = {n: hashlib.sha256(m.numpy(n).tobytes()).hexdigest() for n in names}
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(2) as pool:
            got = pool.map(work, [(m, n) for n in names])
        bad = [n for n, h, shm in got if h != want[n] or not shm]
        print(f"{len(got)} tensors read in spawned workers, {len(bad)} wrong: {bad}")
        sys.exit(1 if bad else 0)
""")


def test_multiprocessing_spawn_reopens_the_model(small_model, scratch):
    root, ref, _ = small_model
    script = os.path.join(scratch, "spawn_check.py")
    with open(script, "w") as f:
        f.write(SPAWN)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "python")
    p = subprocess.run([sys.executable, script, root, ref], capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stdout + p.stderr


def test_writing_through_a_torch_view_faults_and_changes_nothing(small_model):
    root, ref, _ = small_model
    code = textwrap.dedent("""
        import sys, pstore
        m = pstore.Store(sys.argv[1]).open(sys.argv[2])
        t = m.torch("layers.0.f32")
        print("before", float(t[0, 0]), flush=True)
        t[0, 0] = 12345.0
        print("the write went through", flush=True)
    """)
    p = run_python(code, root, ref)
    assert p.returncode == -signal.SIGSEGV, (p.returncode, p.stdout, p.stderr)
    assert "went through" not in p.stdout
    before = float(p.stdout.split()[1])
    check = run_python("import sys, pstore\n"
                       "m = pstore.Store(sys.argv[1]).open(sys.argv[2])\n"
                       "print(float(m.torch('layers.0.f32')[0, 0]))", root, ref)
    assert check.returncode == 0 and float(check.stdout) == before, check.stdout + check.stderr
