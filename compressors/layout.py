"""How a causal LM lays out its weights, read from its modules rather than from model-type names.

- **Matrices**: every compressor works on a weight as an (out × in) matrix: `nn.Linear` stores it
  so; GPT-2's `Conv1D` stores the transpose (in × out), so per-output-channel scales, GPTQ's
  column order and low-rank factor shapes all go through `matrix(...)`; an embedding is
  (tokens × width), one row per token.
- **Decoder blocks**: the model's `nn.ModuleList` of `config.num_hidden_layers` blocks.
- **Attention**: per block, its query/key/value projections and output projection, under one of
  the conventions the common families use: separate `q_proj`, `k_proj`, `v_proj` with `o_proj`,
  `out_proj` or `dense` (Llama, Qwen2, OPT, OLMo-2, Mistral, …); GPT-2's fused `c_attn` ([q | k | v]
  blocks) with `c_proj`; GPT-NeoX's fused `query_key_value` (q, k, v interleaved per head) with
  `dense`. Head counts come from the attention module (`num_heads`, `head_dim`,
  `num_key_value_groups`) or the model config; grouped-query attention is read from
  `num_key_value_heads`.
A new family works when its modules follow one of these conventions; one that does not is told
which modules were looked for, in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdl_slt.errors import UserError

OUTPUT_PROJECTIONS = ("o_proj", "out_proj", "dense", "c_proj")


def is_transposed(module) -> bool:
    """True for modules storing their weight as (in × out): GPT-2's Conv1D."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def matrix(weight, module=None):
    """`weight` as an (out × in) matrix (a view, so in-place writes reach the parameter);
    tensors of more than two dimensions are flattened after the first."""
    if module is not None and is_transposed(module):
        return weight.T
    return weight if weight.ndim == 2 else weight.reshape(weight.shape[0], -1)


def owners(model) -> dict[int, object]:
    """id(parameter) → the module that owns it (the first, for tied parameters)."""
    found = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            found.setdefault(id(param), module)
    return found


def blocks(model) -> list:
    """The decoder blocks: the largest ModuleList of `config.num_hidden_layers` modules."""
    import torch.nn as nn

    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0
             and (count is None or len(m) == count)]
    if not lists:
        raise UserError(f"cannot find the decoder blocks of {type(model).__name__}: expected an nn.ModuleList of "
                        f"{count or 'the'} transformer layers")
    return list(max(lists, key=lambda m: sum(p.numel() for p in m.parameters())))


@dataclass
class Attention:
    """One attention module's projections and heads. Head h owns query rows [h·d, (h+1)·d) and
    output-projection input columns [h·d, (h+1)·d); key/value head g = h // group serves
    `group` consecutive query heads."""

    module: object
    projections: dict  # "q", "k", "v" → (module, row offset) for separate or GPT-2 layouts; "qkv" for GPT-NeoX
    output: object  # the output projection
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads

    def rows(self, part: str, head: int) -> tuple[object, slice]:
        """(module, row slice in its (out × in) matrix) of head `head`'s `part` ∈ {q, k, v}."""
        d = self.head_dim
        if "qkv" in self.projections:  # GPT-NeoX: per head, its q, k and v rows one after another
            module = self.projections["qkv"]
            start = head * 3 * d + "qkv".index(part) * d
            return module, slice(start, start + d)
        module, offset = self.projections[part]
        return module, slice(offset + head * d, offset + (head + 1) * d)

    def columns(self, head: int) -> slice:
        """Head `head`'s input columns of the output projection."""
        return slice(head * self.head_dim, (head + 1) * self.head_dim)

    @property
    def shared_norm(self) -> bool:
        """True when queries or keys are normalised across all heads at once (OLMo-2's q_norm and
        k_norm): then a pruned head's query and key rows still shape the other heads."""
        norms = [getattr(self.module, name, None) for name in ("q_norm", "k_norm")]
        return any(n is not None and getattr(n, "weight", None) is not None and n.weight.numel() > self.head_dim
                   for n in norms)

    def row_matrices(self) -> list:
        """Modules whose rows are grouped by head (query, key, value projections)."""
        seen = []
        for value in self.projections.values():
            module = value[0] if isinstance(value, tuple) else value
            if all(module is not m for m in seen):
                seen.append(module)
        return seen


def _count(module, config, *names, default=None):
    for source in (module, config):
        for name in names:
            value = getattr(source, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return default


def attention_of(block, config) -> Attention:
    """The attention module of a decoder block, with its projections and head layout."""
    candidates = [m for m in block.modules() if m is not block and
                  any(hasattr(m, name) for name in ("q_proj", "c_attn", "query_key_value"))]
    if not candidates:
        raise UserError(f"cannot read the attention of {type(block).__name__}: expected a module with q_proj/k_proj/"
                        "v_proj and o_proj (or out_proj/dense), GPT-2's c_attn and c_proj, or GPT-NeoX's "
                        "query_key_value and dense")
    attention = candidates[0]
    output = next((getattr(attention, n) for n in OUTPUT_PROJECTIONS if hasattr(attention, n)), None)
    if output is None:
        raise UserError(f"cannot find the output projection of {type(attention).__name__}: expected one of "
                        f"{', '.join(OUTPUT_PROJECTIONS)}")
    heads = _count(attention, config, "num_heads", "num_attention_heads", "n_head")
    if heads is None:
        raise UserError(f"{type(attention).__name__} says nothing of its head count: expected `num_heads` on the module "
                        "or `num_attention_heads` in the config")
    width = matrix(output.weight, output).shape[1]
    head_dim = _count(attention, config, "head_dim", default=width // heads)
    groups = _count(attention, None, "num_key_value_groups")
    kv_heads = heads // groups if groups else _count(attention, config, "num_key_value_heads", default=heads)
    if heads * head_dim != width or heads % kv_heads:
        raise UserError(f"{type(attention).__name__}: {heads} heads of {head_dim} do not match an output projection "
                        f"of {width} inputs (or {kv_heads} key/value heads do not divide {heads})")
    if hasattr(attention, "q_proj"):
        projections = {p: (getattr(attention, f"{p}_proj"), 0) for p in "qkv"}
    elif hasattr(attention, "c_attn"):  # GPT-2: [q | k | v], each heads × head_dim wide
        projections = {p: (attention.c_attn, i * width) for i, p in enumerate("qkv")}
    else:  # GPT-NeoX: per head, its query, key and value rows together
        fused = matrix(attention.query_key_value.weight, attention.query_key_value).shape[0]
        if kv_heads != heads or fused != 3 * width:
            raise UserError(f"{type(attention).__name__}: a fused query_key_value of {fused} rows for {heads} heads "
                            f"({kv_heads} key/value heads) is not a layout mdl-slt knows (GPT-NeoX's has 3 × {width})")
        projections = {"qkv": attention.query_key_value}
    return Attention(attention, projections, output, heads, kv_heads, head_dim)


def attentions(model) -> list[Attention]:
    """The attention of every decoder block, in order."""
    config = getattr(model, "config", None)
    return [attention_of(block, config) for block in blocks(model)]
