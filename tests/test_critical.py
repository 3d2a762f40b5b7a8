import math

import pytest

from compressors.registry import Knob
from mdl_slt.measures.critical import find_critical

BITS = Knob("bits", 1.0, 16.0, 32.0, "lower", "bits", "test knob", 0.01)
SPARSITY = Knob("sparsity", 0.0, 1.0, 0.0, "higher", "", "test knob", 0.001)


def test_finds_smallest_passing_bits_within_precision():
    # Δ(b) = 2^-b, so Δ ≤ ε exactly when b ≥ log2(1/ε)
    calls = []

    def loss(b):
        calls.append(b)
        return 1.0 + 2.0 ** -b

    epsilons = [0.01, 0.05, 0.2]
    found = find_critical(loss, 1.0, epsilons, BITS, precision=0.01)
    for point in found.points:
        truth = math.log2(1 / point.epsilon)
        assert point.value >= truth - 1e-9 and point.value - truth <= 0.01
        assert point.beyond < truth and point.monotone
    assert found.num_evaluations == len(set(calls)) == len(calls)  # each value evaluated once


def test_evaluations_are_shared_between_epsilons():
    loss = lambda b: 2.0 ** -b  # noqa: E731
    separate = sum(find_critical(loss, 0.0, [e], BITS, 0.01).num_evaluations for e in (0.01, 0.011, 0.012))
    together = find_critical(loss, 0.0, [0.01, 0.011, 0.012], BITS, 0.01).num_evaluations
    assert together < separate


def test_discrete_knob_is_exact():
    snap = lambda b: math.log2(max(2, round(2**b)))  # noqa: E731
    found = find_critical(lambda b: 1.0 / round(2**b), 0.0, [0.1], BITS, precision=1e-9, snap=snap)
    assert found.points[0].value == pytest.approx(math.log2(10))  # 1/10 ≤ 0.1 < 1/9
    assert found.points[0].beyond == pytest.approx(math.log2(9))


def test_ends_of_the_range():
    found = find_critical(lambda b: 0.0, 0.0, [0.1], BITS, 0.01)
    assert found.points[0].value == 1.0 and found.points[0].beyond is None
    found = find_critical(lambda b: 1.0, 0.0, [0.1], BITS, 0.01)
    assert found.points[0].value is None and found.points[0].beyond == 16.0


def test_higher_is_more_compression():
    found = find_critical(lambda s: s**2, 0.0, [0.25], SPARSITY, 1e-3)
    assert found.points[0].value == pytest.approx(0.5, abs=1e-3) and found.points[0].value <= 0.5


def test_non_monotone_curve_is_flagged():
    # a bump: Δ = 0.08 between 6 and 12 bits but 0.03 between 3 and 6, so ε = 0.05 has no single
    # threshold; the search for ε = 0.1 evaluates inside the dip and exposes it
    def loss(b):
        return 0.0 if b >= 12 else 0.08 if b >= 6 else 0.03 if b >= 3 else 1.0

    found = find_critical(loss, 0.0, [0.05, 0.1], BITS, 0.01)
    flags = {p.epsilon: p.monotone for p in found.points}
    assert flags == {0.05: False, 0.1: True}
    assert found.monotone is False


def test_negative_epsilon_is_refused():
    with pytest.raises(ValueError):
        find_critical(lambda b: 0.0, 0.0, [-0.1], BITS, 0.01)


def test_a_non_finite_loss_fails_every_tolerance_and_is_listed():
    # NaN at 2 bits and below: it is the only failure for ε = 1 (the old search raised on an empty bracket)
    def loss(b):
        return math.nan if b <= 2 else 1.0 + 0.01 / b

    found = find_critical(loss, 1.0, [0.001, 1.0], BITS, precision=0.01)
    points = {p.epsilon: p for p in found.points}
    assert points[1.0].value > 2 and points[1.0].value - 2 <= 0.01 and math.isnan(found.evaluations[points[1.0].beyond])
    assert points[1.0].monotone and points[1.0].interpolation == "none"  # no finite failing loss to interpolate to
    assert found.nonfinite and all(v <= 2 for v in found.nonfinite)
    everywhere = find_critical(lambda b: math.inf, 0.0, [0.1], BITS, 0.01)
    assert everywhere.points[0].value is None and everywhere.nonfinite == [16.0]
    # a NaN less compressing than a passing point breaks monotonicity like any other failure
    losses = {16.0: 0.0, 7.0: math.nan, 4.0: 0.05, 1.0: 0.5}
    bump = find_critical(losses.get, 0.0, [0.1, 0.6], BITS, 0.01, levels=list(losses))
    assert [p.monotone for p in bump.points] == [True, False] and bump.nonfinite == [7.0]


def test_the_interpolated_critical_value_is_where_log_loss_crosses_epsilon():
    # ΔL = 2^-b: log ΔL is linear in b, so log-linear interpolation between any bracket is exact
    found = find_critical(lambda b: 2.0 ** -b, 0.0, [0.01, 0.05, 0.2], BITS, precision=0.5)
    for p in found.points:
        assert p.interpolation == "log-linear"
        assert p.interpolated == pytest.approx(math.log2(1 / p.epsilon), rel=1e-9)
        assert p.beyond <= p.interpolated <= p.value and p.wide == (abs(p.value - p.beyond) > 0.5)
    # a passing point with no loss increase interpolates linearly in ΔL
    flat = find_critical(lambda b: 0.0 if b >= 8 else 0.1 * (8 - b), 0.0, [0.05], BITS, precision=5.0)
    point = flat.points[0]  # bracket (8.5: ΔL 0, 4.75: ΔL 0.325)
    assert (point.value, point.beyond, point.interpolation) == (8.5, 4.75, "linear")
    assert point.interpolated == pytest.approx(8.5 - 0.05 / 0.325 * 3.75)


def test_a_discrete_knob_is_bisected_over_its_levels_each_evaluated_once():
    levels = [math.log2(n) for n in range(65536, 1, -2)]  # even level counts, least compressing first
    calls = []

    def loss(b):
        calls.append(b)
        return 1.0 / round(2**b) ** 2

    found = find_critical(loss, 0.0, [0.01, 0.002], BITS, precision=1e-9, levels=levels)
    assert len(calls) == len(set(calls)) == found.num_evaluations and set(calls) <= set(levels)
    low, high = found.points  # ε = 0.002, 0.01: 1/N² ≤ ε from N = 24 and N = 10
    assert low.value == pytest.approx(math.log2(24)) and low.beyond == pytest.approx(math.log2(22))
    assert high.value == pytest.approx(math.log2(10)) and high.beyond == pytest.approx(math.log2(8))
    assert found.num_evaluations <= 16  # bisection in bits, not in level counts
