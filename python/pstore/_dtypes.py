"""_dtypes: pstore's element types as numpy and torch types.

numpy has no bfloat16 and no 8-bit floats, so those are given as unsigned
integers of the same width holding the raw bits; torch gets torch.bfloat16.
torch 1.13 has no uint16/uint32/uint64 and no 8-bit floats: those tensors are
given as the signed integer (or uint8) of the same width, bits unchanged.
A dtype this version does not know is given as raw bytes (uint8, 1-D).
Immutable tables; thread-safe.
"""

import numpy as np

# pstore_dtype value: (name, numpy dtype, raw: True when numpy holds the bits only)
DTYPES = {
    1: ("BOOL", np.dtype(np.bool_), False),
    2: ("U8", np.dtype("u1"), False),
    3: ("I8", np.dtype("i1"), False),
    4: ("F8_E5M2", np.dtype("u1"), True),
    5: ("F8_E4M3", np.dtype("u1"), True),
    6: ("I16", np.dtype("<i2"), False),
    7: ("U16", np.dtype("<u2"), False),
    8: ("F16", np.dtype("<f2"), False),
    9: ("BF16", np.dtype("<u2"), True),
    10: ("I32", np.dtype("<i4"), False),
    11: ("U32", np.dtype("<u4"), False),
    12: ("F32", np.dtype("<f4"), False),
    13: ("F64", np.dtype("<f8"), False),
    14: ("I64", np.dtype("<i8"), False),
    15: ("U64", np.dtype("<u8"), False),
}

RAW = np.dtype("u1")


def numpy_dtype(code):
    """(numpy dtype, known) for a pstore dtype value."""
    d = DTYPES.get(code)
    return (d[1], True) if d else (RAW, False)


def name(code):
    d = DTYPES.get(code)
    return d[0] if d else f"dtype#{code}"


_TORCH = None


def torch_plan(code):
    """(numpy dtype torch.from_numpy accepts, torch dtype to view it as or None)."""
    global _TORCH
    import torch
    if _TORCH is None:
        _TORCH = {
            4: (np.dtype("u1"), None),
            5: (np.dtype("u1"), None),
            7: (np.dtype("<i2"), None),
            9: (np.dtype("<i2"), torch.bfloat16),
            11: (np.dtype("<i4"), None),
            15: (np.dtype("<i8"), None),
        }
    if code in _TORCH:
        return _TORCH[code]
    return numpy_dtype(code)[0], None


_TORCH_DTYPES = None


def torch_dtype(code):
    """The torch dtype of a pstore dtype (as torch_plan gives, in one step)."""
    global _TORCH_DTYPES
    if _TORCH_DTYPES is None:
        import torch
        _TORCH_DTYPES = {1: torch.bool, 2: torch.uint8, 3: torch.int8, 4: torch.uint8,
                         5: torch.uint8, 6: torch.int16, 7: torch.int16, 8: torch.float16,
                         9: torch.bfloat16, 10: torch.int32, 11: torch.int32,
                         12: torch.float32, 13: torch.float64, 14: torch.int64, 15: torch.int64}
    return _TORCH_DTYPES.get(code) or _TORCH_DTYPES[2]


def torch_itemsize(code):
    """Bytes per element of torch_dtype(code)."""
    d = DTYPES.get(code)
    return d[1].itemsize if d else 1
