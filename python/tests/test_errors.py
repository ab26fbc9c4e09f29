"""Errors as Python exceptions with pstore's message: a missing model, a
corrupted chunk (bytes flipped in the store's blob file on disk) and a full
/dev/shm (a 1 MiB tmpfs mounted over it in a private mount namespace). None
of them may lose what is stored."""

import gc
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import pstore
from conftest import REPO, SafetensorsFile, run_pstore, write_safetensors


def test_missing_model_and_store(small_model, scratch):
    root, ref, _ = small_model
    with pstore.Store(root) as store:
        with pytest.raises(pstore.NotFound) as e:
            store.open("ghost:v1")
        assert "ghost" in str(e.value)
    with pytest.raises(pstore.NotFound, match="nowhere"):
        pstore.Store(os.path.join(scratch, "nowhere"))


def corrupted_model(scratch, ref, seed, where):
    """A fresh store holding ref, 4 tensors w.0..w.3 of 1 MiB of random bytes,
    with one byte flipped at each fraction of where of its blob file. Returns
    (store path, source file)."""
    work = tempfile.mkdtemp(prefix="corrupt-", dir=scratch)
    rng = np.random.default_rng(seed)
    tensors = [(f"w.{i}", "F16", (512, 1024), rng.integers(0, 256, 1 << 20, np.uint8).tobytes())
               for i in range(4)]
    src = os.path.join(work, "m.safetensors")
    write_safetensors(src, tensors)
    root = os.path.join(work, "store")
    pstore.import_file(src, ref, store=root)
    blobs = glob.glob(os.path.join(root, "db", "*.blob"))
    assert len(blobs) == 1, blobs
    size = os.path.getsize(blobs[0])
    with open(blobs[0], "r+b") as f:
        for fraction in where:
            f.seek(int(size * fraction))
            b = f.read(1)
            f.seek(int(size * fraction))
            f.write(bytes([b[0] ^ 0x5A]))
    return root, src


def test_corrupted_chunk_raises_corruption_naming_model_and_tensor(scratch):
    # One byte in each tenth of the blob file's middle.
    root, src = corrupted_model(scratch, "victim:1", 11, [k / 10 for k in range(1, 10)])
    st = SafetensorsFile(src)
    errors = []
    with pstore.Store(root) as store, store.open("victim:1") as m:
        for name in m.names():
            try:
                a = m.numpy(name)
            except pstore.Corruption as e:
                errors.append((name, str(e)))
                assert e.status == 2 and e.status_name == "corruption"
                continue
            assert a.tobytes() == st.raw(name), f"{name}: wrong bytes returned"
        for name in m.names():  # the torch path raises the same way
            if name in dict(errors):
                with pytest.raises(pstore.Corruption):
                    m.torch(name)
    assert errors, "no corruption found after flipping 9 bytes of the blob file"
    for name, msg in errors:
        assert name in msg and "victim" in msg and "chunk" in msg, msg
    # A state_dict, which loads while it makes its views, raises the same way,
    # and leaves no error behind for a later wait.
    for framework in ("torch", "numpy"):
        with pstore.Store(root) as store, store.open("victim:1") as m:
            with pytest.raises(pstore.Corruption) as e:
                m.state_dict(framework=framework)
            assert "victim" in str(e.value) and "chunk" in str(e.value), str(e.value)
            assert any(name in str(e.value) for name, _ in errors), str(e.value)
            m.wait()
            del e  # its traceback holds the frames of the failed call
            gc.collect()
            assert m.stats()["pinned_bytes"] == 0, framework


def test_state_dict_error_after_good_tensors_leaves_nothing_pinned(scratch):
    # Only the last tensor's chunks are corrupted: state_dict acquires the
    # tensors before it, then raises; once the exception is gone nothing of the
    # model stays pinned.
    root, _ = corrupted_model(scratch, "tail:1", 12, [0.95])  # in w.3's bytes
    for framework in ("torch", "numpy"):
        run_pstore(root, "ps", "--gc-all")
        with pstore.Store(root) as store, store.open("tail:1") as m:
            with pytest.raises(pstore.Corruption, match=r"w\.3") as e:
                m.state_dict(framework=framework)
            assert "tail" in str(e.value), str(e.value)
            assert m.stats()["acquires"] >= 4, (framework, "an error before w.3 was acquired")
            m.wait()
            del e  # its traceback holds the frames of the failed call
            gc.collect()
            assert m.stats()["pinned_bytes"] == 0, framework
    # Prefetch errors are the handle's (docs/python.md): a state_dict of good
    # tensors raises the error of a prefetch started before it on the same
    # Model, and the wait that follows has nothing left to raise.
    run_pstore(root, "ps", "--gc-all")
    with pstore.Store(root) as store, store.open("tail:1") as m:
        m.prefetch(["w.3"])
        with pytest.raises(pstore.Corruption, match=r"w\.3"):
            m.state_dict(prefix="w.0")
        m.wait()
        with store.open("tail:1") as other:  # a Model of its own keeps its errors apart
            other.prefetch(["w.3"])
            assert list(m.state_dict(prefix="w.0")) == ["w.0"]
            with pytest.raises(pstore.Corruption, match=r"w\.3"):
                other.wait()


FULL_SHM = textwrap.dedent("""
    import sys, pstore
    root, ref = sys.argv[1], sys.argv[2]
    try:
        m = pstore.Store(root).open(ref)
        for n in m.names():
            m.numpy(n)
        print("NO ERROR")
    except pstore.NoSpace as e:
        print("NoSpace:", e)
""")


def test_full_dev_shm_raises_no_space(small_model):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a small tmpfs over /dev/shm")
    root, ref, src = small_model
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "python")
    shell = ('mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$0" -c "$1" "$2" "$3"')
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", shell,
                        sys.executable, FULL_SHM, root, ref], capture_output=True, text=True,
                       timeout=300, env=env)
    if p.returncode != 0 and "mount" in p.stderr and "NoSpace" not in p.stdout:
        pytest.skip(f"cannot mount a tmpfs over /dev/shm here: {p.stderr.strip()[-300:]}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "NoSpace:" in p.stdout and "/dev/shm" in p.stdout, p.stdout + p.stderr
    with pstore.Store(root) as store, store.open(ref) as m:  # nothing lost
        st = SafetensorsFile(src)
        assert all(m.numpy(n).tobytes() == st.raw(n) for n in m.names())


def _stat(root):
    import json
    return json.loads(run_pstore(root, "--json", "stat").stdout)


def test_progress_callback_stops_import_and_store_is_unchanged(scratch):
    work = tempfile.mkdtemp(prefix="progress-", dir=scratch)
    rng = np.random.default_rng(12)
    small = os.path.join(work, "small.safetensors")
    write_safetensors(small, [("a", "U8", (4096,), rng.integers(0, 256, 4096, np.uint8).tobytes())])
    big = os.path.join(work, "big.safetensors")
    write_safetensors(big, [(f"w.{i}", "U8", (4 << 20,),
                             rng.integers(0, 256, 4 << 20, np.uint8).tobytes()) for i in range(16)])
    root = os.path.join(work, "store")
    seen = []
    pstore.import_file(small, "small:1", store=root, progress=lambda d, t: seen.append((d, t)) or 1)
    assert seen and seen[-1][0] == seen[-1][1] == 4096, seen
    before = _stat(root)
    calls = []
    with pytest.raises(pstore.Aborted, match="big:1"):
        pstore.import_file(big, "big:1", store=root, threads=1,
                           progress=lambda d, t: calls.append((d, t)) and False)
    assert len(calls) == 1, calls
    # An exception in the callback stops the import and comes out here.
    with pytest.raises(ZeroDivisionError):
        pstore.import_file(big, "big:2", store=root, progress=lambda d, t: 1 / 0)
    run_pstore(root, "tag", "small:1", "small:2")  # publishes the live database
    after = _stat(root)
    assert (after["chunks"], after["stored_bytes"]) == (before["chunks"], before["stored_bytes"])
    assert '"chunks_removed":0' in run_pstore(root, "--json", "compact").stdout.replace(" ", "")
    run_pstore(root, "verify")
    with pstore.Store(root) as s:
        with pytest.raises(pstore.NotFound):
            s.open("big:1")


def test_check_shared_refuses_bytes_changed_in_shared_memory(scratch):
    """A process that does not trust its peers (Store(check_shared=True)) gets
    Corruption, never wrong bytes, when a tensor's bytes in the shared segment
    were changed after another process loaded them; a trusting process sees the
    changed bytes, which shows the change reached the segment."""
    from conftest import store_id
    work = tempfile.mkdtemp(prefix="check-shared-", dir=scratch)
    rng = np.random.default_rng(5)
    tensors = [(f"w.{i}", "U8", (1 << 18,), rng.integers(0, 256, 1 << 18, np.uint8).tobytes())
               for i in range(3)]
    src = os.path.join(work, "m.safetensors")
    write_safetensors(src, tensors)
    root = os.path.join(work, "store")
    pstore.import_file(src, "shared:1", store=root)
    st = SafetensorsFile(src)
    with pstore.Store(root) as store, store.open("shared:1") as m:
        for name in m.names():  # loads every tensor into the host's segment
            assert m.numpy(name).tobytes() == st.raw(name)
    sid = store_id(root)
    segs = [s for s in glob.glob(f"/dev/shm/pstore-{sid}-*") if not s.endswith("-budget")]
    target = st.raw("w.1")
    changed = 0
    for seg in segs:
        with open(seg, "r+b") as f:
            data = f.read()
            at = data.find(target[:4096])
            if at >= 0:
                f.seek(at + 1000)
                f.write(bytes([data[at + 1000] ^ 0xFF]))
                changed += 1
    assert changed == 1, f"w.1's bytes found in {changed} segments of {segs}"
    with pstore.Store(root, check_shared=True) as store, store.open("shared:1") as m:
        with pytest.raises(pstore.Corruption) as e:
            m.numpy("w.1")
        assert "w.1" in str(e.value)
        assert m.numpy("w.0").tobytes() == st.raw("w.0")  # untouched tensors still served
        out = np.empty(1 << 18, np.uint8)
        m.copy_into("w.1", out)  # the copy is checked and decoded again from the store
        assert out.tobytes() == target
    with pstore.Store(root) as store, store.open("shared:1") as m:
        assert m.numpy("w.1").tobytes() != target, "the trusting reader should see the change"


def test_acquire_many_failing_part_way_holds_nothing(scratch):
    # pstore_tensor_acquire_many through the C API (ctypes): w.0..w.2 are
    # acquired, w.3's chunk fails its check; the call returns CORRUPTION, its
    # message starts with the tensor's quoted name and index, every data[i]
    # is NULL, and none of the tensors stays acquired.
    import ctypes
    from pstore._capi import lib
    import re
    root, _ = corrupted_model(scratch, "part:1", 12, [0.95])  # in w.3's bytes
    run_pstore(root, "ps", "--gc-all")
    store, model = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.pstore_store_open(root.encode(), None, ctypes.byref(store)) == 0
    try:
        assert lib.pstore_model_open(store, b"part:1", ctypes.byref(model)) == 0
        indices = (ctypes.c_size_t * 4)(0, 1, 2, 3)
        data = (ctypes.c_void_p * 4)(1, 1, 1, 1)
        st = lib.pstore_tensor_acquire_many(model, indices, 4, data)
        msg = lib.pstore_last_error().decode()
        assert lib.pstore_status_string(st) == b"corruption", (st, msg)
        named = re.match(r"tensor 'w\.(\d)' \(index (\d)\): ", msg)
        assert named and named[1] == named[2] and named[1] != "0", msg
        assert "part" in msg and "chunk" in msg, msg
        assert list(data) == [None] * 4
        for i in range(4):
            assert lib.pstore_tensor_release(model, i) != 0, f"w.{i} stayed acquired"
        lib.pstore_model_close(model)
    finally:
        lib.pstore_store_close(store)


def test_a_library_without_the_package_functions_is_a_clear_import_error(scratch):
    # PSTORE_LIB naming a shared library that lacks functions the package
    # declares (as an older libpstore lacks the newer ones): importing pstore
    # raises its ImportError naming the library, the function and what to do,
    # not ctypes' AttributeError.
    from conftest import run_python
    work = tempfile.mkdtemp(prefix="oldlib-", dir=scratch)
    c = os.path.join(work, "old.c")
    so = os.path.join(work, "libold.so")
    with open(c, "w") as f:
        f.write("int pstore_something_else(void) { return 0; }\n")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler to build a library without pstore's functions")
    subprocess.run([cc, "-shared", "-fPIC", "-o", so, c], check=True, capture_output=True)
    p = run_python("import pstore", env={"PSTORE_LIB": so})
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: pstore: "), p.stderr
    assert so in last and "pstore_status_string" in last and "PSTORE_LIB" in last, last


def test_an_interrupt_right_after_the_acquires_leaves_nothing_pinned(small_model):
    # A KeyboardInterrupt that lands right after pstore_tensor_acquire_many
    # returned, before the group takes the acquires (raised here by a trace
    # function at the line of the package's code that hands them to the
    # group) must not leave the acquired tensors pinned.
    import linecache
    import pstore._model as pm
    root, ref, _ = small_model
    code = pm.Model._views.__code__
    with pstore.Store(root) as store, store.open(ref) as m:
        for framework in ("numpy", "torch"):
            state = {"fired": False}

            def local(frame, event, arg):
                if event == "line" and not state["fired"]:
                    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
                    if "group.indices = " in line:
                        state["fired"] = True
                        raise KeyboardInterrupt
                return local

            def trace(frame, event, arg):
                return local if frame.f_code is code else None

            sys.settrace(trace)
            try:
                with pytest.raises(KeyboardInterrupt):
                    m.state_dict(framework=framework)
            finally:
                sys.settrace(None)
            assert state["fired"], framework
            gc.collect()
            assert m.stats()["pinned_bytes"] == 0, framework
            assert len(m.state_dict(framework=framework)) == len(m)
