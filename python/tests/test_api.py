"""The package's API on a small model of every dtype: names, info, zero-copy
numpy and torch views, prefetch, copy_into, stats, listing, importing and the
errors of bad calls."""

import gc
import os
import subprocess
import warnings

import numpy as np
import pytest
import torch

import pstore
from conftest import SafetensorsFile, pstore_bin, quant_blocks, write_gguf, write_safetensors


def mapping_of(address):
    """The /proc/self/maps line (path) of the mapping holding address."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= address < hi:
                return parts[5] if len(parts) > 5 else "", parts[1]
    return None, None


def test_names_len_contains_info(small_model):
    root, ref, src = small_model
    st = SafetensorsFile(src)
    with pstore.Store(root) as store, store.open(ref) as m:
        assert sorted(m.names()) == sorted(st.tensors)
        assert len(m) == len(st.tensors)
        assert "layers.0.f32" in m and "nope" not in m
        for name, t in st.tensors.items():
            info = m.info(name)
            assert info.name == name
            assert info.dtype == t["dtype"]
            assert info.shape == tuple(t["shape"])
            assert info.nbytes == t["data_offsets"][1] - t["data_offsets"][0]


def test_numpy_views_are_read_only_and_inside_the_segment(small_model):
    root, ref, src = small_model
    st = SafetensorsFile(src)
    with pstore.Store(root) as store, store.open(ref) as m:
        for name in st.tensors:
            a = m.numpy(name)
            want = st.array(name)
            assert a.dtype == want.dtype, name
            assert a.shape == want.shape, name
            assert a.tobytes() == want.tobytes(), name
            assert not a.flags.writeable
            if a.nbytes:
                path, perms = mapping_of(a.ctypes.data)
                assert path.startswith("/dev/shm/pstore-") and m.digest in path, (name, path)
                assert perms.startswith("r-"), (name, perms)  # mapped read-only
        a = m.numpy("layers.0.f32")
        with pytest.raises(ValueError):
            a[0, 0] = 1.0
        assert m.numpy("layers.2.bf16").dtype == np.uint16  # raw bits, documented


def test_torch_views_share_memory_without_warning(small_model):
    root, ref, src = small_model
    st = SafetensorsFile(src)
    want_dtype = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
                  "U8": torch.uint8, "I32": torch.int32, "BOOL": torch.bool,
                  "F8_E4M3": torch.uint8, "U16": torch.int16}
    with pstore.Store(root) as store, store.open(ref) as m:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning fails the test
            for name, t in st.tensors.items():
                x = m.torch(name)
                if t["dtype"] in want_dtype:
                    assert x.dtype == want_dtype[t["dtype"]], name
                assert tuple(x.shape) == tuple(t["shape"]), name
                raw = x.view(torch.int16) if x.dtype == torch.bfloat16 else x
                assert raw.numpy().tobytes() == st.raw(name), name
                if x.numel():
                    assert x.data_ptr() == m.numpy(name).ctypes.data, name
        # BF16 values: the top half of a float32's bits.
        bf = m.torch("layers.2.bf16")
        want = (st.array("layers.2.bf16").astype(np.uint32) << 16).view(np.float32)
        assert np.array_equal(bf.float().numpy(), want, equal_nan=True)


def test_state_dict_prefix_and_frameworks(small_model):
    root, ref, src = small_model
    with pstore.Store(root) as store, store.open(ref) as m:
        sd = m.state_dict()
        assert sorted(sd) == sorted(m.names())
        assert all(isinstance(v, torch.Tensor) for v in sd.values())
        sub = m.state_dict(prefix="layers.1", framework="numpy")
        assert sorted(sub) == sorted(n for n in m.names() if n.startswith("layers.1"))
        assert all(isinstance(v, np.ndarray) for v in sub.values())
        assert m.state_dict(prefix="no.such.") == {}
        # A state_dict's tensors stay pinned until its last view goes.
        del sd, sub
        gc.collect()
        before = m.stats()["pinned_bytes"]
        sd = m.state_dict(framework="numpy")
        assert m.stats()["pinned_bytes"] > before
        one = sd["layers.17.f16"][3:5]
        del sd
        gc.collect()
        assert m.stats()["pinned_bytes"] > before
        del one
        gc.collect()
        assert m.stats()["pinned_bytes"] == before
        with pytest.raises(pstore.InvalidArgument, match="framework"):
            m.state_dict(framework="jax")


def test_state_dict_in_batches_keeps_the_order_and_the_bytes(small_model, monkeypatch):
    # state_dict makes its views in batches while the load runs; batches of a
    # few tensors put batch boundaries everywhere, empty tensors included. The
    # model holds more than the pager's bulk-load threshold (32 MiB, kBulkBytes
    # in pager/model.h), so its state_dict's prefetch is a bulk load in file
    # order, and every pass starts with nothing resident.
    import tempfile
    from pstore import _model
    root, ref, src = small_model
    small = SafetensorsFile(src)
    rng = np.random.default_rng(5)
    tensors = [(k, small.tensors[k]["dtype"], small.tensors[k]["shape"], small.raw(k))
               for k in small.tensors]
    tensors += [(f"big.{i}", "F16", (512, 1024), rng.integers(0, 256, 1 << 20, np.uint8).tobytes())
                for i in range(34)]
    folder = tempfile.mkdtemp(prefix="big-", dir=os.path.dirname(root))
    src = os.path.join(folder, "big.safetensors")
    write_safetensors(src, tensors)
    root = os.path.join(folder, "store")
    pstore.import_file(src, ref, store=root)
    st = SafetensorsFile(src)
    assert sum(len(t[3]) for t in tensors) > 32 << 20
    for batch in (1, 2, 3, 7):
        monkeypatch.setattr(_model, "_VIEW_BATCH", batch)
        for framework in ("torch", "numpy"):
            subprocess.run([pstore_bin(), "--store", root, "ps", "--gc-all"], check=True,
                           capture_output=True)  # not resident: views made during the load
            with pstore.Store(root) as store, store.open(ref) as m:
                misses = m.stats()["misses"]
                _check_state_dict(m, st, framework, batch)
                assert m.stats()["misses"] > misses, (batch, framework, "loaded warm")
            gc.collect()  # no view left: the next pass's segment is a new one


def _check_state_dict(m, st, framework, batch):
    sd = m.state_dict(framework=framework)
    assert list(sd) == m.names(), (batch, framework)
    for name, v in sd.items():
        if framework == "torch":
            v = (v.view(torch.int16) if v.dtype == torch.bfloat16 else v).numpy()
        assert v.tobytes() == st.raw(name), (batch, framework, name)
        assert v.shape == st.array(name).shape, (batch, framework, name)


def test_quantized_gguf_tensors_are_their_block_bytes(scratch):
    # A quantized GGUF tensor's shape counts elements and its dtype is U8, but
    # its bytes are blocks: every view is exactly its bytes in the file (1-D
    # uint8), never the bytes of the tensor after it, and not an error when it
    # is the model's last tensor.
    import tempfile
    root = tempfile.mkdtemp(prefix="gguf-", dir=scratch)
    rng = np.random.default_rng(11)
    tensors = [("blk.0.q4", 2, (4, 256), quant_blocks(rng, 2, 1024)),  # 576 bytes
               ("blk.0.norm", 0, (8, 16), rng.standard_normal(128).astype("<f4").tobytes()),
               ("blk.1.q8", 8, (2, 64), quant_blocks(rng, 8, 128)),
               ("blk.1.f16", 1, (3, 32), rng.standard_normal(96).astype("<f2").tobytes()),
               ("output.q4", 2, (3, 64), quant_blocks(rng, 2, 192))]  # last
    src = os.path.join(root, "q.gguf")
    where = write_gguf(src, tensors)
    with open(src, "rb") as f:
        raw = f.read()
    expect = {name: raw[o:o + n] for name, (o, n) in where.items()}
    store = os.path.join(root, "store")
    subprocess.run([pstore_bin(), "--store", store, "import", src, "q:1"], check=True,
                   capture_output=True)
    shapes = {"blk.0.norm": (8, 16), "blk.1.f16": (3, 32)}
    for framework in ("torch", "numpy", "numpy()", "torch()"):
        subprocess.run([pstore_bin(), "--store", store, "ps", "--gc-all"], check=True,
                       capture_output=True)  # each pass loads cold
        with pstore.Store(store) as st, st.open("q:1") as m:
            assert m.info("blk.0.q4") == ("blk.0.q4", "U8", (4, 256), 576, 2)
            assert m.info("blk.1.q8").ggml_type == 8 and m.info("blk.0.norm").ggml_type == 0
            if framework.endswith("()"):
                get = m.numpy if framework == "numpy()" else m.torch
                views = {n: get(n) for n in m.names()}
            else:
                views = m.state_dict(framework=framework)
            assert list(views) == [t[0] for t in tensors]
            for name, v in views.items():
                a = v.numpy() if hasattr(v, "numpy") else v
                assert a.tobytes() == expect[name], (framework, name)
                assert a.shape == shapes.get(name, (len(expect[name]),)), (framework, name)
            del views, v, a
            gc.collect()


def test_prefix_with_a_nul_is_refused(small_model):
    # The C API takes the prefix as a C string, which would end at the NUL:
    # refused instead of loading every "layers.1..." tensor for an empty result.
    root, ref, _ = small_model
    with pstore.Store(root) as store, store.open(ref) as m:
        for call in (lambda: m.state_dict(prefix="layers.1\0x"),
                     lambda: m.state_dict(prefix="layers.1\0x", framework="numpy"),
                     lambda: m.prefetch("layers.1\0x")):
            with pytest.raises(pstore.InvalidArgument, match="NUL"):
                call()
        m.wait()
        assert m.stats()["acquires"] == 0 and m.stats()["chunk_loads"] == 0
        assert list(m.state_dict(prefix="layers.1", framework="numpy")) == \
            [n for n in m.names() if n.startswith("layers.1")]


def test_prefetch_wait_stats_copy_into(small_model):
    root, ref, src = small_model
    st = SafetensorsFile(src)
    with pstore.Store(root) as store, store.open(ref) as m:
        assert m.prefetch("layers.1") == sum(n.startswith("layers.1") for n in m.names())
        assert m.prefetch(["layers.0.f32", "layers.2.bf16"]) == 2
        m.wait()
        s = m.stats()
        assert s["model_bytes"] == sum(m.info(n).nbytes for n in m.names())
        assert s["resident_bytes"] > 0
        before = m.stats()["pinned_bytes"]
        a = m.numpy("layers.17.f16")
        assert m.stats()["pinned_bytes"] >= before + a.nbytes
        del a
        assert m.stats()["pinned_bytes"] == before  # the last view went: released
        name = "layers.0.f32"
        out = np.empty(m.info(name).shape, np.float32)
        assert m.copy_into(name, out) == out.nbytes
        assert out.tobytes() == st.raw(name)
        t = torch.empty(m.info(name).shape, dtype=torch.float32)
        m.copy_into(name, t)
        assert t.numpy().tobytes() == st.raw(name)
        buf = bytearray(m.info(name).nbytes + 10)
        m.copy_into(name, buf)
        assert bytes(buf[:-10]) == st.raw(name)
        with pytest.raises(pstore.InvalidArgument, match="holds 4 bytes"):
            m.copy_into(name, bytearray(4))
        with pytest.raises(pstore.InvalidArgument, match="writable"):
            m.copy_into(name, m.numpy(name))
        ss = store.stats()
        assert ss["resident_bytes"] > 0 and ss["mapped_models"] >= 1 and ss["budget_bytes"] > 0


def test_models_lists_names_and_digests(small_model, scratch):
    root, ref, src = small_model
    d2 = pstore.import_file(src, "m:2", store=root)
    with pstore.Store(root) as store:
        assert store.models() == {"m:1": d2, "m:2": d2}  # same bytes, same version
        with store.open("m:2") as m:
            assert m.digest == d2


def test_errors_name_what_is_wrong(small_model, scratch):
    root, ref, src = small_model
    with pstore.Store(root) as store:
        with pytest.raises(pstore.NotFound) as e:
            store.open("no-such-model:v9")
        assert "no-such-model" in str(e.value) and e.value.status == 1
        assert isinstance(e.value, pstore.Error) and e.value.status_name == "not found"
        with pytest.raises(pstore.InvalidArgument):
            store.open("bad name with spaces:::")
        with store.open(ref) as m:
            with pytest.raises(pstore.NotFound, match="no tensor named 'nope'"):
                m.numpy("nope")
        with pytest.raises(pstore.Closed, match=f"model {ref} is closed; views taken before"):
            m.numpy("layers.0.f32")
        assert repr(m).endswith(" closed>")
    with pytest.raises(pstore.Closed, match=r"store \S+ is closed"):
        store.open(ref)
    assert repr(store).endswith(" closed>")
    with pytest.raises(pstore.NotFound) as e:
        pstore.Store(os.path.join(scratch, "no-store-here"))
    assert "no-store-here" in str(e.value)
    with pytest.raises(pstore.Exists, match="m:1"):
        other = os.path.join(scratch, "other.safetensors")
        write_safetensors(other, [("x", "F32", (2,), b"\0" * 8)])
        pstore.import_file(other, "m:1", store=root)
    bad = os.path.join(scratch, "bad.safetensors")
    with open(bad, "wb") as f:
        f.write(b"\x10\0\0\0\0\0\0\0{not json at all")
    with pytest.raises(pstore.InvalidArgument, match="bad.safetensors"):
        pstore.import_file(bad, "bad:1", store=root)
    with pstore.Store(root) as store:  # nothing already stored was lost
        assert "m:1" in store.models()
        with store.open("m:1") as m:
            assert m.numpy("layers.0.f32").tobytes() == SafetensorsFile(src).raw("layers.0.f32")


def test_state_dict_views_of_every_dtype_match_the_file(small_model):
    root, ref, src = small_model
    st = SafetensorsFile(src)
    with pstore.Store(root) as store, store.open(ref) as m:
        sd_t = m.state_dict()
        sd_n = m.state_dict(framework="numpy")
        assert {st.tensors[n]["dtype"] for n in sd_t} >= {"BOOL", "U8", "I8", "I16", "U16", "F16",
                                                         "BF16", "I32", "U32", "F32", "F64",
                                                         "I64", "U64", "F8_E4M3", "F8_E5M2"}
        for name in st.tensors:
            want = st.array(name)
            a = sd_n[name]
            assert a.dtype == want.dtype and a.shape == want.shape, name
            assert a.tobytes() == want.tobytes() and not a.flags.writeable, name
            t = sd_t[name]
            assert t.dtype == m.torch(name).dtype and tuple(t.shape) == want.shape, name
            raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
            assert raw.numpy().tobytes() == want.tobytes(), name
            if t.numel():
                assert t.data_ptr() == a.ctypes.data == m.numpy(name).ctypes.data, name


def test_a_model_without_tensors_is_usable(scratch):
    """A safetensors file of no tensors ({}) is a model: no names, nothing in
    it, an empty state_dict."""
    root = os.path.join(scratch, "empty-model")
    os.makedirs(root)
    src = os.path.join(root, "empty.safetensors")
    write_safetensors(src, [])
    pstore.import_file(src, "empty:1", store=os.path.join(root, "store"))
    with pstore.Store(os.path.join(root, "store")) as store, store.open("empty:1") as m:
        assert m.names() == []
        assert len(m) == 0
        assert "x" not in m
        with pytest.raises(pstore.NotFound, match="no tensor named 'x'"):
            m.info("x")
        assert m.state_dict(framework="numpy") == {}
        assert m.state_dict() == {}


def test_names_come_from_the_table_offsets(scratch):
    """The tensor table's names are split by their byte offsets: names of
    several bytes per character keep their own bytes, and a GGUF name holding
    a NUL is refused at import (naming the file and the tensor), storing
    nothing."""
    root = os.path.join(scratch, "table-names")
    os.makedirs(root)
    rng = np.random.default_rng(5)
    tensors = [("é.ñ\u00fc", 0, (4,), rng.standard_normal(4).astype("<f4").tobytes()),
               ("层.0", 0, (8,), rng.standard_normal(8).astype("<f4").tobytes()),
               ("c", 0, (2,), rng.standard_normal(2).astype("<f4").tobytes())]
    src = os.path.join(root, "utf8.gguf")
    write_gguf(src, tensors)
    store = os.path.join(root, "store")
    subprocess.run([pstore_bin(), "--store", store, "import", src, "utf8:1"], check=True,
                   capture_output=True)
    with pstore.Store(store) as st, st.open("utf8:1") as m:
        assert m.names() == [t[0] for t in tensors]
        views = m.state_dict(framework="numpy")
        for name, _, _, data in tensors:
            assert views[name].tobytes() == data, name
        del views
        gc.collect()
    bad = os.path.join(root, "nul.gguf")
    write_gguf(bad, [("c", 0, (4,), tensors[0][3]), ("a\0b", 0, (4,), tensors[0][3])])
    p = subprocess.run([pstore_bin(), "--store", store, "import", bad, "nul:1"],
                       capture_output=True, text=True)
    assert p.returncode != 0
    assert "nul.gguf" in p.stderr and "tensor 1's name" in p.stderr and "NUL" in p.stderr, \
        p.stderr
    with pytest.raises(pstore.InvalidArgument, match="NUL"):
        pstore.import_file(bad, "nul:1", store=store)
    with pstore.Store(store) as st:
        assert list(st.models()) == ["utf8:1"]


def test_table_addresses_are_where_acquire_puts_every_tensor(small_model):
    # Through the C API (ctypes): for every tensor, the empty ones included,
    # the table's address is the pointer pstore_tensor_acquire returns.
    import ctypes
    from pstore._capi import TensorTable, lib
    root, ref, _ = small_model
    store, model = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.pstore_store_open(root.encode(), None, ctypes.byref(store)) == 0
    try:
        assert lib.pstore_model_open(store, ref.encode(), ctypes.byref(model)) == 0
        t = TensorTable()
        t.struct_size = ctypes.sizeof(t)
        assert lib.pstore_model_tensor_table(model, ctypes.byref(t)) == 0
        addresses = (ctypes.c_void_p * t.count).from_address(t.addresses)
        sizes = (ctypes.c_uint64 * t.count).from_address(t.nbytes)
        assert 0 in list(sizes), "the model should hold an empty tensor"
        for i in range(t.count):
            p = ctypes.c_void_p()
            assert lib.pstore_tensor_acquire(model, i, ctypes.byref(p)) == 0
            assert p.value is not None and p.value == addresses[i], (i, sizes[i])
            assert lib.pstore_tensor_release(model, i) == 0
        lib.pstore_model_close(model)
    finally:
        lib.pstore_store_close(store)
