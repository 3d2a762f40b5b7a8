"""The top Hessian eigenvalue of the loss at w*, for reasoning about SGLD step sizes.

SGLD's discretization bias grows with ε·nβ·λ_max(∇²L). In the deep-linear-network ground truth
(README), ε·nβ·λ_max ≈ 0.3 estimated λ within 5% for networks up to 23k parameters; ≈ 0.6
overestimated the largest ones by 9–26%, and 0.01–0.02 had not mixed after 4,500 steps
(R̂ ≈ 1.7, 17–38% low). Use it with `mdl-slt llc calibrate`, which checks the chains directly.
"""

from __future__ import annotations


def top_hessian_eigenvalue(model, data, loss_fn, batch_size: int = 1024, iterations: int = 30, seed: int = 0) -> float:
    """λ_max of ∇²L at the current parameters by power iteration on Hessian-vector products,
    over the first `batch_size` items of `data`."""
    import torch

    from mdl_slt.sgld import _pick, data_size

    params = [p for p in model.parameters() if p.requires_grad]
    batch = _pick(data, slice(0, min(batch_size, data_size(data))))
    gen = torch.Generator(device="cpu").manual_seed(seed)  # the same start vector on any device
    vector = [torch.randn(p.shape, generator=gen, device="cpu").to(p.device) for p in params]
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = torch.sqrt(sum((v**2).sum() for v in vector))
        vector = [v / norm for v in vector]
        grads = torch.autograd.grad(loss_fn(model, batch), params, create_graph=True)
        product = torch.autograd.grad(grads, params, grad_outputs=vector)
        eigenvalue = float(sum((h * v).sum() for h, v in zip(product, vector)))
        vector = [h.detach() for h in product]
    return eigenvalue
