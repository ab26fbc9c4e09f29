#!/usr/bin/env python3
"""Time to a full state_dict of zero-copy torch tensors, every page touched:
pstore's Python package against the way Python loads safetensors today (mmap
of the file, np.frombuffer at each tensor's offsets, torch.from_numpy, as the
safetensors library does), baselines in the same run.

  /usr/bin/python3 bench/python_bench.py [--runs N] [--llm-gb G] WORK CORPUS_COMBINED

Models: CORPUS_COMBINED (the corpus as one safetensors file) and a synthetic
LLM-shaped BF16 model of about G GB (default 1), written under WORK. Each
model is imported into a store under WORK. Every timed run is a fresh
process (after its imports), timed from before open to the last page read:
  - mmap:            the file in the OS cache (read once before);
  - mmap uncached:   the file dropped from the OS cache before each run
                     (posix_fadvise DONTNEED on that file only), so every page
                     is read from the disk;
  - pstore resident: the model resident in shared memory (a second service
                     starting);
  - pstore cold:     the model's shared memory removed (`pstore ps --gc-all`)
                     before each run, the store's files in the OS cache.
Prints a Markdown table of medians. Needs PSTORE_LIB and PSTORE_BIN (or a
build/ beside this folder).
"""

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CHILD = r'''
import ctypes, json, mmap, struct, sys, time, warnings
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
import pstore
mode, arg, ref = sys.argv[2], sys.argv[3], sys.argv[4]

def touch(t):
    n = t.element_size() * t.numel()
    if n == 0:
        return 0
    b = np.frombuffer((ctypes.c_char * n).from_address(t.data_ptr()), np.uint8)
    return int(b[::4096].sum()) + int(b[-1])

NP = {"F16": "<f2", "F32": "<f4", "BF16": "<i2", "U8": "u1", "I8": "i1", "I32": "<i4",
      "I64": "<i8", "F64": "<f8", "BOOL": "?", "I16": "<i2"}
t0 = time.perf_counter()
if mode == "mmap":
    f = open(arg, "rb")
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    (n,) = struct.unpack("<Q", mm[:8])
    header = json.loads(mm[8:8 + n])
    header.pop("__metadata__", None)
    sd = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only buffer
        for name, t in header.items():
            a, b = t["data_offsets"]
            dt = np.dtype(NP[t["dtype"]])
            arr = np.frombuffer(mm, dt, (b - a) // dt.itemsize, 8 + n + a).reshape(t["shape"])
            x = torch.from_numpy(arr)
            sd[name] = x.view(torch.bfloat16) if t["dtype"] == "BF16" else x
else:
    m = pstore.Store(arg).open(ref)
    sd = m.state_dict()
s = sum(touch(t) for t in sd.values())
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "tensors": len(sd),
                  "bytes": sum(t.element_size() * t.numel() for t in sd.values())}))
'''


def write_llm(path, gb):
    """A Llama-shaped BF16 model: embeddings, layers of attention and MLP
    matrices, norms, lm_head; weights ~ N(0, 0.02) rounded to BF16."""
    import numpy as np
    hidden, inter, vocab = 2048, 5632, 32000
    per_layer = (4 * hidden * hidden + 3 * hidden * inter + 2 * hidden) * 2
    layers = max(1, int((gb * 1e9 - 2 * vocab * hidden * 2) // per_layer))
    shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (hidden,)),
                   (p + "self_attn.q_proj.weight", (hidden, hidden)),
                   (p + "self_attn.k_proj.weight", (hidden, hidden)),
                   (p + "self_attn.v_proj.weight", (hidden, hidden)),
                   (p + "self_attn.o_proj.weight", (hidden, hidden)),
                   (p + "post_attention_layernorm.weight", (hidden,)),
                   (p + "mlp.gate_proj.weight", (inter, hidden)),
                   (p + "mlp.up_proj.weight", (inter, hidden)),
                   (p + "mlp.down_proj.weight", (hidden, inter))]
    shapes += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    header, off = {}, 0
    for name, shape in shapes:
        nb = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(1)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, shape in shapes:
            w = (rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * 0.02)
            f.write((w.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    os.replace(path + ".tmp", path)


def run_child(mode, arg, ref, env):
    p = subprocess.run([sys.executable, "-c", CHILD, os.path.join(REPO, "python"), mode, arg,
                        ref], capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"{mode} run failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work")
    ap.add_argument("combined")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--llm-gb", type=float, default=1.0)
    args = ap.parse_args()
    env = dict(os.environ)
    env.setdefault("PSTORE_LIB", os.path.join(REPO, "build", "libpstore.so"))
    pstore_bin = env.get("PSTORE_BIN", os.path.join(REPO, "build", "pstore"))
    os.makedirs(args.work, exist_ok=True)
    llm = os.path.join(args.work, f"llm-{args.llm_gb:g}g-bf16.safetensors")
    if not os.path.exists(llm):
        write_llm(llm, args.llm_gb)
    store = os.path.join(args.work, "store")
    models = [("corpus (8317 tensors)", args.combined, "corpus:1"),
              ("LLM-shaped BF16", llm, "llm:1")]
    rows = []
    for label, path, ref in models:
        r = subprocess.run([pstore_bin, "--store", store, "import", path, ref],
                           capture_output=True, text=True)
        if r.returncode not in (0, 8):  # 8: already there from an earlier run
            raise SystemExit(f"import {path} failed: {r.stderr}")
        with open(path, "rb") as f:  # the file in the OS cache
            while f.read(1 << 24):
                pass
        res = {"mmap": [], "uncached": [], "resident": [], "cold": []}
        for _ in range(args.runs):
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            res["uncached"].append(run_child("mmap", path, ref, env))
            res["mmap"].append(run_child("mmap", path, ref, env))
            subprocess.run([pstore_bin, "--store", store, "ps", "--gc-all"], check=True,
                           capture_output=True)
            res["cold"].append(run_child("pstore", store, ref, env))
            res["resident"].append(run_child("pstore", store, ref, env))
        med = {k: statistics.median(x["seconds"] for x in v) for k, v in res.items()}
        nbytes = res["mmap"][0]["bytes"]
        rows.append((label, nbytes, res["mmap"][0]["tensors"], med))
    drop = subprocess.run([pstore_bin, "--store", store, "ps", "--gc-all"], capture_output=True)
    print("| model | tensors | MB | mmap, file cached | pstore resident | ratio | mmap, file "
          "uncached | pstore not resident (store cached) | ratio to uncached | ratio to cached |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, nbytes, n, med in rows:
        print(f"| {label} | {n} | {nbytes / 1e6:.1f} | {med['mmap'] * 1e3:.0f} ms | "
              f"{med['resident'] * 1e3:.0f} ms | {med['resident'] / med['mmap']:.2f} x | "
              f"{med['uncached'] * 1e3:.0f} ms | {med['cold'] * 1e3:.0f} ms | "
              f"{med['cold'] / med['uncached']:.2f} x | {med['cold'] / med['mmap']:.2f} x |")
    return 0 if drop.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
