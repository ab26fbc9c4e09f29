#!/usr/bin/env python3
"""Bad input: malformed safetensors models are refused and change nothing.

The malformed files come from scripts/make_bad_safetensors.py (every case it
prints), plus cases made here for what is not a malformed file but a missing
one: a source path that does not exist, and an index file that does not exist.
Each import must
  - exit 4 (invalid input) for a malformed file, 3 (not found) for a missing
    source;
  - print one clear message on stderr that names the file (its path or the
    case's file name) and says what is wrong;
  - leave the store exactly as it was: `ls --json` (names, digests) and
    `stat --json` (names, models, unique/stored bytes, chunk count, logical
    bytes) unchanged, no new generation published, and `verify` still passes.
The generator's valid.safetensors must import, as a check that the cases are
refused for their defect and not for some other reason.

Environment: PSTORE_BIN, MAKE_MODEL, BAD_SAFETENSORS (the generator script).
"""
import os
import sys

from harness import (EXIT_INVALID, EXIT_NOT_FOUND, Store, check, env_path, log, make_model,
                     run_cmd, run_test, tree_sha256)

STAT_KEYS = ("names", "models", "logical_bytes", "unique_bytes", "stored_bytes", "chunks")

# Words that tell what is wrong, at least one of which a message must hold.
PROBLEM_WORDS = ("header", "json", "dtype", "field", "shape", "offset", "tensor", "shard",
                 "weight_map", "index", "bytes", "missing", "no such", "not ", "must", "overlap",
                 "gap", "duplicate", "empty", "overflow", "dimension", "metadata", "utf",
                 "exceeds", "past the end", "trailing", "negative", "integer", "64 bits")


def snapshot(store):
    ls = {n: e["digest"] for n, e in store.ls().items()}
    st = store.stat()
    return ls, {k: st[k] for k in STAT_KEYS}, st["generation"]


def body(work):
    gen_script = os.environ.get("BAD_SAFETENSORS") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "make_bad_safetensors.py")
    check(os.path.isfile(gen_script), f"the malformed-file generator {gen_script} is missing")
    bad = os.path.join(work, "bad")
    p = run_cmd([sys.executable, gen_script, bad], timeout=600)
    check(p.returncode == 0, f"{gen_script} failed: {p.stderr}")
    cases = [c for c in p.stdout.split() if c]
    check(len(cases) >= 20, f"the generator made only {len(cases)} cases: {cases}")
    check(os.path.isfile(os.path.join(bad, "valid.safetensors")),
          "the generator wrote no valid.safetensors")

    store = Store(os.path.join(work, "store"))
    src = make_model(os.path.join(work, "good.safetensors"), 4, seed=3, tensors=8, dtype="mixed")
    store.ok("import", src, "good:v1")
    sharded = make_model(os.path.join(work, "good-sharded"), 4, seed=4, tensors=8, shards=2)
    store.ok("import", sharded, "good/sharded:v1")

    # (case, path to import, expected exit code, words of which the message names one)
    todo = []
    for c in cases:
        path = os.path.join(bad, c)
        if not os.path.isdir(path):
            path += ".safetensors"
        check(os.path.exists(path), f"generator printed case {c} but wrote no {path}")
        todo.append((c, path, EXIT_INVALID))
    todo.append(("no_such_file", os.path.join(work, "nope.safetensors"), EXIT_NOT_FOUND))
    todo.append(("no_such_index", os.path.join(work, "nope", "model.safetensors.index.json"),
                 EXIT_NOT_FOUND))
    check(any("missing_shard" in c for c, _, _ in todo),
          "no case of a sharded index naming a missing shard")

    before = snapshot(store)
    failures = []
    for case, path, want in todo:
        r = store.run("import", path, f"bad/{case}:v1")
        err = r.err.strip()
        problems = []
        if r.rc != want:
            problems.append(f"exit {r.rc}, want {want}")
        if r.out.strip():
            problems.append(f"printed on stdout: {r.out.strip()[:200]!r}")
        if not err:
            problems.append("no message on stderr")
        elif len(err) > 2000 or err.count("\n") > 3:
            problems.append("message is not one clear line")
        else:
            base = os.path.basename(path.rstrip("/"))
            if path not in err and base not in err and case not in err:
                problems.append("message does not name the file")
            if not any(w in err.lower() for w in PROBLEM_WORDS):
                problems.append("message does not say what is wrong")
        after = snapshot(store)
        if after != before:
            problems.append(f"store changed: before {before}, after {after}")
        log(f"{case}: exit {r.rc}: {err[:160]}")
        if problems:
            failures.append(f"{case} ({path}): {'; '.join(problems)}; stderr {err[:300]!r}")
    store.verify_ok("after the malformed imports")
    check(not failures, f"{len(failures)} of {len(todo)} cases wrong:\n  " + "\n  ".join(failures))

    # Refused leaves nothing behind that a later compact would have to remove.
    r = store.ok("compact", json_out=True).json()
    check(r["chunks_removed"] == 0 and r["manifests_removed"] == 0,
          f"the refused imports left chunks or manifests behind: {r}")

    # The cases were refused for their defect: the well-formed sibling imports.
    valid = os.path.join(bad, "valid.safetensors")
    store.ok("import", valid, "bad/valid:v1")
    store.export_matches("bad/valid:v1", tree_sha256(valid), work)
    store.export_matches("good:v1", tree_sha256(src), work)
    store.export_matches("good/sharded:v1", tree_sha256(sharded), work)
    store.verify_ok()
    log(f"{len(todo)} malformed or missing sources refused, store unchanged")


if __name__ == "__main__":
    run_test("store_bad_input", body)
