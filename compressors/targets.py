"""Which parameters a compressor touches, by role: attention, mlp, embedding, unembedding, norm, bias.

Default: every weight matrix (attention, MLP, input embedding, unembedding); norms and biases
stay in fp32. Roles are read from the modules: vectors are norms (in a normalisation module) or
biases; the output embedding is the unembedding; an `nn.Embedding` is an embedding; weights of
the attention modules compressors.layout finds are attention (by module name where the layout
cannot be read); the rest is MLP. A tied embedding and unembedding is one parameter, listed once,
as `embedding`. `groups` narrows any role to named weight groups (compressors.groups).
"""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["attention", "mlp", "embedding", "unembedding", "norm", "bias"]
ROLES = get_args(Role)
DEFAULT_TARGETS = ("attention", "mlp", "embedding", "unembedding")


def parameter_roles(model) -> list[tuple[str, object, str]]:
    """(name, parameter, role) for every parameter of `model`, each listed once."""
    import torch.nn as nn

    from compressors import layout
    from mdl_slt.errors import UserError

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    try:
        in_attention = {id(p) for a in layout.attentions(model) for p in a.module.parameters()}
    except UserError:  # not a transformer the layout module reads: fall back on module names
        in_attention = None
    seen, rows = set(), []
    for module_name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{module_name}.{pname}" if module_name else pname
            if param.ndim < 2:
                normalising = isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(module).__name__.lower()
                role = "norm" if normalising or "norm" in module_name.rsplit(".", 1)[-1] else "bias"
            elif module is output:
                role = "unembedding"
            elif isinstance(module, nn.Embedding):
                role = "embedding"
            elif (id(param) in in_attention) if in_attention is not None else \
                    ("attn" in module_name or "attention" in module_name):
                role = "attention"
            else:
                role = "mlp"
            rows.append((full, param, role))
    return rows


def select_targets(model, roles, groups=None) -> list[tuple[str, object]]:
    """(name, parameter) of every parameter in `roles` and, when `groups` names weight groups
    (compressors.groups), in one of them."""
    from mdl_slt.errors import UserError

    unknown = set(roles) - set(ROLES)
    if unknown:
        raise UserError(f"unknown target roles {sorted(unknown)}: choose from {list(ROLES)}")
    chosen = [(n, p) for n, p, role in parameter_roles(model) if role in roles]
    if groups is None:
        return chosen
    from compressors.groups import select_groups

    inside = {id(p) for g in select_groups(model, groups) for _, p in g.params}
    return [(n, p) for n, p in chosen if id(p) in inside]
