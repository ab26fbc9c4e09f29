#!/usr/bin/env python3
"""Inputs and arguments that once hung, aborted or gave the wrong exit code.

  - A FIFO as the import source, as a shard named by an index, or as the one
    .safetensors file of a folder: exit 4 at once, naming it; the writer lock
    is not held meanwhile (another import runs), the store is unchanged.
  - A symbolic link loop as the source and as a shard: exit 4 both ways.
  - `import --threads` and `verify --threads` above the documented maximum
    (256), or negative: exit 4 at once, naming the limit.
  - Through the C API (ctypes on libpstore): loader_threads of 100000 is
    PSTORE_ERR_INVALID_ARGUMENT, not an abort; a pager whose loader threads
    cannot be started (an address-space limit) gets an error status, not
    std::terminate; pstore_import_file of a malformed file into a missing
    store path leaves no folder behind.
  - SIGTERM of an import that waits for the writer lock: exit 9.
  - An export that meets a missing blob file: exit 5 (corruption), naming
    the model, nothing left at the output path.

Environment: PSTORE_BIN, MAKE_MODEL, PSTORE_LIB (libpstore.so).
"""
import ctypes
import fcntl
import glob
import os
import resource
import signal
import sys
import time

from harness import (EXIT_CORRUPT, EXIT_INTERRUPTED, EXIT_INVALID, Store, check, env_path, log,
                     make_model, run_cmd, run_test)

PSTORE_ERR_INVALID_ARGUMENT = 3


def catches_sigterm(pid):
    """Whether process pid has a handler for SIGTERM."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except FileNotFoundError:
        pass
    return False


def snapshot(store):
    ls = {n: e["digest"] for n, e in store.ls().items()}
    return ls, store.stat()["generation"]


def expect_refused(store, source, ref, code, words, timeout=30):
    r = store.run("import", source, ref, timeout=timeout)
    check(r.rc == code, f"expected exit {code}: " + r.describe())
    for w in words:
        check(w in r.err, f"the message should name {w!r}: " + r.describe())
    return r


class StoreOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("budget_bytes", ctypes.c_uint64),
                ("loader_threads", ctypes.c_int)]


def c_api_child(lib_path, mode, store_root, arg):
    """Runs in a child process: one C API call, its status as the exit code."""
    lib = ctypes.CDLL(lib_path)
    lib.pstore_last_error.restype = ctypes.c_char_p
    if mode in ("threads", "nothreads"):
        if mode == "nothreads":
            # Room for the process, not for 256 thread stacks of 8 MiB.
            limit = 1 << 30
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        opts = StoreOptions()
        lib.pstore_store_options_default(ctypes.byref(opts))
        opts.loader_threads = int(arg)
        handle = ctypes.c_void_p()
        st = lib.pstore_store_open(store_root.encode(), ctypes.byref(opts), ctypes.byref(handle))
    else:
        st = lib.pstore_import_file(store_root.encode(), arg.encode(), b"bad:v1", None, None)
    msg = lib.pstore_last_error()
    print((msg or b"").decode(), flush=True)
    os._exit(st)


def run_c_api(mode, store_root, arg):
    lib = env_path("PSTORE_LIB")
    p = run_cmd([sys.executable, os.path.abspath(__file__), "--child", lib, mode, store_root,
                 str(arg)], timeout=120)
    return p.returncode, p.stdout + p.stderr


def body(work):
    store = Store(os.path.join(work, "store"))
    good = make_model(os.path.join(work, "good.safetensors"), 2, seed=1, tensors=6)
    store.ok("import", good, "good:v1")
    before = snapshot(store)

    # --- FIFOs --------------------------------------------------------------
    fifo = os.path.join(work, "pipe.safetensors")
    os.mkfifo(fifo)
    t0 = time.monotonic()
    expect_refused(store, fifo, "fifo:v1", EXIT_INVALID, [fifo, "FIFO"])
    check(time.monotonic() - t0 < 20, "refusing a FIFO took too long")
    # The writer lock was not held while refusing it: a FIFO import running
    # meanwhile in the background must not block another import.
    p = store.popen("import", fifo, "fifo:v2")
    store.ok("import", good, "good:v2")
    out, err = p.communicate(timeout=30)
    check(p.returncode == EXIT_INVALID, f"FIFO import exited {p.returncode}: {err}")
    store.ok("rm", "good:v2")
    before = snapshot(store)

    sharded = make_model(os.path.join(work, "sharded"), 2, seed=2, tensors=6, shards=2)
    shard = sorted(f for f in os.listdir(sharded) if f.endswith(".safetensors"))[0]
    os.unlink(os.path.join(sharded, shard))
    os.mkfifo(os.path.join(sharded, shard))
    expect_refused(store, sharded, "fifo/sharded:v1", EXIT_INVALID, [shard, "FIFO"])
    lone = os.path.join(work, "lone")
    os.mkdir(lone)
    os.mkfifo(os.path.join(lone, "model.safetensors"))
    expect_refused(store, lone, "fifo/lone:v1", EXIT_INVALID, ["model.safetensors", "FIFO"])
    # A GGUF name or a split GGUF model whose split is a FIFO: refused alike.
    gguf_fifo = os.path.join(work, "pipe.gguf")
    os.mkfifo(gguf_fifo)
    expect_refused(store, gguf_fifo, "fifo/gguf:v1", EXIT_INVALID, [gguf_fifo, "FIFO"])
    check(snapshot(store) == before, "a refused FIFO import changed the store")

    # --- symbolic link loops -----------------------------------------------
    loop = os.path.join(work, "loop.safetensors")
    os.symlink(loop, loop)
    expect_refused(store, loop, "loop:v1", EXIT_INVALID, [loop, "symbolic link loop"])
    sharded2 = make_model(os.path.join(work, "sharded2"), 2, seed=3, tensors=6, shards=2)
    shard2 = sorted(f for f in os.listdir(sharded2) if f.endswith(".safetensors"))[0]
    os.unlink(os.path.join(sharded2, shard2))
    os.symlink(shard2, os.path.join(sharded2, shard2))
    expect_refused(store, sharded2, "loop/sharded:v1", EXIT_INVALID, [shard2])
    check(snapshot(store) == before, "a refused symlink-loop import changed the store")

    # --- thread counts ------------------------------------------------------
    for n in ("1000000", "257", "-1"):
        t0 = time.monotonic()
        r = store.run("import", good, "threads:v1", "--threads", n, timeout=30)
        check(r.rc == EXIT_INVALID and "256" in r.err, "import --threads " + n + ": " + r.describe())
        check(time.monotonic() - t0 < 20, f"import --threads {n} took too long")
        r = store.run("verify", "--threads", n, timeout=30)
        check(r.rc == EXIT_INVALID and "256" in r.err, "verify --threads " + n + ": " + r.describe())
    store.ok("import", good, "threads:v1", "--threads", "256")
    store.ok("rm", "threads:v1")
    before = snapshot(store)

    rc, out = run_c_api("threads", store.root, 100000)
    check(rc == PSTORE_ERR_INVALID_ARGUMENT and "256" in out,
          f"pstore_store_open with loader_threads 100000: status {rc}, {out!r}")
    rc, out = run_c_api("nothreads", store.root, 256)
    check(1 <= rc <= 11 and "cannot start loader thread" in out and "terminate" not in out,
          f"pstore_store_open with threads that cannot start: status {rc}, {out!r}")
    log(f"loader threads that cannot start: status {rc}: {out.strip()}")

    # --- a malformed file into a missing store path ---------------------------
    bad = os.path.join(work, "bad.safetensors")
    with open(bad, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    missing = os.path.join(work, "no-store-yet")
    rc, out = run_c_api("import", missing, bad)
    check(rc == PSTORE_ERR_INVALID_ARGUMENT, f"pstore_import_file of a bad file: {rc} {out!r}")
    check(not os.path.exists(missing), f"pstore_import_file of a bad file created {missing}")
    r = Store(missing).run("import", bad, "bad:v1")
    check(r.rc == EXIT_INVALID, "import of a bad file into a missing store: " + r.describe())
    check(not os.path.exists(missing), f"`pstore import` of a bad file created {missing}")

    # --- SIGTERM while waiting for the writer lock ----------------------------
    lock = os.open(os.path.join(store.root, "LOCK"), os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    p = store.popen("import", good, "waiting:v1", "--wait")
    # SIGTERM once the command has its handler (SigCgt in /proc), however
    # slowly it starts, and has had time to reach the lock.
    until = time.monotonic() + 60
    while time.monotonic() < until and p.poll() is None and not catches_sigterm(p.pid):
        time.sleep(0.02)
    time.sleep(0.5)
    check(p.poll() is None, "import --wait did not wait for the held lock")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    os.close(lock)
    check(p.returncode == EXIT_INTERRUPTED,
          f"SIGTERM of an import waiting for the lock exited {p.returncode}: {err}")
    check(snapshot(store) == before, "an interrupted import changed the store")

    # --- export meets a missing blob file --------------------------------------
    gen = os.path.join(store.root, "gen", "%010d" % store.stat()["generation"])
    blobs = glob.glob(os.path.join(gen, "*.blob"))
    check(blobs, f"no blob files in {gen}")
    for b in blobs:
        os.unlink(b)
    out_path = os.path.join(work, "out.safetensors")
    r = store.run("export", "good:v1", out_path)
    check(r.rc == EXIT_CORRUPT, "export of a model whose blob file is missing: " + r.describe())
    check("good:v1" in r.err and "missing" in r.err, "the message should name the model and say "
          "the file is missing: " + r.describe())
    check(not os.path.exists(out_path), "a failed export left a file behind")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        c_api_child(*sys.argv[2:6])
    run_test("store_inputs", body)
