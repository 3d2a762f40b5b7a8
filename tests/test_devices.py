"""Device placement, checked without a GPU: with torch's default device set to `meta` while the
model lives on the CPU, any tensor our code makes without naming its device lands on `meta`
and the first operation mixing it with the model's tensors fails. Every compressor, the LLC
estimator (vectorised and sequential, RMSProp, gradient checkpointing), the curvature helper
and the calibration sweep must pass; on CUDA the same mistakes would put tensors on the host."""

import math
from contextlib import contextmanager

import pytest
import torch

import compressors
from mdl_slt.compute.loss import evaluate_loss
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.sampling import estimate_llc


@contextmanager
def meta_default():
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def test_the_guard_catches_a_tensor_made_on_the_default_device(tiny_checkpoint):
    weight = next(tiny_checkpoint.model.parameters())
    with meta_default(), pytest.raises((RuntimeError, NotImplementedError)):
        float((weight.reshape(-1)[:4] + torch.ones(4)).sum())


@pytest.mark.parametrize("name", compressors.names())
def test_every_compressor_places_its_tensors(name, tiny_checkpoint, tiny_tokens):
    model = tiny_checkpoint.model
    method = compressors.get(name, **({"retrain_steps": 2, "selection": "importance"} if name == "heads" else {}))
    k = method.knob
    with meta_default():
        prepared = method.prepare(model, tiny_tokens.train)
        value = method.snap(k.least + 0.6 * (k.most - k.least), prepared)
        with method.applied(model, prepared, value):
            loss = evaluate_loss(model, tiny_tokens.eval)
        length = method.description_length(prepared, value)
    assert math.isfinite(loss) and math.isfinite(length.entropy_total_bits)
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize("options", [{"vectorize": "always"}, {"vectorize": "never"}, {"sampler": "rmsprop"},
                                     {"gradient_checkpointing": True}])
def test_the_llc_estimator_places_its_tensors(options, tiny_checkpoint, tiny_tokens):
    config = LLCConfig(step_size=1e-4, num_chains=2, num_draws=8, num_burnin=2, batch_size=4, **options)
    with meta_default():
        result = estimate_llc(tiny_checkpoint.model, tiny_tokens.train, config)
    assert math.isfinite(result.llc_mean)


def test_curvature_and_calibration_place_their_tensors(tiny_checkpoint, tiny_tokens):
    from mdl_slt.compute.loss import token_nll
    from mdl_slt.llc.calibrate import run_sweep
    from mdl_slt.llc.curvature import top_hessian_eigenvalue

    with meta_default():
        top = top_hessian_eigenvalue(tiny_checkpoint.model, tiny_tokens.train, token_nll, batch_size=4, iterations=3)
        settings = run_sweep(tiny_checkpoint.model, tiny_tokens.train,
                             LLCConfig(num_chains=2, num_draws=6, num_burnin=2, batch_size=4),
                             step_sizes=(1e-4,), n_betas=(30.0,))
    assert math.isfinite(top) and len(settings) == 1


def test_bf16_autocast_on_cpu_moves_a_critical_search_and_an_llc_less_than_their_own_errors(tiny_checkpoint,
                                                                                            tiny_tokens):
    """The bf16 path CUDA takes, run end to end on CPU (autocast: products in bf16, reductions in
    fp32), beside fp32 on the same checkpoint, sequences and seeds. The tolerance is the answer's own
    sampling error, the criterion for using bf16 at all: the base loss within 3 of its standard
    errors over the held-out sequences, each critical value within 3 of its bootstrap standard
    errors, λ̂ within 3 standard errors of the difference of two estimates, √(se₁² + se₂²).
    Measured: base loss 3.03604 against 3.03607 (se 0.05), rtn at ε 0.05 2.2373 against 2.2419 bits
    (se 0.094), λ̂ 2.889 against 2.886 (se 0.24)."""
    from mdl_slt.compute.loss import sequence_losses
    from mdl_slt.run.measure import measure_critical

    model, rtn = tiny_checkpoint.model, compressors.get("rtn")
    found = {}
    for numerics in ("fp32", "bf16"):
        base = sequence_losses(model, tiny_tokens.eval, numerics=numerics)
        found[numerics] = base, measure_critical(tiny_checkpoint, tiny_tokens, rtn, base, [0.05, 0.2], 0.05, numerics)
    (exact, full), (mixed, half) = found["fp32"], found["bf16"]
    assert float(mixed.mean()) != float(exact.mean())  # autocast took the products
    loss_se = float(exact.std()) / math.sqrt(len(exact))
    assert abs(float(mixed.mean()) - float(exact.mean())) <= 3 * loss_se
    for p, q in zip(full.points(), half.points()):
        assert abs(p["interpolated"] - q["interpolated"]) <= 3 * p["se"], (p, q)
    config = LLCConfig(step_size=1e-4, num_chains=4, num_draws=100, num_burnin=20, batch_size=8, seed=3)
    one, other = (estimate_llc(model, tiny_tokens.train, config.model_copy(update={"numerics": n}))
                  for n in ("fp32", "bf16"))
    assert other.config["numerics"] == "bf16" and one.llc_mean != other.llc_mean
    assert abs(one.llc_mean - other.llc_mean) <= 3 * math.hypot(one.llc_std_error, other.llc_std_error)
