"""Where the math runs: device choice, mixed precision and batch sizes.

Parameters stay fp32 everywhere. On CUDA, forward and backward passes run under bf16 autocast
(fp32 range, so no loss scaling) and losses are reduced in fp32; fp16 is never used, because its
rounding would hide the small loss increases a critical search looks for. On CPU all is fp32.
"""

from __future__ import annotations

from contextlib import nullcontext

from mdl_slt.errors import UserError

CPU_EVAL_BATCH = 32


def resolve_device(name: str = "auto") -> str:
    """'cuda' or 'cpu' for `auto` | `cuda` | `cpu`; asking for CUDA without one is a clear error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch (install a CUDA build of torch, "
                        "or use --device cpu)")
    if name not in ("cuda", "cpu"):
        raise UserError(f"unknown device {name!r}: use cpu, cuda or auto")
    return name


def autocast(device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    import torch

    kind = torch.device(device).type
    return torch.autocast("cuda", dtype=torch.bfloat16) if kind == "cuda" else nullcontext()


def eval_batch_size(model, context_length: int) -> int:
    """Sequences per loss-evaluation batch: 32 on CPU; on CUDA as many as half the free memory
    holds, at about 10 bytes per logit (bf16 logits, their fp32 copy and the softmax) plus the
    activations, 64 bytes per hidden unit per layer and token."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return CPU_EVAL_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    cfg = model.config
    per_sequence = context_length * (10 * cfg.vocab_size + 64 * cfg.hidden_size * cfg.num_hidden_layers)
    return max(1, min(1024, int(0.5 * free // per_sequence)))
