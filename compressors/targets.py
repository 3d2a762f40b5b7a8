"""Which parameters a compressor touches, by role: attention, mlp, embedding, unembedding, norm, bias.

Default: every weight matrix (attention, MLP, input embedding, unembedding); norms and biases
stay in fp32. The roles are read from module types, so any transformers causal LM works.
"""

from __future__ import annotations

ROLES = ("attention", "mlp", "embedding", "unembedding", "norm", "bias")
DEFAULT_TARGETS = ("attention", "mlp", "embedding", "unembedding")


def parameter_roles(model) -> list[tuple[str, object, str]]:
    """(name, parameter, role) for every parameter of `model`, each listed once."""
    import torch.nn as nn

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    seen, rows = set(), []
    for module_name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{module_name}.{pname}" if module_name else pname
            if param.ndim < 2:
                role = "norm" if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in module_name else "bias"
            elif module is output:
                role = "unembedding"
            elif isinstance(module, nn.Embedding):
                role = "embedding"
            elif "attn" in module_name or "attention" in module_name:
                role = "attention"
            else:
                role = "mlp"
            rows.append((full, param, role))
    return rows


def select_targets(model, roles) -> list[tuple[str, object]]:
    from mdl_slt.errors import UserError

    unknown = set(roles) - set(ROLES)
    if unknown:
        raise UserError(f"unknown target roles {sorted(unknown)}: choose from {list(ROLES)}")
    return [(n, p) for n, p, role in parameter_roles(model) if role in roles]
