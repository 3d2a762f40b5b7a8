"""Per-checkpoint state too large to hold twice, kept in memory-mapped files.

A compressor snapshots the weights it touches (to restore them between knob values), and some
keep per-layer caches (SVD factors, GPTQ's inverse-Hessian factors). For a model whose targeted
weights exceed `spill_bytes()` (default 2 GiB; `MDL_SLT_SPILL_BYTES` overrides), these are
written once, layer by layer, to files in a temporary directory and mapped back (copy-on-write,
never written to): the operating system pages a layer in while it is used and may drop it after, so memory holds one
copy of the model plus one layer's working set, and on a GPU the device holds only the model.
The directory is removed when the prepared state is released.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

DEFAULT_SPILL_BYTES = 2 * 2**30


def spill_bytes() -> int:
    return int(os.environ.get("MDL_SLT_SPILL_BYTES", DEFAULT_SPILL_BYTES))


class Spill:
    """A temporary directory of memory-mapped tensors, removed with this object."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="mdl-slt-spill-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.count = 0

    def put(self, tensor):
        """`tensor` written to its own file and mapped back (CPU pages read from disk on use)."""
        import torch

        path = self.dir / f"{self.count}.pt"
        self.count += 1
        torch.save(tensor.detach().to("cpu").contiguous(), path)
        return torch.load(path, mmap=True)
