#!/usr/bin/env python3
"""A real computation on pstore's zero-copy weights: a small torch module is
evaluated with torch.func.functional_call (torch.nn.utils.stateless in torch
1.13) on model.state_dict(), and its output is checked against the same
module with its weights loaded from the safetensors file.

    /usr/bin/python3 examples/functional_call.py [STORE]

Writes the module's weights to a safetensors file, publishes them with
pstore.import_file into STORE (default: a temporary folder), opens them, and
runs a forward pass whose parameters are views of the shared mapping (no
copy). Prints the output's difference to the reference (0.0) and exits 1 if
they differ.
"""

import json
import os
import struct
import sys
import tempfile

import torch

try:
    from torch.func import functional_call
except ImportError:  # torch < 2.0
    from torch.nn.utils.stateless import functional_call

import pstore


class MLPBlock(torch.nn.Module):
    """A transformer-style MLP block: RMS norm, gated SiLU, residual."""

    def __init__(self, d=256, hidden=688):
        super().__init__()
        self.norm = torch.nn.Parameter(torch.ones(d))
        self.gate = torch.nn.Linear(d, hidden, bias=False)
        self.up = torch.nn.Linear(d, hidden, bias=False)
        self.down = torch.nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm
        return x + self.down(torch.nn.functional.silu(self.gate(h)) * self.up(h))


DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def save_safetensors(state, path):
    """Writes a state dict as safetensors (the format's header, then the bytes)."""
    header, blobs, off = {}, [], 0
    for name, t in state.items():
        t = t.detach().contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_safetensors(path):
    """The reference: the same weights read from the file into torch tensors."""
    import numpy as np
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    np_types = {"F32": np.float32, "F16": np.float16, "BF16": np.int16}
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        arr = np.frombuffer(data, np_types[t["dtype"]], offset=8 + n + a,
                            count=(b - a) // np.dtype(np_types[t["dtype"]]).itemsize)
        x = torch.from_numpy(arr.copy()).reshape(t["shape"])
        out[name] = x.view(torch.bfloat16) if t["dtype"] == "BF16" else x
    return out


def main():
    store_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pstore-example-")
    torch.manual_seed(0)
    block = MLPBlock().to(torch.bfloat16)
    src = os.path.join(store_dir, "mlp_block.safetensors")
    os.makedirs(store_dir, exist_ok=True)
    save_safetensors(block.state_dict(), src)
    digest = pstore.import_file(src, "example/mlp-block:v1", store=os.path.join(store_dir, "store"),
                                force=True)

    x = torch.randn(4, 256, dtype=torch.bfloat16)
    reference = MLPBlock().to(torch.bfloat16)
    reference.load_state_dict(load_safetensors(src))
    want = reference(x)

    with pstore.Store(os.path.join(store_dir, "store")) as store, \
            store.open("example/mlp-block:v1") as model:
        weights = model.state_dict()  # views of the shared mapping
        ptrs = {n: t.data_ptr() for n, t in weights.items()}
        with torch.no_grad():
            got = functional_call(MLPBlock().to(torch.bfloat16), weights, (x,))
        # functional_call used the views themselves, not copies.
        assert all(weights[n].data_ptr() == p for n, p in ptrs.items())
    diff = (got.float() - want.float()).abs().max().item()
    print(f"model {digest[:12]}: {len(weights)} tensors, zero-copy; output {tuple(got.shape)}, "
          f"max difference to the safetensors-loaded module {diff}")
    return 0 if torch.equal(got, want) else 1


if __name__ == "__main__":
    sys.exit(main())
