#!/usr/bin/env python3
"""Tables in place: a process opening a resident model reads its tensor table
and layout where the segment holds them, checked once. A byte flipped in
either (by another process, in the shared-memory object itself) makes the
next process's open fail with a corruption error naming the segment and what
to do, never a crash or a wrong tensor; with the byte put back, processes
open the model resident again and get every byte right without loading.
A reader with check_shared uses its own tables, so the damage does not reach
it at all."""

import glob
import json
import os
import random
import struct

from harness import Store, check, log, make_model, run_test, at_exit, run_cmd, env_path
from pager_harness import Worker, drop_segments

ROUNDS = 24

# SegmentHeader (pager/segment.h): the offsets and lengths of the layout and
# the tensor table.
LAYOUT_OFF, TABLES_OFF = 104, 120


def segment_of(store):
    with open(os.path.join(store.root, "ID")) as f:
        store_id = f.read().strip()
    names = [n for n in glob.glob(f"/dev/shm/pstore-{store_id}-*") if "-L" in n]
    check(len(names) == 1, f"expected one segment of the store, found {names}")
    return names[0]


def region(path, at):
    with open(path, "rb") as f:
        f.seek(at)
        return struct.unpack("<QQ", f.read(16))


def flip(path, offset, bit):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ (1 << bit)]))


def scan(store, src, check_shared=False):
    """Runs a scan worker to the end; returns (exit code, last JSON line)."""
    argv = [env_path("PAGER_WORKER"), store.root, "m:1", src, "scan"]
    if check_shared:
        argv.append("--check")
    p = run_cmd(argv, timeout=300)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    return p.returncode, (json.loads(lines[-1]) if lines else {}), p.stderr


def body(work):
    store = Store(os.path.join(work, "store"))
    src = make_model(os.path.join(work, "m.safetensors"), mb=8, seed=5, tensors=300)
    store.ok("import", src, "m:1")
    at_exit(lambda: drop_segments(store))
    Worker(store.root, "m:1", src, "load").finish()  # resident from here on
    seg = segment_of(store)
    layout = region(seg, LAYOUT_OFF)
    tables = region(seg, TABLES_OFF)
    log(f"segment {seg}: layout {layout[1]} bytes at {layout[0]}, "
        f"tensor table {tables[1]} bytes at {tables[0]}")
    rng = random.Random(13)
    for i in range(ROUNDS):
        what, (off, length) = ("tensor table", tables) if i % 3 else ("layout", layout)
        at = off + rng.randrange(length)
        bit = rng.randrange(8)
        flip(seg, at, bit)
        rc, last, err = scan(store, src)
        check(rc == 1, f"round {i}: flipping byte {at - off} of the {what}: exit {rc} "
                       f"(expected 1, an error; negative is a signal) {err[-400:]}")
        msg = last.get("error", "")
        check(last.get("ok") is False and "pstore_model_open" in msg and "corrupt" in msg.lower()
              and what in msg and "pstore ps --gc" in msg and os.path.basename(seg) in msg,
              f"round {i}: flipping byte {at - off} of the {what} gave {last}")
        if i % 4 == 0:
            # A reader that checks what its peers loaded keeps its own tables.
            rc, last, err = scan(store, src, check_shared=True)
            check(rc == 0 and last.get("mismatches") == 0 and last.get("errors") == 0,
                  f"round {i}: a check_shared reader with a damaged {what}: {last} {err[-400:]}")
        flip(seg, at, bit)
    log(f"{ROUNDS} flipped bytes each refused with a corruption error naming the segment")
    rc, last, err = scan(store, src)
    check(rc == 0 and last.get("mismatches") == 0 and last.get("errors") == 0,
          f"with the bytes put back: {last} {err[-400:]}")
    check(last.get("bytes_decoded", 1) == 0, f"the model was loaded again: {last}")
    group_mode(store, src, seg)


def group_mode(store, src, seg):
    """In group mode (the segment group-writable) a reader copies the table and
    layout before checking them: a member that overwrites both after the reader
    opened the model changes nothing the reader follows, and the reader gets
    every tensor right (read in place, such offsets would steer its loads and
    acquires anywhere in its memory)."""
    store.ok("config", "--group", "54322")
    check(os.stat(seg).st_mode & 0o020, f"{seg} is not group-writable after config --group")
    drop_segments(store)  # so that the reader loads: its writes follow the layout
    Worker(store.root, "m:1", src, "load").finish()
    seg = segment_of(store)
    check(os.stat(seg).st_mode & 0o020, f"{seg} is not group-writable")
    w = Worker(store.root, "m:1", src, "scan", arg="--pause")
    check(w.read_line().get("opened") is True, "the reader did not open the model")
    saved = {}
    with open(seg, "r+b") as f:
        for name, at in (("layout", LAYOUT_OFF), ("tensor table", TABLES_OFF)):
            off, length = region(seg, at)
            f.seek(off)
            saved[off] = f.read(length)
            f.seek(off)
            f.write(bytes([0xFF]) * length)  # every offset, count and index at its largest
    try:
        w.proc.stdin.write("go\n")
        w.proc.stdin.flush()
        try:
            out, err = w.proc.communicate(timeout=300)
        except UnicodeDecodeError:  # it printed bytes of the overwritten table
            w.proc.kill()
            w.proc.wait()
            out, err = "", "the reader printed the overwritten table's bytes"
    finally:
        with open(seg, "r+b") as f:
            for off, b in saved.items():
                f.seek(off)
                f.write(b)
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    last = lines[-1] if lines else {}
    check(w.proc.returncode == 0 and last.get("mismatches") == 0 and last.get("errors") == 0,
          f"a group-mode reader whose segment's tables were overwritten after it opened "
          f"the model: exit {w.proc.returncode} (negative is a signal), {last} {err[-400:]}")
    log("group mode: tables overwritten after open; the reader used its own copy, "
        "every tensor right")


if __name__ == "__main__":
    run_test("pager_tables", body)
