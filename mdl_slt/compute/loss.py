"""Per-token cross-entropy of a causal language model, the loss every measurement uses.

L(w) = mean over sequences and positions t of −log p_w(x_{t+1} | x_{≤t}), in nats per token,
reduced in fp32; the forward pass in fp32 or under bf16 autocast (`numerics`, see `mdl_slt.compute.device`).
"""

from __future__ import annotations

from contextlib import contextmanager

from mdl_slt.compute.device import autocast, eval_batch_size


@contextmanager
def eager_attention(model):
    """The model's attention as plain matrix products for the block: differentiable twice (for
    Hessian-vector products) and batched under vmap, which fused CPU attention kernels are not.
    Models without a choice of attention are left as they are."""
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if before is None or before == "eager" or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def next_token_logits(model, tokens, numerics: str = "fp32"):
    """The fp32 logits predicting each next token of a (batch, length) LongTensor: (batch, length − 1, V)."""
    with autocast(tokens.device, numerics):
        logits = model(input_ids=tokens).logits[:, :-1]
    return logits.float()


def token_nll(model, tokens, numerics: str = "fp32"):
    """Mean next-token negative log-likelihood of a (batch, length) LongTensor; differentiable."""
    import torch.nn.functional as F

    logits = next_token_logits(model, tokens, numerics)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def sequence_losses(model, tokens, batch_size: int | None = None, numerics: str = "fp32"):
    """Each sequence's mean next-token NLL over a fixed token set (a float64 numpy array, one entry
    per row), under inference mode; batches go to the model's device, sized to it unless
    `batch_size` is given. Paired across models on the same tokens, their differences give every
    loss difference its standard error."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    batch_size = batch_size or eval_batch_size(model, tokens.shape[1])
    found = []
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            batch = tokens[start:start + batch_size].to(device)
            logits = next_token_logits(model, batch, numerics)
            nll = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
            found.append(nll.double().mean(dim=1).cpu().numpy())
    return np.concatenate(found)


def evaluate_loss(model, tokens, batch_size: int | None = None, numerics: str = "fp32") -> float:
    """Mean per-token NLL over a fixed token set (every sequence has the same length, so the mean of
    `sequence_losses`), accumulated in float64."""
    return float(sequence_losses(model, tokens, batch_size, numerics).mean())


def divergence_from(model):
    """The loss D(w) = mean over positions of KL(p_w*(·|x) ‖ p_w(·|x)), in nats per token, against a
    frozen copy of `model` at w* (its parameters now), in fp32: zero with zero gradient at w*, so w*
    is its minimum at every nβ, and near w* its minibatch noise vanishes with it. `loss(model, tokens)`."""
    import copy

    import torch
    import torch.nn.functional as F

    teacher = copy.deepcopy(model).eval().requires_grad_(False)

    def loss(model, tokens):
        with torch.no_grad():
            target = F.log_softmax(next_token_logits(teacher, tokens), dim=-1)
        return F.kl_div(F.log_softmax(next_token_logits(model, tokens), dim=-1), target, log_target=True,
                        reduction="none").sum(-1).mean()

    return loss
