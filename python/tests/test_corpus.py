"""Real weights: every tensor of every corpus model (f/: F16, F32, U8, I32;
bf16/: BF16), of the corpus as one model and of a sharded model equals numpy
reading the safetensors file directly, through numpy and through torch."""

import torch

import pstore
from conftest import SafetensorsFile


def check_model(m, files):
    seen = set()
    dtypes = set()
    sd_np = m.state_dict(framework="numpy")
    sd_t = m.state_dict(framework="torch")
    for path in files:
        st = SafetensorsFile(path)
        for name in st.tensors:
            want = st.array(name)
            a = sd_np[name]
            assert a.dtype == want.dtype and a.shape == want.shape, (m.ref, name)
            assert a.tobytes() == want.tobytes(), (m.ref, name)
            t = sd_t[name]
            assert tuple(t.shape) == want.shape, (m.ref, name)
            if st.tensors[name]["dtype"] == "BF16":
                assert t.dtype == torch.bfloat16
                t = t.view(torch.int16)
            assert t.numpy().tobytes() == want.tobytes(), (m.ref, name)
            seen.add(name)
            dtypes.add(st.tensors[name]["dtype"])
    assert seen == set(m.names()), m.ref
    return dtypes


def test_every_corpus_tensor_matches_the_file(corpus_store):
    root, sources = corpus_store
    dtypes = set()
    with pstore.Store(root) as store:
        assert set(store.models()) == set(sources)
        for ref, files in sources.items():
            if ref == "combined:v1":
                continue
            with store.open(ref) as m:
                dtypes |= check_model(m, files)
    assert {"F16", "F32", "U8", "I32", "BF16"} <= dtypes, dtypes


def test_combined_and_sharded(corpus_store):
    root, sources = corpus_store
    with pstore.Store(root) as store:
        with store.open("combined:v1") as m:
            assert len(m) == 8317
            check_model(m, sources["combined:v1"])
        with store.open("sharded:v1") as m:
            assert len(sources["sharded:v1"]) == 3
            check_model(m, sources["sharded:v1"])
