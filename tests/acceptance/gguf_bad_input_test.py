#!/usr/bin/env python3
"""Bad input, GGUF: malformed GGUF files are refused and change nothing.

The malformed files come from tests/tools/make_bad_gguf.py (every case it
prints: bad magic and versions, counts and strings that overflow or exceed the
file, nested arrays, duplicate keys and names, general.alignment of the wrong
type or not a power of two, offsets unaligned, overlapping or past the end,
more than 4 dimensions, element counts that overflow, split models with a
missing or misnumbered split). Each import must
  - exit 4 (invalid input), or 3 (not found) for a split that is missing;
  - print one message on stderr that names the file and says what is wrong;
  - leave the store exactly as it was (`ls`, `stat`, the generation), with
    `verify` passing and nothing for `compact` to remove.
The generator's valid.gguf must import and export byte for byte, as a check
that the cases are refused for their defect.

Environment: PSTORE_BIN, MAKE_MODEL, BAD_GGUF (the generator script).
"""
import os
import sys

from harness import (EXIT_INVALID, EXIT_NOT_FOUND, Store, check, log, make_model, run_cmd,
                     run_test, tree_sha256)

STAT_KEYS = ("names", "models", "logical_bytes", "unique_bytes", "stored_bytes", "chunks")
PROBLEM_WORDS = ("magic", "version", "count", "claims", "cannot fit", "nested", "duplicate",
                 "empty", "alignment", "offset", "overlaps", "past the end", "dimension",
                 "overflows", "block", "split", "bool", "value type", "missing", "padding")


def snapshot(store):
    ls = {n: e["digest"] for n, e in store.ls().items()}
    st = store.stat()
    return ls, {k: st[k] for k in STAT_KEYS}, st["generation"]


def body(work):
    gen = os.environ.get("BAD_GGUF") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tools", "make_bad_gguf.py")
    bad = os.path.join(work, "bad")
    p = run_cmd([sys.executable, gen, bad], timeout=300)
    check(p.returncode == 0, f"{gen} failed: {p.stderr}")
    cases = p.stdout.split()
    check(len(cases) >= 25, f"the generator made only {len(cases)} cases: {cases}")

    store = Store(os.path.join(work, "store"))
    src = make_model(os.path.join(work, "good.safetensors"), 2, seed=3, tensors=8, dtype="mixed")
    store.ok("import", src, "good:v1")
    before = snapshot(store)
    failures = []
    for case in cases:
        path = os.path.join(bad, case + ".gguf")
        want = EXIT_INVALID
        if os.path.isdir(os.path.join(bad, case)):
            path = os.path.join(bad, case, "m-00001-of-00002.gguf")
            if case == "split_missing":
                want = EXIT_NOT_FOUND
        r = store.run("import", path, f"bad/{case}:v1")
        err = r.err.strip()
        problems = []
        if r.rc != want:
            problems.append(f"exit {r.rc}, want {want}")
        if not err or err.count("\n") > 2:
            problems.append("not one message on stderr")
        elif case not in err:
            problems.append("message does not name the file")
        elif not any(w in err.lower() for w in PROBLEM_WORDS):
            problems.append("message does not say what is wrong")
        after = snapshot(store)
        if after != before:
            problems.append(f"store changed: before {before}, after {after}")
        log(f"{case}: exit {r.rc}: {err[:160]}")
        if problems:
            failures.append(f"{case}: {'; '.join(problems)}; stderr {err[:300]!r}")
    check(not failures, f"{len(failures)} of {len(cases)} cases wrong:\n  " + "\n  ".join(failures))
    store.verify_ok("after the malformed imports")
    r = store.ok("compact", json_out=True).json()
    check(r["chunks_removed"] == 0 and r["manifests_removed"] == 0,
          f"the refused imports left chunks or manifests behind: {r}")

    valid = os.path.join(bad, "valid.gguf")
    store.ok("import", valid, "bad/valid:v1")
    store.export_matches("bad/valid:v1", tree_sha256(valid), work)
    store.export_matches("good:v1", tree_sha256(src), work)
    log(f"{len(cases)} malformed GGUF sources refused, store unchanged")


if __name__ == "__main__":
    run_test("gguf_bad_input", body)
