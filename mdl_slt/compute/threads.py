"""Torch thread count as a setting.

On a small shared box one thread is often fastest: with two, an SVD ran up to 27x slower
while the other core was busy. The CLI defaults to one; pass more on a machine of your own.
"""

from __future__ import annotations


def set_threads(threads: int) -> None:
    import torch

    if threads < 1:
        from mdl_slt.errors import UserError

        raise UserError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
