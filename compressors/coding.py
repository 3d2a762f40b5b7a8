"""Entropy-coded sizes that are real codes: what a decoder needs, its code included.

A tensor of n integer symbols over an alphabet of N values is sent with a two-part
enumerative code: first its histogram, one of C(n + N − 1, N − 1) possible ones, then the
sequence among the n! / Π nᵢ! sequences with that histogram. In bits:

    coded = log₂ C(n + N − 1, N − 1) + log₂ (n! / Π nᵢ!)

(the second part is at most n·H, H the empirical entropy; the first is the cost of the code
itself, which a code built from its own histogram must pay). When the fixed-rate code
(n·log₂ N bits) is shorter, it is used instead, and one bit per tensor says which. So the
entropy-coded payload is never below what a decoder needs and never more than one bit above
the nominal one.
"""

from __future__ import annotations

import math


def log2_factorial(n: float) -> float:
    return math.lgamma(n + 1) / math.log(2)


def log2_binomial(n: float, k: float) -> float:
    return log2_factorial(n) - log2_factorial(k) - log2_factorial(n - k)


def enumerative_bits(counts, alphabet: int | None = None) -> float:
    """Histogram plus sequence given the histogram, for symbols with these `counts` over an
    alphabet of `alphabet` values (default: as many as there are counts)."""
    import numpy as np
    from scipy.special import gammaln

    counts = np.asarray(counts, dtype=np.int64)
    n, size = int(counts.sum()), alphabet or len(counts)
    histogram = log2_binomial(n + size - 1, size - 1)
    repeated = counts[counts > 1]  # log₂ 0! = log₂ 1! = 0
    return histogram + log2_factorial(n) - float(gammaln(repeated + 1.0).sum()) / math.log(2)


def coded_bits(counts, alphabet: int | None = None, fixed_bits: float | None = None) -> float:
    """The shorter of the enumerative code and the fixed-rate code (`fixed_bits`, default
    n·log₂ alphabet), plus one bit to say which."""
    size = alphabet or len(counts)
    fixed = fixed_bits if fixed_bits is not None else sum(counts) * math.log2(size)
    return 1.0 + min(enumerative_bits(counts, size), fixed)
