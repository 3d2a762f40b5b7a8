"""Relative-entropy coding: a sample of a diagonal Gaussian posterior q sent in about KL(q‖p) bits.

Per matrix j of d_j weights the prior is p = N(0, s_j²) for every weight. Its weights are put in a
seeded random order and cut into n_j blocks of ⌊d_j / n_j⌋ or one more weights, with
n_j = ⌈KL_j / B⌉ so that a block holds about B = C − o bits of KL (C `block_bits`, o `overhead_bits`).
Each block's posterior is then moved along its family (`GaussianFamily.at`, one temperature per
block) until its KL is exactly B bits, where it can be (a block of weights the loss ignores holds
less). So KL(q‖p) = Σ_b KL_b ≤ n·B and every block's index costs C = B + o bits.

A block is sent by importance sampling over shared randomness (Havasi et al. 2019): K = 2^C
candidates x_k = s·z_k, z_k ~ N(0, I) from a generator the decoder seeds alike; the encoder picks
k with probability ∝ q(x_k)/p(x_k) (Gumbel-max, its own seeded generator) and sends k in C bits.
The decoder regenerates the candidates and reads x_k: a sample whose law approaches q as o grows
(K ≈ 2^o·e^KL candidates). The candidate stream of a matrix is fixed by (seed, j, K, n_j), so the
decoder draws exactly what the encoder drew, chunk for chunk, and its weights are the encoder's
bit for bit.

The bytes: a header (MAGIC, the seed, C, the matrix count), per matrix s_j (fp32) and n_j (u32),
then every block's index in C bits, matrix after matrix, padded to a byte. The description length
counts the seed (32 bits), C (8 bits) and 64 bits per matrix as side information and C bits per
block as payload; the magic and the matrix count (the architecture's) are not counted.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

MAGIC = b"MDLREC1"
CHUNK = 2**22  # candidate coordinates drawn at once
HOST = "cpu"  # the code is drawn and read on the host, whatever the model's device
LN2 = math.log(2.0)


@dataclass
class GaussianFamily:
    """The posteriors of one matrix (flattened): q_τ = N(μ(τ), σ²(τ)) with precision h/τ + 1/s²,
    mean (h/τ)·w/(h/τ + 1/s²) when it `shrinks` (the Gaussian posterior of ½·h·(v − w)² under the
    prior) or w itself; h ≥ 0 the loss's curvature per weight, τ the temperature (tensors broadcast)."""

    w: object  # float64 tensor
    h: object  # float64 tensor, ≥ 0
    scale: float  # the prior's s
    shrinks: bool = True

    def at(self, tau):
        """(μ, σ) at temperature τ."""
        weight = self.h / tau
        precision = weight + 1.0 / self.scale**2
        mean = weight * self.w / precision if self.shrinks else self.w.expand_as(precision)
        return mean, precision.rsqrt()

    def kl(self, tau):
        """KL(q_τ ‖ p) per weight, in nats: log(s/σ) + (σ² + μ²)/(2s²) − ½."""
        mean, sigma = self.at(tau)
        return kl_nats(mean, sigma, self.scale)


def kl_nats(mean, sigma, scale: float):
    """KL(N(μ, σ²) ‖ N(0, s²)) per weight, in nats."""
    import torch

    ratio = (sigma / scale) ** 2
    return 0.5 * (ratio + (mean / scale) ** 2 - 1.0 - torch.log(ratio))


def with_prior(w, h, tau: float, shrinks: bool, rounds: int = 4) -> GaussianFamily:
    """The family whose prior scale minimises KL(q_τ‖p) over the matrix, s² = mean(μ² + σ²), found
    by fixed-point iteration from s² = mean(w²) (a dead matrix gets s = 1)."""
    scale = float(w.pow(2).mean().sqrt()) or 1.0
    for _ in range(rounds):
        mean, sigma = GaussianFamily(w, h, scale, shrinks).at(tau)
        scale = float((mean.pow(2) + sigma.pow(2)).mean().sqrt()) or 1.0
    return GaussianFamily(w, h, struct.unpack("<f", struct.pack("<f", scale))[0], shrinks)  # as sent, in fp32


@dataclass
class MatrixPlan:
    """How one matrix is sent: its prior scale, its blocks and their posteriors."""

    scale: float
    order: object  # (blocks, m) indices of its weights in their seeded order, padded with −1
    mean: object  # (blocks, m) float64, the tempered posterior in block order (padding: q = p)
    sigma: object
    kl_bits: float  # KL(q‖p) of the tempered blocks

    @property
    def blocks(self) -> int:
        return self.mean.shape[0]

    @property
    def width(self) -> int:
        return self.mean.shape[1]


def _generator(seed: int, *salt: int):
    import torch

    value = seed
    for part in salt:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return torch.Generator(device="cpu").manual_seed(value)


def _padded_order(size: int, blocks: int, seed: int, index: int):
    """The seeded order of a matrix's `size` weights cut into `blocks` blocks, as (blocks, ⌈size/blocks⌉)
    indices: the first size mod blocks blocks one weight longer, the others padded with −1."""
    import torch

    order = torch.randperm(size, generator=_generator(seed, index, 1), device=HOST)
    short, longer = divmod(size, blocks)
    width = short + (longer > 0)
    rest = order[longer * width:].view(blocks - longer, short)
    rest = torch.cat([rest, rest.new_full((blocks - longer, width - short), -1)], dim=1)
    return torch.cat([order[:longer * width].view(longer, width), rest])


def plan_matrix(family: GaussianFamily, tau: float, budget_bits: float, seed: int, index: int) -> MatrixPlan:
    """Blocks of about `budget_bits` of KL at temperature τ (at most one a weight: a weight holds at
    most the budget), then each block's temperature moved (bisection in log τ) until its KL is exactly
    the budget, where its weights allow it: a block of ignored weights holds less; one whose fixed
    mean alone costs more (a mean that does not shrink pays Σ w²/(2s²) at any τ) holds more, and its
    sample is the less faithful to q."""
    import torch

    blocks = min(family.w.numel(), max(1, math.ceil(float(family.kl(tau).sum()) / LN2 / budget_bits)))
    order = _padded_order(family.w.numel(), blocks, seed, index)
    w, h = _blocked(family.w, order), _blocked(family.h, order)
    padded = order < 0
    block = GaussianFamily(w, h, family.scale, family.shrinks)
    low = torch.full((order.shape[0], 1), math.log(tau) - 40, dtype=torch.float64, device=HOST)
    high = torch.full_like(low, math.log(tau) + 40)
    target = budget_bits * LN2
    for _ in range(60):  # KL falls as τ rises
        middle = (low + high) / 2
        over = block.kl(middle.exp()).masked_fill(padded, 0).sum(1, keepdim=True) > target
        low, high = torch.where(over, middle, low), torch.where(over, high, middle)
    mean, sigma = block.at(high.exp())
    mean, sigma = mean.masked_fill(padded, 0.0), sigma.masked_fill(padded, family.scale)
    kl = float(kl_nats(mean, sigma, family.scale).masked_fill(padded, 0).sum()) / LN2
    return MatrixPlan(family.scale, order, mean, sigma, kl)


def _blocked(values, order):
    """`values` (flat) arranged as (blocks, m) in `order`, padding zero."""
    return values.reshape(-1)[order.clamp_min(0)].masked_fill(order < 0, 0)


def _pieces(blocks: int, block_size: int, candidates: int):
    """The candidate stream's chunks, (first block, blocks, first candidate, candidates), a function of
    the shapes alone so the decoder draws what the encoder drew."""
    per_piece = min(candidates, max(1, CHUNK // block_size))
    per_chunk = max(1, CHUNK // (per_piece * block_size))
    for first in range(0, blocks, per_chunk):
        for start in range(0, candidates, per_piece):
            yield first, min(per_chunk, blocks - first), start, min(per_piece, candidates - start)


def choose(plan: MatrixPlan, bits: int, seed: int, index: int):
    """Each block's index, k ~ q(x_k)/p(x_k) among the K = 2^bits shared candidates by Gumbel-max on
    log q/p = Σ ½z² − ½((s·z − μ)/σ)² + const (z the candidate's standard normals), and the flat
    weights they stand for, as the encoder sees them."""
    import torch

    shared, private = _generator(seed, index, 2), _generator(seed, index, 3)
    a = (0.5 * (1.0 - (plan.scale / plan.sigma) ** 2)).float()  # coefficient of z²
    b = (plan.scale * plan.mean / plan.sigma**2).float()  # coefficient of z
    best = torch.full((plan.blocks,), -math.inf, device=HOST)
    found = torch.zeros(plan.blocks, dtype=torch.long, device=HOST)
    picked = torch.zeros(plan.blocks, plan.width, device=HOST)
    for first, count, start, many in _pieces(plan.blocks, plan.width, 2**bits):
        z = torch.randn(count, many, plan.width, generator=shared, device=HOST)
        rows = slice(first, first + count)
        score = (z * z) @ a[rows].unsqueeze(-1) + z @ b[rows].unsqueeze(-1)
        uniform = torch.rand(count, many, generator=private, device=HOST).clamp_min(1e-30)
        top, at = (score.squeeze(-1) - torch.log(-torch.log(uniform))).max(dim=1)
        better = top > best[rows]
        best[rows] = torch.where(better, top, best[rows])
        found[rows] = torch.where(better, at + start, found[rows])
        picked[rows] = torch.where(better.unsqueeze(1), z[torch.arange(count, device=HOST), at], picked[rows])
    return found, _scatter(picked * plan.scale, plan.order)


def _scatter(blocked, order):
    """Block-ordered values back to the matrix's flat order."""
    import torch

    flat = torch.empty(int((order >= 0).sum()), dtype=blocked.dtype, device=HOST)
    real = order >= 0
    flat[order[real]] = blocked[real]
    return flat


def candidates_at(size: int, scale: float, indices, bits: int, seed: int, index: int):
    """The decoder's side: the flat matrix of `size` weights whose blocks are candidates `indices`."""
    import torch

    order = _padded_order(size, len(indices), seed, index)
    blocks, width = order.shape
    shared = _generator(seed, index, 2)
    picked = torch.zeros(blocks, width, device=HOST)
    for first, count, start, many in _pieces(blocks, width, 2**bits):
        z = torch.randn(count, many, width, generator=shared, device=HOST)
        rows = torch.arange(first, first + count, device=HOST)
        inside = (indices[rows] >= start) & (indices[rows] < start + many)
        if bool(inside.any()):
            chosen = rows[inside]
            picked[chosen] = z[inside.nonzero().squeeze(1), indices[chosen] - start]
    return _scatter(picked * scale, order)


def encode(plans: list[MatrixPlan], bits: int, seed: int) -> tuple[bytes, list]:
    """The bytes of the header and every block's chosen index (module docstring), and the flat fp32
    weights of each matrix as the encoder chose them (what `decode` must give back)."""
    import torch

    header = [MAGIC, struct.pack("<IBI", seed, bits, len(plans))]
    header += [struct.pack("<fI", plan.scale, plan.blocks) for plan in plans]
    chosen = [choose(plan, bits, seed, j) for j, plan in enumerate(plans)]
    indices = torch.cat([found for found, _ in chosen])
    return b"".join(header) + _pack(indices.numpy(), bits), [weights for _, weights in chosen]


def decode(data: bytes, sizes: list[int]) -> list:
    """The flat fp32 weights of each matrix (of `sizes` weights, known from the architecture)."""
    from mdl_slt.errors import UserError

    if not data.startswith(MAGIC):
        raise UserError("not a relative-entropy code: the bytes do not start with its header; "
                        "write them with compressors.rec.encode")
    at = len(MAGIC)
    seed, bits, count = struct.unpack_from("<IBI", data, at)
    at += struct.calcsize("<IBI")
    if count != len(sizes):
        raise UserError(f"the code holds {count} matrices but the model has {len(sizes)} targets: "
                        "decode it with the compressor settings it was written with")
    layout = [struct.unpack_from("<fI", data, at + i * 8) for i in range(count)]
    indices = _unpack(data[at + 8 * count:], bits, sum(blocks for _, blocks in layout))
    found, start = [], 0
    for j, (size, (scale, blocks)) in enumerate(zip(sizes, layout)):
        found.append(candidates_at(size, scale, indices[start:start + blocks], bits, seed, j))
        start += blocks
    return found


def _pack(values, bits: int) -> bytes:
    """Unsigned integers of `bits` bits each, most significant bit first, padded to a byte."""
    import numpy as np

    values = np.asarray(values, dtype=np.uint64).reshape(-1, 1)
    places = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    return np.packbits(((values >> places) & np.uint64(1)).astype(np.uint8).reshape(-1)).tobytes()


def _unpack(data: bytes, bits: int, count: int):
    import numpy as np
    import torch

    flags = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:bits * count].reshape(count, bits)
    return torch.from_numpy(flags.astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64)))
