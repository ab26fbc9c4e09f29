#!/usr/bin/env python3
"""GGUF round trips: import, export byte for byte, info, ls, and dedup.

GGUF files are written by tests/tools/gguf_writer from safetensors models
(synthetic ones from make_model; the real-weights corpus too when
$PSTORE_CORPUS or the build's corpus folder holds combined.safetensors):
  - every variant exports byte-identical to its source: the source dtypes
    kept (F32/F16/BF16/I8), F16, Q8_0 and Q4_0 quantized, alignment 1, 64
    and 65536, non-zero padding bytes, a big metadata array, a tensor of a
    GGML type pstore does not know, and a split model (exported as the same
    splits into a folder);
  - `info --json` gives the format, architecture, context length,
    quantization, alignment and each tensor's GGML type; `ls --json` the
    format;
  - dedup across formats: a GGUF holding the same tensor bytes as a
    safetensors file adds no chunk; across quantizations: the F32 norms a
    Q8_0 and an F16 file share are stored once.

Environment: PSTORE_BIN, MAKE_MODEL, GGUF_WRITER.
"""
import os

from harness import Store, check, env_path, log, make_model, run_cmd, run_test, tree_sha256


def write_gguf(out, srcs, *opts):
    argv = [env_path("GGUF_WRITER"), out] + list(srcs) + [str(o) for o in opts]
    p = run_cmd(argv, timeout=300)
    check(p.returncode == 0, f"gguf_writer failed: {argv}: {p.stderr}")
    return p.stdout.split()


def corpus_file():
    for d in (os.environ.get("PSTORE_CORPUS"), os.environ.get("CORPUS_DIR"), "/work/corpus"):
        if d and os.path.isfile(os.path.join(d, "combined.safetensors")):
            return os.path.join(d, "combined.safetensors")
    return None


def body(work):
    store = Store(os.path.join(work, "store"))
    src = make_model(os.path.join(work, "m.safetensors"), 6, seed=5, tensors=24, dtype="mixed")
    variants = {
        "keep": ["--type", "keep"],
        "f16": ["--type", "f16", "--big-array", "20000"],
        "q8": ["--type", "q8_0"],
        "q4": ["--type", "q4_0", "--alignment", "64", "--pad-byte", "7", "--unknown-type", "250"],
        "align1": ["--type", "q8_0", "--alignment", "1"],
        "align64k": ["--type", "keep", "--alignment", "65536", "--pad-byte", "255"],
    }
    for name, opts in variants.items():
        path = os.path.join(work, name + ".gguf")
        write_gguf(path, [src], *opts)
        store.ok("import", path, f"g/{name}:v1")
        store.export_matches(f"g/{name}:v1", tree_sha256(path), work)
        log(f"{name}: byte-identical round trip")

    # A split model: import from any split, export the same splits.
    split_dir = os.path.join(work, "split")
    os.makedirs(split_dir)
    files = write_gguf(os.path.join(split_dir, "m.gguf"), [src], "--type", "q8_0", "--split", "3")
    check(len(files) == 3, f"the writer made {files}")
    store.ok("import", files[1], "g/split:v1")
    store.export_matches("g/split:v1", tree_sha256(split_dir), work)

    # What info and ls show.
    ls = store.ls()
    check(ls["g/q8:v1"]["format"] == "gguf" and ls["g/split:v1"]["format"] == "gguf-split",
          f"ls formats: {ls}")
    info = store.info("g/q4:v1")
    g = info["gguf"]
    check(info["format"] == "gguf", f"format {info['format']}")
    check(g["architecture"] == "pstoretest" and g["context_length"] == 2048 and
          g["quantization"] == "MOSTLY_Q4_0" and g["alignment"] == 64, f"gguf summary {g}")
    types = {t["ggml_type_name"] for t in info["tensors"]}
    check({"Q4_0", "type 250"} <= types, f"GGML types shown: {types}")
    check(info["metadata"]["general.alignment"] == 64, "metadata lacks general.alignment")
    f16 = store.info("g/f16:v1")
    check(len(f16["metadata"]["tokenizer.ggml.tokens"]) == 20000, "big array not in the metadata")

    # Across formats: the GGUF that keeps the safetensors bytes adds nothing.
    r = store.ok("import", src, "st:v1", json_out=True).json()
    check(r["new_chunks"] == 0, f"safetensors after its GGUF twin stored {r['new_chunks']} chunks")

    # Across quantizations: in a store of an F16 and a Q8_0 file of the same
    # weights, every tensor the Q8_0 file did not quantize (kept I8 biases,
    # F16 matrices whose rows are no whole number of blocks) is stored once.
    quant = Store(os.path.join(work, "quant-store"))
    quant.ok("import", os.path.join(work, "f16.gguf"), "q/f16:v1")
    quant.ok("import", os.path.join(work, "q8.gguf"), "q/q8:v1")
    q8 = quant.info("q/q8:v1")
    kept = [t for t in q8["tensors"] if t["ggml_type_name"] != "Q8_0"]
    quantized = [t for t in q8["tensors"] if t["ggml_type_name"] == "Q8_0"]
    check(kept and quantized, f"the Q8_0 file has no kept or no quantized tensor: {q8['gguf']}")
    check(all(t["shared_chunks"] == t["chunks"] for t in kept),
          "tensors the Q8_0 file kept are not shared with the F16 file: " +
          str([t["name"] for t in kept if t["shared_chunks"] != t["chunks"]]))
    check(all(t["shared_chunks"] == 0 for t in quantized), "Q8_0 blocks shared with F16 data")

    corpus = corpus_file()
    if corpus:
        c = Store(os.path.join(work, "corpus-store"))
        for t in ("f16", "q8_0"):
            path = os.path.join(work, f"corpus-{t}.gguf")
            write_gguf(path, [corpus], "--type", t)
            c.ok("import", path, f"corpus/{t}:v1")
            c.export_matches(f"corpus/{t}:v1", tree_sha256(path), work)
            os.unlink(path)
        log("corpus: F16 and Q8_0 GGUF round trips byte-identical")
    else:
        log("corpus not found: synthetic models only")
    store.verify_ok()


if __name__ == "__main__":
    run_test("gguf_roundtrip", body)
