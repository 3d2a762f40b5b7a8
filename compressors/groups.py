"""Weight groups: the parts of a model a layer-resolved study measures one at a time, read from the
model's layout (compressors.layout) for any family it reads.

    embed              the input (token) embedding
    unembed            the output embedding, where it is not tied to the input one
    block<i>.attn.in   block i's query, key and value projections (fused or separate)
    block<i>.attn.out  block i's attention output projection
    block<i>.mlp.in    block i's MLP input projection(s) (GPT-NeoX's dense_h_to_4h, Llama's gate and up)
    block<i>.mlp.out   block i's MLP output projection

A group holds weight matrices only (biases and norms belong to none); d_g counts their entries.
An MLP matrix reading the hidden state is an input projection, one writing it an output
projection; where the MLP is as wide as the hidden state, registration order decides (input first).
"""

from __future__ import annotations

from dataclasses import dataclass

from compressors import layout
from mdl_slt.errors import UserError

ROLES = {"embed": "embedding", "unembed": "unembedding", "attn": "attention", "mlp": "mlp"}


@dataclass
class WeightGroup:
    name: str
    params: list  # (parameter name, parameter) of its weight matrices

    @property
    def size(self) -> int:
        """d_g, the group's parameter count."""
        return sum(p.numel() for _, p in self.params)

    @property
    def role(self) -> str:
        """The compressor target role of its matrices (compressors.targets)."""
        return role_of(self.name)


def role_of(name: str) -> str:
    """The target role of a group's matrices, from its name."""
    return ROLES[name.split(".")[-2] if name.startswith("block") else name]


def _matrices(module, names: dict) -> list:
    """(name, weight) of the 2-D weights of `module` and its submodules."""
    return [(names[id(m.weight)], m.weight) for m in module.modules()
            if getattr(getattr(m, "weight", None), "ndim", 0) == 2 and id(m.weight) in names]


def weight_groups(model) -> list[WeightGroup]:
    """The model's weight groups (module docstring), embedding first, then block by block, then the
    unembedding; one clear line for a model whose blocks or attention cannot be read."""
    names = {id(p): n for n, p in model.named_parameters()}
    config = getattr(model, "config", None)
    groups = []
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embedding is not None:
        groups.append(WeightGroup("embed", [(names[id(embedding.weight)], embedding.weight)]))
    for i, block in enumerate(layout.blocks(model)):
        attention = layout.attention_of(block, config)
        inputs = [module.weight for module in attention.row_matrices()]
        groups.append(WeightGroup(f"block{i}.attn.in", [(names[id(w)], w) for w in inputs]))
        groups.append(WeightGroup(f"block{i}.attn.out", [(names[id(attention.output.weight)], attention.output.weight)]))
        in_attention = {id(p) for p in attention.module.parameters()}
        mlp = [(n, w) for n, w in _matrices(block, names) if id(w) not in in_attention]
        width = layout.matrix(attention.output.weight, attention.output).shape[0]
        shapes = {id(w): layout.matrix(w, _owner(block, w)).shape for _, w in mlp}
        reads = [(n, w) for n, w in mlp if shapes[id(w)][1] == width and shapes[id(w)][0] != width]
        writes = [(n, w) for n, w in mlp if shapes[id(w)][0] == width and shapes[id(w)][1] != width]
        if not reads and not writes and len(mlp) >= 2:  # as wide as the hidden state: by order
            reads, writes = mlp[:-1], mlp[-1:]
        if not reads or not writes:
            raise UserError(f"cannot read the MLP of {type(block).__name__}: expected matrices reading and writing "
                            f"the hidden state of {width}")
        groups.append(WeightGroup(f"block{i}.mlp.in", reads))
        groups.append(WeightGroup(f"block{i}.mlp.out", writes))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and (embedding is None or output.weight is not embedding.weight):
        groups.append(WeightGroup("unembed", [(names[id(output.weight)], output.weight)]))
    return groups


def _owner(block, weight):
    return next(m for m in block.modules() if getattr(m, "weight", None) is weight)


def select_groups(model, names) -> list[WeightGroup]:
    """The groups named `names` (in the model's order); an unknown name is one line listing the valid ones."""
    groups = weight_groups(model)
    known = {g.name for g in groups}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"no weight group {', '.join(map(repr, unknown))} in {type(model).__name__}: its groups are "
                        f"{', '.join(g.name for g in groups)} (`mdl-slt layers MODEL_REF --list`)")
    return [g for g in groups if g.name in set(names)]
