#!/usr/bin/env python3
"""Every benchmark that carries a target, in one run, as one table: the target,
the figure (a median), met or not met, with the processor's name on top.
Each figure is a ratio against a baseline timed in the same run, so that a
shared, noisy machine moves both sides alike.

  python3 bench/targets.py [--runs N] [--skip NAME,...] WORK CORPUS

CORPUS is the real-weights corpus folder (scripts/fetch_corpus.sh): its f/ and
bf16/ sets and combined.safetensors (scripts/corpus_combine.py). WORK is a
scratch folder (stores and exported files are written there and removed).
Needs a Release build with the benchmarks (scripts/build.sh, which builds
build/bench/) and the `zstd` command. Parts, each skippable with --skip:

  pager    build/bench/pager_bench on the combined model (--cold: drops the OS
           cache, so run as root): full load warm and cold against pread of the
           file, a second process against mmap + touch of every page, acquire p99
  memory   eight C readers (build/demo_reader) each holding every tensor of the
           combined model pinned: growth of the host's memory (the sum of each
           reader's PSS minus what it held before opening the model) over the
           model's bytes
  import   `pstore import` of the combined file into an empty store: CPU time
           over wall time, and wall time over `zstd -3 -T2` of the same file
  export   `pstore export` of that model against `zstd -d` of a `zstd -3` copy;
           beside it, the time of copying the file and syncing it (dd
           conv=fdatasync): the disk's floor for a durable file of those bytes
  folder   each corpus set imported model by model, then `pstore compact`:
           the folder's disk use over its chunk frames (`pstore stat --json`)
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BUILD = os.environ.get("PSTORE_BUILD", os.path.join(REPO, "build"))
PSTORE = os.path.join(BUILD, "pstore")


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown processor"


def timed(cmd, **kw):
    """Runs cmd; returns (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def pstore(store, *args):
    p = subprocess.run([PSTORE, "--store", store, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"pstore {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p.stdout


class Table:
    def __init__(self):
        self.rows = []

    def add(self, part, figure, target, value, met, note=""):
        self.rows.append((part, figure, target, value, met, note))
        print(f"  {figure}: {value} (target {target}): {'met' if met else 'NOT MET'}"
              f"{' - ' + note if note else ''}", flush=True)

    def print(self, runs):
        print(f"\n### {cpu_name()}\n")
        print(f"`python3 bench/targets.py --runs {runs} WORK CORPUS`, medians of {runs}; "
              f"{os.cpu_count()} cores, load average at the end "
              f"{os.getloadavg()[0]:.1f}\n")
        print("| part | figure | target | measured | |")
        print("|---|---|---|---:|---|")
        for part, figure, target, value, met, note in self.rows:
            print(f"| {part} | {figure} | {target} | {value} | {'met' if met else '**not met**'}"
                  f"{' (' + note + ')' if note else ''} |")


def part_pager(t, work, corpus, runs):
    store = os.path.join(work, "pager-store")
    combined = os.path.join(corpus, "combined.safetensors")
    pstore(store, "import", combined, "corpus:all")
    bench = os.path.join(BUILD, "bench", "pager_bench")
    p = subprocess.run([bench, store, "corpus:all", combined, "--runs", str(runs), "--cold"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"pager_bench failed: {p.stderr[-2000:]}")
    out = p.stdout
    pstore(store, "ps", "--gc-all")

    def ratio(label):
        m = re.search(re.escape(label) + r"\s+\S+\s+\S+\s+([0-9.]+)", out)
        return float(m.group(1)) if m else None

    warm = ratio("full load, OS cache warm")
    cold = ratio("full load, OS cache cold")
    second = ratio("second process, every tensor")
    m = re.search(r"acquire, resident tensor\s+(\d+)ns\s+(\d+)ns", out)
    t.add("pager", "full load, OS cache warm / pread", "<= 1.0", f"{warm:.2f}", warm <= 1.0)
    if cold is None:
        t.add("pager", "full load, OS cache cold / pread", "<= 0.9", "n/a", False,
              "cannot drop the OS cache: run as root")
    else:
        t.add("pager", "full load, OS cache cold / pread", "<= 0.9", f"{cold:.2f}", cold <= 0.9)
    t.add("pager", "second process / mmap + touch", "<= 1.5", f"{second:.2f}", second <= 1.5)
    p99 = int(m.group(2))
    t.add("pager", "acquire p99, resident", "<= 2 us", f"{p99} ns", p99 <= 2000)


def part_memory(t, work, corpus, runs):
    store = os.path.join(work, "memory-store")
    combined = os.path.join(corpus, "combined.safetensors")
    pstore(store, "import", combined, "corpus:all")
    reader = os.path.join(BUILD, "demo_reader")
    growth = []
    model_bytes = 0
    for _ in range(runs):
        pstore(store, "ps", "--gc-all")
        procs = [subprocess.Popen([reader, store, "corpus:all", combined, "0", "1"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
        results = []
        for p in procs:
            line = p.stdout.readline()
            if not line:
                sys.exit(f"a reader failed: {p.stderr.read()[-2000:]}")
            results.append(json.loads(line))
        time.sleep(0.5)  # loaders give back their scratch memory
        held = 0
        for p, r in zip(procs, results):
            with open(f"/proc/{p.pid}/smaps_rollup") as f:
                pss = next(int(x.split()[1]) * 1024 for x in f if x.startswith("Pss:"))
            held += pss - r["pss_before_kb"] * 1024
            if r["bad"]:
                sys.exit("a reader found wrong bytes")
        for p in procs:
            p.stdin.close()
            p.wait()
        model_bytes = results[0]["model_bytes"]
        growth.append(held / model_bytes)
    pstore(store, "ps", "--gc-all")
    g = statistics.median(growth)
    per = (g - 1.0) * model_bytes / 8 / 1e6
    t.add("memory", "8 processes holding every tensor: PSS growth / model", "<= 1.1",
          f"{g:.2f}", g <= 1.1, f"{per:.1f} MB a process beyond the shared copy")


def part_import_export(t, work, corpus, runs, do_import, do_export):
    combined = os.path.join(corpus, "combined.safetensors")
    zst = os.path.join(work, "combined.safetensors.zst")
    walls, cpus, zw = [], [], []
    for r in range(runs):
        store = os.path.join(work, f"import-store-{r}")
        shutil.rmtree(store, ignore_errors=True)
        subprocess.run(["cat", combined], stdout=subprocess.DEVNULL, check=True)  # OS cache warm
        w, c = timed([PSTORE, "--store", store, "import", combined, "corpus:all"])
        walls.append(w)
        cpus.append(c)
        w, _ = timed(["zstd", "-3", "-T2", "-q", "-f", combined, "-o", zst])
        zw.append(w)
        if r + 1 < runs:
            shutil.rmtree(store)
    store = os.path.join(work, f"import-store-{runs - 1}")
    if do_import:
        busy = statistics.median(c / w for c, w in zip(cpus, walls))
        ratio = statistics.median(walls) / statistics.median(zw)
        t.add("import", "CPU time / wall time", ">= 1.8", f"{busy:.2f}", busy >= 1.8,
              f"{statistics.median(walls):.2f} s wall")
        t.add("import", "wall / zstd -3 -T2", "<= 1.0", f"{ratio:.2f}", ratio <= 1.0,
              f"zstd {statistics.median(zw):.2f} s")
    if do_export:
        ew, dw, fw = [], [], []
        out = os.path.join(work, "exported.safetensors")
        for _ in range(runs):
            w, _ = timed([PSTORE, "--store", store, "export", "corpus:all", out])
            ew.append(w)
            os.unlink(out)
            w, _ = timed(["zstd", "-d", "-q", "-f", zst, "-o", out])
            dw.append(w)
            os.unlink(out)
            # What the disk does at best for the same bytes made durable, as
            # export makes its file (zstd -d does not sync): a copy from the
            # OS cache, synced once at the end.
            w, _ = timed(["dd", f"if={combined}", f"of={out}", "bs=8M", "conv=fdatasync"])
            fw.append(w)
            os.unlink(out)
        ratio = statistics.median(ew) / statistics.median(dw)
        t.add("export", "wall / zstd -d", "<= 1.0", f"{ratio:.2f}", ratio <= 1.0,
              f"{statistics.median(ew):.2f} s against {statistics.median(dw):.2f} s; "
              f"a synced copy of the file {statistics.median(fw):.2f} s")
    shutil.rmtree(store, ignore_errors=True)
    os.unlink(zst)


def part_folder(t, work, corpus):
    for name in ("f", "bf16"):
        folder = os.path.join(corpus, name)
        files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
        if not files:
            continue
        store = os.path.join(work, f"folder-{name}")
        shutil.rmtree(store, ignore_errors=True)
        for f in files:
            pstore(store, "import", os.path.join(folder, f), f[:-len(".safetensors")] + ":1")
        pstore(store, "compact")
        s = json.loads(pstore(store, "stat", "--json"))
        over = s["disk_bytes"] / s["stored_bytes"] - 1.0
        t.add("folder", f"{name}/ folder over its chunk frames after compact", "<= 0.5%",
              f"{over * 100:.2f}%", over <= 0.005, f"{len(files)} models")
        shutil.rmtree(store)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work")
    ap.add_argument("corpus")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    if not os.path.isfile(os.path.join(a.corpus, "combined.safetensors")):
        sys.exit(f"no {a.corpus}/combined.safetensors: run scripts/fetch_corpus.sh and "
                 "scripts/corpus_combine.py first")
    os.makedirs(a.work, exist_ok=True)
    work = tempfile.mkdtemp(prefix="targets-", dir=a.work)
    t = Table()
    print(f"{cpu_name()}; runs {a.runs}; work {work}", flush=True)
    try:
        if "pager" not in skip:
            part_pager(t, work, a.corpus, a.runs)
        if "memory" not in skip:
            part_memory(t, work, a.corpus, a.runs)
        if not {"import", "export"} <= skip:
            part_import_export(t, work, a.corpus, a.runs, "import" not in skip,
                               "export" not in skip)
        if "folder" not in skip:
            part_folder(t, work, a.corpus)
    finally:
        for store in os.listdir(work):
            path = os.path.join(work, store)
            if os.path.isfile(os.path.join(path, "ID")):
                subprocess.run([PSTORE, "--store", path, "ps", "--gc-all"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    t.print(a.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
