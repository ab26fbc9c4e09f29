#!/usr/bin/env python3
"""A blob file deleted from the writer's database (db/) alone.

The published generation keeps a hard link to the file, so readers still
read every chunk, but the writer cannot publish another generation: every
rm, compact and import fails (shown for compact and rm: each names the file,
readers keep both models, no generation is left behind). `pstore verify`
must report it (exit 5), naming each model with chunks in that file and no
other model, and the file itself. Linking the generation's copy back
(docs/operations.md) makes the store whole again: the next writer publishes
the rm that was committed but not published, verify passes and rm and
compact work.

Environment: PSTORE_BIN, MAKE_MODEL.
"""
import glob
import os

from harness import EXIT_CORRUPT, Store, check, log, make_model, run_test


def body(work):
    store = Store(os.path.join(work, "store"))
    a = make_model(os.path.join(work, "a.safetensors"), 3, seed=11, tensors=6)
    b = make_model(os.path.join(work, "b.safetensors"), 3, seed=12, tensors=6)
    store.ok("import", a, "alpha:v1")
    db = os.path.join(store.root, "db")
    before = set(os.path.basename(f) for f in glob.glob(os.path.join(db, "*.blob")))
    store.ok("import", b, "beta:v1")
    after = set(os.path.basename(f) for f in glob.glob(os.path.join(db, "*.blob")))
    new = sorted(after - before)
    check(len(new) >= 1, f"importing beta added no blob file: before {before}, after {after}")
    store.verify_ok("before the damage")

    victim = new[0]
    os.unlink(os.path.join(db, victim))
    r = store.run("verify")
    check(r.rc == EXIT_CORRUPT, "verify after a blob file was deleted from db/: " + r.describe())
    check("beta:v1" in r.out and victim in r.out,
          "verify should name the model beta:v1 and the file " + victim + ": " + r.describe())
    check("alpha:v1" not in r.out, "verify named alpha:v1, whose chunks are intact: " + r.describe())
    j = store.run("verify", json_out=True).json()
    check(j["ok"] is False and {p["model"] for p in j["problems"]} == {"beta:v1"},
          f"verify --json should report beta:v1 alone: {j}")
    log(r.out.splitlines()[0])

    # Before the repair the writer cannot publish: compact and rm fail, naming
    # the file, and readers still see both models in the generation they had.
    gens = sorted(os.listdir(os.path.join(store.root, "gen")))
    for args in (["compact"], ["rm", "beta:v1"]):
        r = store.run(*args)
        check(r.rc != 0 and victim in r.err,
              f"{' '.join(args)} before the repair should fail naming {victim}: " + r.describe())
        log(f"{' '.join(args)} before the repair: exit {r.rc}")
    check(sorted(store.ls()) == ["alpha:v1", "beta:v1"], f"readers see {sorted(store.ls())}")
    check(sorted(os.listdir(os.path.join(store.root, "gen"))) == gens,
          "a failed publish left a generation behind")

    # The documented repair: link the generation's copy back into db/.
    gen = os.path.join(store.root, "gen", "%010d" % store.stat()["generation"])
    os.link(os.path.join(gen, victim), os.path.join(db, victim))
    store.verify_ok("after linking the file back")
    # The rm above was committed but not published: the next writer publishes it.
    store.ok("compact")
    check(sorted(store.ls()) == ["alpha:v1"],
          f"after the repair and compact readers see {sorted(store.ls())}")
    store.ok("import", b, "beta:v2")
    store.ok("rm", "beta:v2")
    store.ok("compact")
    store.verify_ok("after rm and compact")


if __name__ == "__main__":
    run_test("store_missing_blob", body)
