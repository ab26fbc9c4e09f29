"""_store: pstore.Store, a read-only store handle, and pstore.import_file.

A Store owns a _StoreHandle, which owns the C pstore_store and closes it when
the last Python reference goes: the Store itself and every Model opened
through it hold one, so closing or deleting the Store while models (or views
of their tensors) live never pulls anything from under them. The handle
remembers the process that opened it: in a forked child it refuses every
call (the C handles are not fork-safe) and its finalizer does nothing.
A Store pickles as its path and budget, so multiprocessing's spawn start
method gets a store opened afresh in the child.

Thread-safety: a Store may be used from several threads; close() must not
race with other calls on the same Store.
"""

import ctypes
import os

from . import _capi
from ._capi import lib
from ._errors import check
from ._handle import HandleOwner


class _StoreHandle:
    __slots__ = ("ptr", "pid", "__weakref__")

    def __init__(self, ptr):
        self.ptr = ptr
        self.pid = os.getpid()

    def __del__(self, _close=lib.pstore_store_close, _getpid=os.getpid):
        if self.ptr and self.pid == _getpid():
            _close(self.ptr)
        self.ptr = None


class Store(HandleOwner):
    """A pstore store, opened read-only.

    path: the store's folder; None means $PSTORE_DIR, else $XDG_DATA_HOME/pstore,
    else ~/.local/share/pstore. budget: bytes of shared memory this process lets
    the store's mapped models hold on the host (None: the store's setting).
    check_shared: do not trust bytes other processes loaded into shared memory;
    every chunk of a tensor is checked against its key when this process's
    hold on the tensor starts (a mismatch raises Corruption; see
    docs/operations.md, "Group mode and trust").
    """

    def __init__(self, path=None, budget=None, loader_threads=0, check_shared=False):
        opts = _capi.StoreOptions()
        lib.pstore_store_options_default(ctypes.byref(opts))
        if budget is not None:
            if budget <= 0:
                raise ValueError(f"budget must be a positive number of bytes, not {budget!r}")
            opts.budget_bytes = int(budget)
        opts.loader_threads = int(loader_threads)
        opts.check_shared = 1 if check_shared else 0
        self._path = None if path is None else os.fspath(path)
        self._budget = budget
        self._loader_threads = loader_threads
        self._check_shared = bool(check_shared)
        out = ctypes.c_void_p()
        where = self._path or "the default store"
        check(lib.pstore_store_open(None if self._path is None else self._path.encode(),
                                    ctypes.byref(opts), ctypes.byref(out)),
              f"cannot open store {where}")
        self._h = _StoreHandle(out.value)

    @property
    def path(self):
        return self._path

    _kind = "store"
    _reopen = "the store"

    def _name(self):
        return self._path or "(default)"

    def models(self):
        """{"name:tag": digest} of every name in the store, sorted by name."""
        h = self._handle()
        out = {}

        def visit(_ctx, ref, digest):
            out[ref.decode()] = digest.decode()

        cb = _capi.MODEL_VISITOR(visit)
        check(lib.pstore_store_list_models(h.ptr, cb, None), "cannot list the store's models")
        return out

    def open(self, ref):
        """Opens a model by "name:tag", "name" (tag latest) or digest; see Model."""
        from ._model import Model
        return Model(self, ref)

    def stats(self):
        """budget_bytes, resident_bytes (shared memory the store's models hold on
        the host now), mapped_models."""
        h = self._handle()
        s = _capi.StoreStats()
        s.struct_size = ctypes.sizeof(s)
        check(lib.pstore_store_stats_get(h.ptr, ctypes.byref(s)))
        return {f: getattr(s, f) for f, _ in _capi.StoreStats._fields_[1:]}

    def __reduce__(self):
        return (Store, (self._path, self._budget, self._loader_threads, self._check_shared))

    def __repr__(self):
        return f"<pstore.Store {self._name()} {self._state()}>"


def import_file(source, ref, store=None, force=False, wait=False, threads=0, profile=None,
                progress=None):
    """Imports a safetensors file (or a sharded model's folder or index.json)
    into the store at `store` (a path, a Store, or None for the default store,
    created if missing) as `ref` ("name:tag"), atomically. Returns the digest.
    force: replace the name if it names another model. wait: wait for another
    writer instead of raising Busy. progress: a callable(done_bytes,
    total_bytes) called about ten times a second and once at the end, on this
    thread; a false result stops the import, which then raises Aborted and
    leaves the store as it was (an exception in it stops the import too and is
    raised again here)."""
    if isinstance(store, Store):
        store = store.path
    opts = _capi.ImportOptions()
    lib.pstore_import_options_default(ctypes.byref(opts))
    opts.force = int(bool(force))
    opts.wait = int(bool(wait))
    opts.threads = int(threads)
    if profile is not None:
        opts.profile = profile.encode()
    raised = []
    if progress is not None:
        def on_progress(done, total, _user):
            try:
                return 1 if progress(done, total) else 0
            except BaseException as e:  # noqa: B902 -- re-raised after the call
                raised.append(e)
                return 0
        opts.progress = _capi.PROGRESS_FN(on_progress)  # alive until this function returns
    digest = ctypes.create_string_buffer(33)
    src = os.fspath(source)
    st = lib.pstore_import_file(None if store is None else os.fspath(store).encode(),
                                src.encode(), ref.encode(), ctypes.byref(opts), digest)
    if raised:
        raise raised[0]
    check(st, f"cannot import {src} as {ref}")
    return digest.value.decode()
