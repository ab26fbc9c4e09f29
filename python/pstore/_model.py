"""_model: pstore.Model, and the pins that keep tensor views valid.

Ownership, from the views up (each arrow is a strong Python reference):

    ndarray / torch tensor -> _Pin (one acquire of one tensor)
                           -> _ModelHandle (the C pstore_model)
                           -> _StoreHandle (the C pstore_store)
    Model -----------------> _ModelHandle

A _Pin releases its acquire when the last array or tensor over it is
collected; a _ModelHandle closes the C model (and unmaps its memory) only when
the Model and every _Pin are gone. So Model.close(), `del model` and
Store.close() make the Model refuse new calls, but memory under a live view is
never unmapped. Every handle remembers the process that opened it: in a forked
child, calls raise pstore.Closed and finalizers do nothing (a child must not
release its parent's pins). A Model pickles as its store and digest, so
multiprocessing's spawn start method reopens the same model version in the
child.

Thread-safety: a Model may be used from several threads at once (libpstore is
thread-safe and ctypes drops the GIL during each call); close() must not race
with other calls on the same Model. Finalizers may run on any thread.
"""

import collections
import ctypes
import math
import os
import threading
import weakref

import numpy as np

from . import _capi, _dtypes
from ._capi import lib
from ._errors import Internal, InvalidArgument, NotFound, check
from ._handle import HandleOwner

TensorInfo = collections.namedtuple("TensorInfo", "name dtype shape nbytes ggml_type",
                                    defaults=(None,))
TensorInfo.__doc__ = """A tensor's name, pstore dtype name ("F16", "BF16", ...), shape (in
elements), size in bytes, and for a GGUF model its GGML type number (ggml.h's enum ggml_type:
0 F32, 2 Q4_0, 8 Q8_0, ...; None for other formats)."""

# Tensors per batch of a state_dict's views: enough that a batch's spans cost
# little, few enough that the views of the first batches are made while the
# loaders still fill the rest.
_VIEW_BATCH = 256


class _ModelHandle:
    __slots__ = ("ptr", "pid", "store", "__weakref__")

    def __init__(self, ptr, store_handle):
        self.ptr = ptr
        self.pid = os.getpid()
        self.store = store_handle  # the store must outlive the model

    def __del__(self, _close=lib.pstore_model_close, _getpid=os.getpid):
        if self.ptr and self.pid == _getpid():
            _close(self.ptr)
        self.ptr = None


class _Acquires:
    """Acquires of a model's tensors, released together when the last array
    or tensor over them goes; its __array_interface__ is their bytes,
    read-only."""

    __slots__ = ("h", "indices", "ptr", "nbytes", "__weakref__")

    def __init__(self, h, indices, ptr, nbytes):
        self.h, self.indices, self.ptr, self.nbytes = h, indices, ptr, nbytes

    @property
    def __array_interface__(self):
        return {"version": 3, "shape": (self.nbytes,), "typestr": "|u1",
                "data": (self.ptr, True)}

    def __del__(self, _release=lib.pstore_tensor_release, _getpid=os.getpid):
        h = self.h
        if h.ptr and h.pid == _getpid():
            for i in self.indices:
                _release(h.ptr, i)


class _Pin(_Acquires):
    """One pstore_tensor_acquire of one tensor."""

    __slots__ = ()

    def __init__(self, h, i, ptr, nbytes):
        super().__init__(h, (i,), ptr, nbytes)


class _Group(_Acquires):
    """The acquires of a state_dict's tensors, released together when the
    last view over any of them goes; its views are slices of _Spans."""

    __slots__ = ()

    def __init__(self, h):
        super().__init__(h, [], 0, 0)


class _Span:
    """A range of a _Group's acquired bytes, read-only (__array_interface__):
    a batch of a state_dict's views are slices of one. Holds the group."""

    __slots__ = ("group", "ptr", "nbytes")

    def __init__(self, group, ptr, nbytes):
        self.group, self.ptr, self.nbytes = group, ptr, nbytes

    @property
    def __array_interface__(self):
        return {"version": 3, "shape": (self.nbytes,), "typestr": "|u1",
                "data": (self.ptr, True)}


class _TorchBase:
    """The same bytes flagged writable for torch.from_numpy, which would warn on
    a read-only array; the memory stays read-only (PROT_READ) underneath."""

    __slots__ = ("pin",)

    def __init__(self, pin):
        self.pin = pin

    @property
    def __array_interface__(self):
        return {"version": 3, "shape": (self.pin.nbytes,), "typestr": "|u1",
                "data": (self.pin.ptr, False)}


class Model(HandleOwner):
    """A model version opened from a Store (use Store.open). A context manager:
    closes on exit. Views it hands out stay valid after it closes."""

    def __init__(self, store, ref):
        sh = store._handle()
        out = ctypes.c_void_p()
        check(lib.pstore_model_open(sh.ptr, ref.encode(), ctypes.byref(out)),
              f"cannot open model {ref}")
        self._h = _ModelHandle(out.value, sh)
        self._store = store
        self._ref = ref
        self._digest = lib.pstore_model_digest(out.value).decode()
        # [(name, view dtype code, view shape, nbytes)] by index: the dtype and shape the
        # views have, which are the stored ones when they cover exactly nbytes, and raw
        # bytes (code 0, shape (nbytes,)) otherwise (quantized GGUF tensors, whose shape
        # counts elements of blocks; dtypes this version does not know).
        self._table = None
        self._stored = None  # [(dtype code, shape, ggml type or None)] by index, for info()
        self._index = None  # {name: index}
        self._addresses = None  # [where acquire puts the tensor's bytes] by index
        self._pins = weakref.WeakValueDictionary()  # index -> live _Pin
        self._lock = threading.Lock()

    # --- state ----------------------------------------------------------------

    @property
    def ref(self):
        return self._ref

    @property
    def digest(self):
        return self._digest

    _kind = "model"
    _reopen = "the store and the model"
    _closed_hint = "; views taken before stay valid, but new calls need the model opened again"

    def _name(self):
        return self._ref

    def __reduce__(self):
        return (_reopen, (self._store, self._digest, self._ref))

    def __repr__(self):
        return f"<pstore.Model {self._ref} {self._digest[:12]} {self._state()}>"

    # --- tensors by name --------------------------------------------------------

    def _load_table(self, h):
        if self._table is not None:
            return self._table
        # The whole table in one call (pstore_model_tensor_table): arrays the
        # model owns, read here with numpy.
        t = _capi.TensorTable()
        t.struct_size = ctypes.sizeof(t)
        check(lib.pstore_model_tensor_table(h.ptr, ctypes.byref(t)),
              f"model {self._ref}: cannot read its tensor table")
        n = t.count

        def column(addr, ctype, count):
            if not count:
                return []
            return np.frombuffer((ctype * count).from_address(addr), ctype).tolist()

        # Names split by their offsets, not by NUL (a name may hold one).
        blob = ctypes.string_at(t.names, t.names_bytes)
        offsets = column(t.name_offsets, ctypes.c_uint64, n + 1)
        if offsets[0] != 0 or offsets[n] != t.names_bytes:
            raise Internal(f"model {self._ref}: libpstore ({_capi.lib_path}) gave a tensor table "
                           f"whose {n} names end at byte {offsets[n]} of {t.names_bytes}; install "
                           "the package and the library from one build", 9)
        names = [blob[offsets[i]:offsets[i + 1] - 1].decode() for i in range(n)]

        codes = column(t.dtypes, ctypes.c_int32, n)
        ndims = column(t.ndims, ctypes.c_uint32, n)
        shapes = column(t.shapes, ctypes.c_uint64, sum(ndims))
        sizes = column(t.nbytes, ctypes.c_uint64, n)
        ggml = column(t.ggml_types, ctypes.c_int32, n)
        self._addresses = column(t.addresses, ctypes.c_size_t, n)  # 0 for an empty tensor
        table, stored = [], []
        append, append_stored = table.append, stored.append
        itemsize = {c: d[1].itemsize for c, d in _dtypes.DTYPES.items()}.get
        prod = math.prod
        at = 0
        for i in range(n):
            name, code, nbytes, g = names[i], codes[i], sizes[i], ggml[i]
            shape = tuple(shapes[at:at + ndims[i]])
            at += ndims[i]
            size = itemsize(code)
            if size is not None and prod(shape) * size == nbytes:
                append((name, code, shape, nbytes))
            else:
                append((name, 0, (nbytes,), nbytes))
            append_stored((code, shape, None if g < 0 else g))
        self._index = {t[0]: i for i, t in enumerate(table)}
        self._stored = stored
        self._table = table
        return table

    def _lookup(self, name):
        h = self._handle()
        self._load_table(h)
        i = self._index.get(name)
        if i is None:
            raise NotFound(f"model {self._ref}: no tensor named {name!r}", 1)
        return h, i, self._table[i]

    def names(self):
        """The tensors' names, in the model's order."""
        return [t[0] for t in self._load_table(self._handle())]

    def __len__(self):
        return len(self._load_table(self._handle()))

    def __contains__(self, name):
        self._load_table(self._handle())
        return name in self._index

    def __iter__(self):
        return iter(self.names())

    def info(self, name):
        """TensorInfo(name, dtype, shape, nbytes, ggml_type), as stored."""
        _, i, (n, _, _, nbytes) = self._lookup(name)
        code, shape, ggml = self._stored[i]
        return TensorInfo(n, _dtypes.name(code), shape, nbytes, ggml)

    # --- views ----------------------------------------------------------------

    def _pin(self, h, i, name, nbytes):
        p = self._pins.get(i)
        if p is not None:
            return p
        ptr = ctypes.c_void_p()
        check(lib.pstore_tensor_acquire(h.ptr, i, ctypes.byref(ptr)),
              f"model {self._ref}: cannot load tensor {name}")
        p = _Pin(h, i, ptr.value, nbytes)
        with self._lock:
            q = self._pins.get(i)  # another thread may have pinned it meanwhile
            if q is not None:
                return q  # p is released when it goes
            self._pins[i] = p
        return p

    def numpy(self, name):
        """A read-only ndarray over the tensor's bytes in the shared mapping (no
        copy). BF16 is given as uint16 and F8_E5M2/F8_E4M3 as uint8 holding the
        raw bits (numpy has no such types)."""
        h, i, (n, code, shape, nbytes) = self._lookup(name)
        return self._numpy(h, i, n, code, shape, nbytes)

    def _numpy(self, h, i, n, code, shape, nbytes):
        a = np.asarray(self._pin(h, i, n, nbytes))
        dt, known = _dtypes.numpy_dtype(code)
        return a.view(dt).reshape(shape) if known else a

    def torch(self, name):
        """A CPU torch.Tensor over the same memory (no copy). BF16 is
        torch.bfloat16. Writing through it is an error: the memory is mapped
        read-only and a write kills the process (SIGSEGV)."""
        h, i, (n, code, shape, nbytes) = self._lookup(name)
        return self._torch(h, i, n, code, shape, nbytes)

    def _torch(self, h, i, n, code, shape, nbytes):
        import torch
        np_dt, torch_dt = _dtypes.torch_plan(code)
        a = np.asarray(_TorchBase(self._pin(h, i, n, nbytes)))
        if _dtypes.numpy_dtype(code)[1]:
            a = a.view(np_dt).reshape(shape)
        t = torch.from_numpy(a)
        return t.view(torch_dt) if torch_dt is not None else t

    def state_dict(self, prefix=None, framework="torch"):
        """{name: view} of every tensor, or of those whose name starts with
        prefix; each a zero-copy view as torch() or numpy() gives. What is not
        resident is loaded in one bulk prefetch, started first: the views are
        made while it runs, over the addresses the tensor table gives, and the
        tensors are acquired (each waiting for its chunks) before they are
        returned. The
        views share their pins: the tensors stay pinned until the last view of
        this state_dict goes. It ends by waiting for every prefetch of this
        Model, so it may raise an error of a prefetch another thread started on
        it (docs/python.md)."""
        if framework not in ("torch", "numpy"):
            raise InvalidArgument(f"framework must be 'torch' or 'numpy', not {framework!r}", 3)
        h = self._handle()
        check(lib.pstore_model_prefetch_prefix(h.ptr, self._prefix_arg(prefix or ""), None),
              f"model {self._ref}: cannot prefetch")
        try:
            table = self._load_table(h)
            pick = [i for i, t in enumerate(table) if prefix is None or t[0].startswith(prefix)]
            out = self._views(h, table, pick, framework == "torch")
        finally:
            # Every prefetch of this handle is over before this returns (or
            # raises), and the error one met is this call's, not a later wait's.
            st = lib.pstore_model_prefetch_wait(h.ptr)
        check(st, f"model {self._ref}: loading failed")
        return out

    def _views(self, h, table, pick, as_torch):
        """Views of the tensors pick, in pick's order, sharing one _Group of
        acquires. The views are made first, over the addresses the tensor
        table gives (which needs nothing loaded: they are made while the
        loaders work), in batches, each batch's views slices of one span of
        its bytes; then every tensor is acquired in one call, which waits for
        (or loads) what is not in yet. No view is handed out before that."""
        group = _Group(h)
        out = {}
        addresses = self._addresses
        for b in range(0, len(pick), _VIEW_BATCH):
            batch = [(i, addresses[i] if table[i][3] else None) for i in pick[b:b + _VIEW_BATCH]]
            self._batch_views(h, group, table, batch, as_torch, out)
        full = [i for i in pick if table[i][3]]  # empty tensors need no memory
        if full:
            ptrs = (ctypes.c_size_t * len(full))()
            try:
                st = lib.pstore_tensor_acquire_many(h.ptr, (ctypes.c_size_t * len(full))(*full),
                                                    len(full), ctypes.cast(ptrs, ctypes.POINTER(
                                                        ctypes.c_void_p)))
                if st == 0:
                    group.indices = full  # released when the last view goes
            except BaseException:
                # An exception (KeyboardInterrupt) between the call's return
                # and the group taking the acquires: the call acquired every
                # tensor iff it set the pointers (NULL on a failure).
                if ptrs[0] and group.indices is not full:
                    for i in full:
                        lib.pstore_tensor_release(h.ptr, i)
                raise
            if st != 0:
                check(st, f"model {self._ref}: cannot load its tensors")
            if list(ptrs) != [addresses[i] for i in full]:
                raise Internal(f"model {self._ref}: libpstore ({_capi.lib_path}) acquired tensors "
                               "away from the addresses its table gave; install the package "
                               "and the library from one build", 9)
        return out

    def _batch_views(self, h, group, table, batch, as_torch, out):
        """Adds the views of batch [(index, address)] to out."""
        ptrs = [p for _, p in batch if p is not None]
        if not ptrs:
            for i, _ in batch:  # every tensor of the batch is empty
                out[table[i][0]] = self._empty(table[i], as_torch)
            return
        lo = min(ptrs)
        span = _Span(group, lo, max(p + table[i][3] for i, p in batch if p is not None) - lo)
        if as_torch:
            # torch.from_numpy over an ndarray of the span is the cheapest way
            # to a torch view (cheaper than as_strided of one typed span), and
            # gives each tensor a storage of its own bytes only.
            import torch
            whole = np.asarray(_TorchBase(span))
            from_numpy, ndarray = torch.from_numpy, np.ndarray
            plans = {}  # dtype code -> (numpy dtype, torch dtype to view as or None, known)
            for i, p in batch:
                name, code, shape, nbytes = table[i]
                if p is None:
                    out[name] = self._empty(table[i], True)
                    continue
                plan = plans.get(code)
                if plan is None:
                    plan = plans[code] = _dtypes.torch_plan(code) + (_dtypes.numpy_dtype(code)[1],)
                np_dt, torch_dt, known = plan
                if p % np_dt.itemsize:  # not aligned to its element size: a view of its own
                    out[name] = self._torch(h, i, *table[i])
                    continue
                if not known:
                    shape = (nbytes,)
                t = from_numpy(ndarray(shape, np_dt, whole, p - lo))
                out[name] = t.view(torch_dt) if torch_dt is not None else t
        else:
            whole = np.asarray(span)
            for i, p in batch:
                name, code, shape, nbytes = table[i]
                if p is None:
                    out[name] = self._empty(table[i], False)
                    continue
                dt, known = _dtypes.numpy_dtype(code)
                out[name] = np.ndarray(shape if known else (nbytes,), dt, whole, p - lo)

    # --- loading ----------------------------------------------------------------

    @staticmethod
    def _empty(entry, as_torch):
        """A tensor of no bytes (it needs no memory of the model's)."""
        name, code, shape, nbytes = entry
        dt, known = _dtypes.numpy_dtype(code)
        if as_torch:
            import torch
            return torch.empty(shape if known else (0,), dtype=_dtypes.torch_dtype(code))
        a = np.empty(shape if known else (0,), dt)
        a.flags.writeable = False
        return a

    def _prefix_arg(self, prefix):
        """A name prefix as the C API takes it (NUL-terminated UTF-8)."""
        if "\0" in prefix:
            # The C string would end at the NUL: a shorter prefix than asked for.
            raise InvalidArgument(f"model {self._ref}: the prefix {prefix!r} contains a NUL "
                                  "character, which no tensor name has", 3)
        return prefix.encode()

    def _prefetch_indices(self, h, indices):
        if not indices:
            return
        arr = (ctypes.c_size_t * len(indices))(*indices)
        check(lib.pstore_model_prefetch(h.ptr, arr, len(indices)),
              f"model {self._ref}: cannot prefetch")

    def prefetch(self, prefix_or_names):
        """Starts loading, in the background, the tensors whose names start with
        a prefix (a str) or the named tensors (an iterable of str). Returns how
        many tensors that is. Errors surface in wait() (or in a state_dict of
        this Model, which waits for every prefetch of it)."""
        h = self._handle()
        if isinstance(prefix_or_names, str):
            matched = ctypes.c_size_t()
            check(lib.pstore_model_prefetch_prefix(h.ptr, self._prefix_arg(prefix_or_names),
                                                   ctypes.byref(matched)),
                  f"model {self._ref}: cannot prefetch {prefix_or_names!r}")
            return matched.value
        idx = [self._lookup(n)[1] for n in prefix_or_names]
        self._prefetch_indices(h, idx)
        return len(idx)

    def wait(self):
        """Waits for every prefetch of this Model, from any thread, state_dict's
        included; raises (and clears) the first error one of them met."""
        check(lib.pstore_model_prefetch_wait(self._handle().ptr),
              f"model {self._ref}: prefetch failed")

    def copy_into(self, name, out):
        """Copies the tensor's bytes into out (a writable, C-contiguous numpy
        array, CPU torch tensor or buffer of at least nbytes), e.g. pinned memory
        for a GPU upload. Returns the number of bytes copied."""
        h, i, (n, code, shape, nbytes) = self._lookup(name)
        ptr, size = _writable_address(out, f"copy_into({name!r})")
        if size < nbytes:
            raise InvalidArgument(f"model {self._ref}: copy_into({name!r}): the destination holds "
                                  f"{size} bytes, the tensor {nbytes}", 3)
        check(lib.pstore_tensor_copy(h.ptr, i, ctypes.c_void_p(ptr), size),
              f"model {self._ref}: cannot copy tensor {name}")
        return nbytes

    def stats(self):
        """This process's acquires, hits, misses, loads and load time, and the
        model's resident bytes on the host (see pstore_model_stats in pstore.h)."""
        s = _capi.ModelStats()
        s.struct_size = ctypes.sizeof(s)
        check(lib.pstore_model_stats_get(self._handle().ptr, ctypes.byref(s)))
        return {f: getattr(s, f) for f in _capi.MODEL_STATS_FIELDS}


def _writable_address(out, what):
    if isinstance(out, np.ndarray):
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise InvalidArgument(f"{what}: the array must be C-contiguous and writable", 3)
        return out.ctypes.data, out.nbytes
    mod = type(out).__module__
    if mod.startswith("torch"):
        if out.device.type != "cpu" or not out.is_contiguous():
            raise InvalidArgument(f"{what}: the tensor must be a contiguous CPU tensor (copy "
                                  "into pinned CPU memory, then .to('cuda'))", 3)
        return out.data_ptr(), out.element_size() * out.numel()
    try:
        mv = memoryview(out)
    except TypeError:
        raise InvalidArgument(f"{what}: want a numpy array, a torch tensor or a writable buffer, "
                              f"not {type(out).__name__}", 3) from None
    if mv.readonly or not mv.c_contiguous:
        raise InvalidArgument(f"{what}: the buffer must be writable and C-contiguous", 3)
    a = np.frombuffer(mv.cast("B"), dtype=np.uint8)
    return a.ctypes.data, a.nbytes


def _reopen(store, digest, ref):
    m = store.open(digest)
    m._ref = ref
    return m
