#!/usr/bin/env python3
"""pstore's main job, end to end, on the default store: import a real model,
open it from several processes through the C API (each reads its own layers
and checks every byte against the source file), and print what it cost.

Run by scripts/demo.sh after the build. Python 3 standard library only.
"""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("PSTORE_BUILD", os.path.join(ROOT, "build"))
PSTORE = os.path.join(BUILD, "pstore")
READER = os.path.join(BUILD, "demo_reader")
CORPUS = os.environ.get("PSTORE_CORPUS", os.path.join(ROOT, "corpus"))
MODEL_FILE = "blazepose-heavy.safetensors"  # the corpus's largest model
REF = "demo/blazepose:heavy"
READERS = 4


def mb(b):
    return f"{b / 1e6:.1f} MB"


def run(*args, check=True):
    p = subprocess.run([PSTORE, *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit(f"pstore {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def pstore_json(*args):
    return json.loads(run(*args, "--json").stdout)


def main():
    if not os.path.isfile(os.path.join(CORPUS, "f", MODEL_FILE)):
        print(f"fetching the real-weights corpus into {CORPUS} ...", flush=True)
        subprocess.run([os.path.join(ROOT, "scripts", "fetch_corpus.sh"), CORPUS], check=True)
    src = os.path.join(CORPUS, "f", MODEL_FILE)

    print(f"\n== import {MODEL_FILE} into the store as {REF}")
    imp = pstore_json("import", src, REF, "--force")
    print(f"   {imp['tensors']} tensors, {mb(imp['raw_bytes'])} of weights in {imp['seconds']:.2f} s"
          f" ({'already in the store' if imp['unchanged'] else mb(imp['new_stored_bytes']) + ' written'})")
    info = pstore_json("info", REF)
    stat = pstore_json("stat")
    print(f"   store: {stat['store']}")

    # Start cold: drop shared memory nobody is using, so the readers load it.
    run("ps", "--gc-all")
    print(f"\n== {READERS} processes open {REF} through the C API, each reading a quarter of"
          " its layers and checking every byte against the source file")
    procs = [subprocess.Popen([READER, "", REF, src, str(i), str(READERS)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(READERS)]
    results = []
    for p in procs:
        line = p.stdout.readline()
        if not line:
            sys.exit(f"a reader failed: {p.stderr.read()}")
        results.append(json.loads(line))
    time.sleep(0.3)  # let the loaders give back their scratch memory
    pss = []
    for p in procs:
        with open(f"/proc/{p.pid}/smaps_rollup") as f:
            pss.append(next(int(l.split()[1]) * 1024 for l in f if l.startswith("Pss:")))
    ps = pstore_json("ps")
    seg = next((s for s in ps["segments"] if s["digest"] == info["digest"]), None)
    for p in procs:
        p.stdin.close()
        p.wait()
    bad = sum(r["bad"] for r in results)
    for r in sorted(results, key=lambda r: r["part"]):
        print(f"   reader {r['part']}: {r['tensors']:3d} tensors, {mb(r['bytes']):>8}, "
              f"opened in {r['open_ms']:.2f} ms, loaded in {r['load_ms']:.1f} ms, "
              f"decoded {mb(r['decoded_here']):>8} itself, "
              f"acquire p50 {r['acquire_p50_ns']:.0f} ns / p99 {r['acquire_p99_ns']:.0f} ns")
    held = sum(p - r["pss_before_kb"] * 1024 for p, r in zip(pss, sorted(results, key=lambda r: r["part"])))
    print(f"   every byte checked: {'all correct' if bad == 0 else str(bad) + ' tensors WRONG'}")

    print(f"\n== bench (size, load time and latency, with pread and mmap of the file in the same run)")
    bench = pstore_json("bench", REF, "--baseline", src, "--runs", "5")

    raw = info["raw_bytes"]
    print("\n== what it cost")
    print(f"   on disk          {mb(info['stored_bytes'])} stored for {mb(raw)} of weights "
          f"({info['stored_bytes'] / raw:.3f}); the file itself is {mb(os.path.getsize(src))}")
    if seg:
        print(f"   in memory        {mb(seg['resident_bytes'])} of shared memory, one copy for "
              f"{READERS} processes, decoded once ({mb(seg['load_bytes'])} decoded in all)")
    print(f"   memory held      {mb(held)} by the {READERS} readers together beyond what they held"
          f" before opening the model ({held / raw:.2f} x the model)")
    print(f"   open             {bench['open_s'] * 1e3:.2f} ms")
    print(f"   first tensor     {bench['first_tensor_s'] * 1e3:.2f} ms")
    print(f"   full load        {bench['full_load_s'] * 1e3:.1f} ms into shared memory; "
          f"pread of the file {bench['baseline_pread_s'] * 1e3:.1f} ms "
          f"(ratio {bench['full_load_over_pread']:.2f}), mmap+touch {bench['baseline_mmap_touch_s'] * 1e3:.1f} ms")
    print(f"   acquire latency  p50 {bench['acquire_p50_ns']:.0f} ns, p99 {bench['acquire_p99_ns']:.0f} ns"
          " (resident tensor)")
    print("\nSee `pstore --help`; `pstore ps` shows what is mapped now.")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
