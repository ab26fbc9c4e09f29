"""_capi: the ctypes declarations of libpstore's C API (api/pstore.h).

Finds and loads libpstore.so once per process and declares every function the
package calls with its argument and result types. Nothing here owns a handle;
the classes in _store.py and _model.py do. Thread-safety: the loaded library
is immutable once declared and libpstore itself is thread-safe; ctypes releases
the GIL during every call.
"""

import ctypes
import ctypes.util
import glob
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


class StoreOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("budget_bytes", ctypes.c_uint64),
                ("loader_threads", ctypes.c_int), ("check_shared", ctypes.c_int)]


class StoreStats(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("budget_bytes", ctypes.c_uint64),
                ("resident_bytes", ctypes.c_uint64), ("mapped_models", ctypes.c_uint64)]


class TensorInfo(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("name", ctypes.c_char_p),
                ("dtype", ctypes.c_int), ("ndim", ctypes.c_uint32),
                ("shape", ctypes.POINTER(ctypes.c_uint64)), ("nbytes", ctypes.c_uint64),
                ("ggml_type", ctypes.c_int32)]


class TensorTable(ctypes.Structure):
    # Arrays as addresses: the package reads them with numpy.
    _fields_ = [("struct_size", ctypes.c_size_t), ("count", ctypes.c_size_t),
                ("names", ctypes.c_void_p), ("names_bytes", ctypes.c_size_t),
                ("name_offsets", ctypes.c_void_p),
                ("dtypes", ctypes.c_void_p), ("ndims", ctypes.c_void_p),
                ("shapes", ctypes.c_void_p), ("nbytes", ctypes.c_void_p),
                ("ggml_types", ctypes.c_void_p), ("addresses", ctypes.c_void_p)]


MODEL_STATS_FIELDS = ("acquires", "hits", "misses", "chunk_loads", "bytes_read", "bytes_decoded",
                      "load_ns", "resident_bytes", "pinned_bytes", "host_loads",
                      "host_bytes_decoded", "evictions", "model_bytes")


class ModelStats(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t)] + [(f, ctypes.c_uint64)
                                                     for f in MODEL_STATS_FIELDS]


# pstore_progress_fn: int (*)(uint64_t done_bytes, uint64_t total_bytes, void* user_data).
PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p)


class ImportOptions(ctypes.Structure):
    # The whole of pstore_import_options: pstore_import_options_default writes
    # sizeof(pstore_import_options) bytes into it.
    _fields_ = [("struct_size", ctypes.c_size_t), ("force", ctypes.c_int), ("wait", ctypes.c_int),
                ("threads", ctypes.c_int), ("profile", ctypes.c_char_p),
                ("progress", PROGRESS_FN), ("progress_user_data", ctypes.c_void_p)]


def _candidates():
    """Where libpstore may be, in the order tried."""
    env = os.environ.get("PSTORE_LIB")
    if env:
        return [env]  # named explicitly: nothing else is tried
    out = sorted(glob.glob(os.path.join(_HERE, "libpstore.so*")))
    found = ctypes.util.find_library("pstore")
    if found:
        out.append(found)
    out.append("libpstore.so.0")
    # Running from the source tree (python/pstore) after scripts/build.sh.
    out.append(os.path.join(_HERE, "..", "..", "build", "libpstore.so"))
    return out


def _load():
    errors = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            errors.append(f"{path}: {e}")
    raise ImportError("pstore: cannot load libpstore.so; build it (scripts/build.sh) and install "
                      "the package (scripts/python_venv.sh), or set PSTORE_LIB to its path. Tried: "
                      + "; ".join(errors))


lib, lib_path = _load()

_st = ctypes.c_int
_p = ctypes.c_void_p
_sz = ctypes.c_size_t


def _decl(name, res, *args):
    try:
        f = getattr(lib, name)
    except AttributeError:
        raise ImportError(f"pstore: the libpstore at {lib_path} has no {name}: it is older than "
                          "this package (or not libpstore); install the package and the library "
                          "from one build (scripts/python_venv.sh), or set PSTORE_LIB to a "
                          "libpstore.so of this version") from None
    f.restype = res
    f.argtypes = list(args)


_decl("pstore_status_string", ctypes.c_char_p, _st)
_decl("pstore_last_error", ctypes.c_char_p)
_decl("pstore_version", ctypes.c_char_p)
_decl("pstore_dtype_name", ctypes.c_char_p, ctypes.c_int)
_decl("pstore_store_options_default", None, ctypes.POINTER(StoreOptions))
_decl("pstore_store_open", _st, ctypes.c_char_p, ctypes.POINTER(StoreOptions), ctypes.POINTER(_p))
_decl("pstore_store_close", None, _p)
_decl("pstore_store_stats_get", _st, _p, ctypes.POINTER(StoreStats))
MODEL_VISITOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)
_decl("pstore_store_list_models", _st, _p, MODEL_VISITOR, _p)
_decl("pstore_model_open", _st, _p, ctypes.c_char_p, ctypes.POINTER(_p))
_decl("pstore_model_close", None, _p)
_decl("pstore_model_digest", ctypes.c_char_p, _p)
_decl("pstore_model_tensor_count", _sz, _p)
_decl("pstore_model_tensor_info", _st, _p, _sz, ctypes.POINTER(TensorInfo))
_decl("pstore_model_tensor_table", _st, _p, ctypes.POINTER(TensorTable))
_decl("pstore_model_find_tensor", _st, _p, ctypes.c_char_p, ctypes.POINTER(_sz))
_decl("pstore_tensor_acquire", _st, _p, _sz, ctypes.POINTER(_p))
_decl("pstore_tensor_acquire_many", _st, _p, ctypes.POINTER(_sz), _sz, ctypes.POINTER(_p))
_decl("pstore_tensor_release", _st, _p, _sz)
_decl("pstore_tensor_copy", _st, _p, _sz, _p, _sz)
_decl("pstore_model_prefetch", _st, _p, ctypes.POINTER(_sz), _sz)
_decl("pstore_model_prefetch_prefix", _st, _p, ctypes.c_char_p, ctypes.POINTER(_sz))
_decl("pstore_model_prefetch_wait", _st, _p)
_decl("pstore_model_stats_get", _st, _p, ctypes.POINTER(ModelStats))
_decl("pstore_import_options_default", None, ctypes.POINTER(ImportOptions))
_decl("pstore_import_file", _st, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
      ctypes.POINTER(ImportOptions), ctypes.c_char_p)
