"""pstore: zero-copy numpy arrays and torch tensors over pstore's shared mapping.

    import pstore
    with pstore.Store() as store, store.open("llama-7b:prod") as model:
        w = model.torch("model.embed_tokens.weight")   # no copy
        sd = model.state_dict()                         # every tensor, no copy

A ctypes binding of libpstore's C API (api/pstore.h); docs/python.md documents
the API, the lifetimes of views and the dtypes.
"""

from ._capi import lib as _lib, lib_path
from ._errors import (Aborted, Busy, Closed, Corruption, Error, Exists, Internal, InvalidArgument,
                      IOFailure, NoMemory, NoSpace, NotFound, Unsupported)
from ._model import Model, TensorInfo
from ._store import Store, import_file

__version__ = _lib.pstore_version().decode()

__all__ = ["Store", "Model", "TensorInfo", "import_file", "Error", "NotFound", "Corruption",
           "InvalidArgument", "IOFailure", "Busy", "NoSpace", "Unsupported", "Exists",
           "Internal", "Aborted", "NoMemory", "Closed", "lib_path"]
