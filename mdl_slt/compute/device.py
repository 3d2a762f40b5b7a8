"""Where the math runs: device choice, numerics (fp32 or bf16 autocast) and batch sizes.

Parameters stay fp32 everywhere. A measurement runs in one of two numerics, recorded with it:
`fp32`, or `bf16` autocast (matrix products in bf16 with fp32 accumulation, fp32 range so no loss
scaling; losses always reduced in fp32). fp16 is never used: its rounding would hide the small
loss increases a critical search looks for. Which measurement uses which is a setting
(`critical.numerics`, `llc.numerics`); the README gives the measured differences.
"""

from __future__ import annotations

from contextlib import nullcontext

from mdl_slt.errors import UserError

CPU_EVAL_BATCH = 32
NUMERICS_LABEL = {"fp32": "fp32", "bf16": "bf16-autocast"}


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


def autocast(device, numerics: str = "fp32"):
    """bf16 autocast on `device`'s kind for `numerics` 'bf16'; nothing for 'fp32'."""
    import torch

    if numerics == "fp32":
        return nullcontext()
    if numerics != "bf16":
        raise UserError(f"unknown numerics {numerics!r}: use fp32 or bf16")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


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
