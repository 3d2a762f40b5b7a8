"""The sampling artifact and the estimate read from it. Needs numpy and arviz, not torch.

A `Trace` is what SGLD produced: every chain's minibatch loss at every step, burn-in included
(NaN once a chain stopped), L(w*) and its standard error, nβ, the number of sampled parameters,
the loss of a uniform prediction where there is one, which chains diverged and why, and the
resolved sampler settings. It is stored compactly (float32, compressed) beside the LLC's row,
so λ̂ can be re-estimated with another burn-in or thinning without sampling again.

`estimate(trace, burnin, thinning)`:
    λ̂_c = nβ·(mean of chain c's draws − L(w*)),   λ̂ = mean over healthy chains,
draws being the steps after the burn-in, thinned. The burn-in, unless fixed, ends where the
transient does, by MSER-5 (White 1997) on the healthy chains' mean trace: the truncation point,
over batch means of 5 steps, that minimises the squared standard error of the remaining mean,
searched within the first half. Uncertainty, reported together: rank-normalised split R̂, bulk
ESS per chain and pooled (arviz), the Monte-Carlo standard error of λ̂ from the pooled ESS,
the spread between chain means, and the reference loss's error:
    se = √( max(MCSE_ESS, sd(λ̂_c)/√C)² + (nβ·se(L(w*)))² ).
`converged`: R̂ ≤ target, pooled ESS ≥ target, and at least RELAXATIONS relaxation times of the
slowest direction the localization alone holds sampled (`samplers.relaxation_steps`): chains that all start
at w* drift together along such directions for that long, and R̂, which compares chains, cannot
see it.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mdl_slt.errors import UserError
from mdl_slt.llc.samplers import relaxation_steps

MSER_BATCH = 5
RELAXATIONS = 4  # relaxation times of the slowest γ-held direction a converged run has sampled


class AllChainsDiverged(UserError):
    """Every chain of a run diverged: there is nothing to estimate from (the message says which step to try)."""


@dataclass
class Trace:
    losses: np.ndarray  # (chains, steps) float32, minibatch loss at every step; NaN after a chain stopped
    init_loss: float  # L(w*)
    init_se: float  # its standard error (0 over the whole set)
    n_beta: float
    num_params: int  # parameters sampled
    uniform_loss: float | None  # ln V for a language model: the loss of a uniform prediction
    diverged: dict[int, str]  # chain → why it was stopped
    config: dict  # the resolved sampler settings
    elapsed_s: float = 0.0
    vectorized: bool = False
    extra: dict = field(default_factory=dict)  # how `auto` settings were resolved

    @property
    def steps(self) -> int:
        """Steps taken by the healthy chains (all take the same number)."""
        healthy = self.healthy
        return int(np.isfinite(self.losses[healthy]).all(axis=0).sum()) if healthy else 0

    @property
    def healthy(self) -> list[int]:
        return [c for c in range(len(self.losses)) if c not in self.diverged]

    def to_bytes(self) -> bytes:
        meta = {k: v for k, v in asdict(self).items() if k != "losses"}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, losses=self.losses.astype(np.float32), meta=np.frombuffer(
            json.dumps(meta).encode(), dtype=np.uint8))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Trace":
        with np.load(io.BytesIO(data)) as stored:
            meta = json.loads(stored["meta"].tobytes().decode())
            meta["diverged"] = {int(k): v for k, v in meta["diverged"].items()}
            return cls(losses=stored["losses"], **meta)


@dataclass
class LLCResult:
    llc_mean: float
    llc_std_error: float  # √(max(MCSE, between-chain)² + reference²); see the module docstring
    llc_per_chain: list[float]  # NaN for a diverged chain
    init_loss: float  # L_n(w*)
    loss_trace: list[list[float]]  # healthy chains × draws, after burn-in and thinning
    diverged_chains: list[int]
    diverged_reasons: dict[int, str]
    r_hat: float  # rank-normalised split R̂ over healthy chains (≈ 1 when they agree)
    ess: float  # bulk effective sample size, pooled over healthy chains
    ess_per_chain: list[float]
    mcse: float  # Monte-Carlo standard error of λ̂ from the pooled ESS
    mcse_per_chain: list[float]
    between_chain_se: float  # sd of the chain means / √chains
    burnin: int
    burnin_detected: bool
    thinning: int
    num_draws: int  # per chain
    steps: int  # SGLD steps per chain, burn-in included
    converged: bool
    n_beta: float
    num_params: int  # parameters sampled
    config: dict
    elapsed_s: float
    steps_per_second: float  # SGLD steps per second, all chains counted
    vectorized: bool
    suggested_step_size: float | None = None  # when chains diverged
    extra: dict = field(default_factory=dict)
    trace: bytes | None = None  # the stored sampling artifact

    @property
    def negative(self) -> bool:
        return self.llc_mean < 0

    @property
    def mean_level(self) -> np.ndarray:
        """nβ·(L − L*) per draw, averaged over the healthy chains."""
        return self.n_beta * (np.asarray(self.loss_trace).mean(axis=0) - self.init_loss)

    @property
    def drift(self) -> float:
        """(mean level of the second half of the draws − of the first half) / |λ̂|: positive while
        the chains still climb together, which R̂ cannot see."""
        level = self.mean_level
        half = len(level) // 2
        return float(level[half:].mean() - level[:half].mean()) / max(abs(self.llc_mean), 1e-12)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "trace"}, "negative": self.negative}


def detect_burnin(levels: np.ndarray) -> int:
    """MSER-5: the end of the transient of a mean trace, within its first half."""
    batches = len(levels) // MSER_BATCH
    if batches < 4:
        return 0
    z = levels[: batches * MSER_BATCH].reshape(batches, MSER_BATCH).mean(axis=1)
    tail_sum = np.cumsum(z[::-1])[::-1]
    tail_sq = np.cumsum((z**2)[::-1])[::-1]
    count = np.arange(batches, 0, -1)
    squared_error = (tail_sq - tail_sum**2 / count) / count**2
    return int(np.argmin(squared_error[: batches // 2 + 1])) * MSER_BATCH


def arviz():
    """The arviz module, imported once per process under a lock beside its daily stamp: at import
    arviz (0.23) writes `<user cache>/arviz/daily_warning` through one shared temporary name, so
    workers importing it for the first time on a fresh home at once collide (FileNotFoundError).
    Its refactor announcement is silenced here (it concerns arviz's own users, not ours)."""
    import sys

    if "arviz" in sys.modules:
        return sys.modules["arviz"]
    from platformdirs import user_cache_dir

    from mdl_slt.home.files import locked

    with locked(Path(user_cache_dir("arviz", "arviz")) / "daily_warning"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def chain_diagnostics(samples: np.ndarray) -> dict:
    """R̂ (rank-normalised split), bulk ESS pooled and per chain, MCSE of the mean pooled and per
    chain, of a chains × draws array (arviz); NaN where there are too few draws (R̂: chains)."""
    nan = float("nan")
    chains, draws = samples.shape
    if draws < 4:
        return {"r_hat": nan, "ess": nan, "ess_per_chain": [nan] * chains, "mcse": nan, "mcse_per_chain": [nan] * chains}
    az = arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant chains warn
        return {"r_hat": float(az.rhat(samples, method="rank")) if chains > 1 else nan,
                "ess": float(az.ess(samples, method="bulk")),
                "ess_per_chain": [float(az.ess(samples[c:c + 1], method="bulk")) for c in range(chains)],
                "mcse": float(az.mcse(samples, method="mean")),
                "mcse_per_chain": [float(az.mcse(samples[c:c + 1], method="mean")) for c in range(chains)]}


def meets_targets(r_hat: float, ess: float, config: dict, steps: int) -> bool:
    """Converged: split R̂ at most its target, pooled ESS at least its target (both finite), and
    `steps` at least RELAXATIONS relaxation times (`relaxation_steps`)."""
    return bool(math.isfinite(r_hat) and r_hat <= config.get("target_r_hat", 1.05) and math.isfinite(ess)
                and ess >= config.get("target_ess", 0) and steps >= RELAXATIONS * relaxation_steps(config))


def levels_of(trace: Trace, chains: list[int], steps: int) -> np.ndarray:
    """nβ·(L − L(w*)) of `chains` over their first `steps` steps, float64."""
    return trace.n_beta * (trace.losses[chains, :steps].astype(np.float64) - trace.init_loss)


def burnin_of(trace: Trace, steps: int | None = None) -> tuple[int, bool]:
    """(burn-in, whether it was detected): the fixed one, or MSER-5 on the healthy chains' mean."""
    fixed = trace.config.get("num_burnin")
    if isinstance(fixed, int):
        return fixed, False
    steps = trace.steps if steps is None else steps
    return detect_burnin(levels_of(trace, trace.healthy, steps).mean(axis=0)), True


def estimate(trace: Trace, burnin: int | None = None, thinning: int | None = None) -> LLCResult:
    """λ̂ and its diagnostics from a trace, with its own burn-in and thinning unless given."""
    config = trace.config
    chains = len(trace.losses)
    healthy = trace.healthy
    suggestion = config["step_size"] / 10 if trace.diverged else None
    if not healthy:
        reasons = "; ".join(sorted(set(trace.diverged.values())))
        raise AllChainsDiverged(f"all {chains} chains diverged at step size {config['step_size']:g} ({reasons}): "
                        f"try a smaller step size, e.g. {suggestion:g}")
    steps = trace.steps
    burnin, detected = burnin_of(trace, steps) if burnin is None else (burnin, False)
    thinning = thinning or config.get("thinning", 1)
    if burnin >= steps:
        raise UserError(f"a burn-in of {burnin} steps leaves no draws of the {steps} sampled")
    levels = levels_of(trace, healthy, steps)[:, burnin::thinning]
    means = levels.mean(axis=1)
    per_chain = [float("nan")] * chains
    for c, value in zip(healthy, means):
        per_chain[c] = float(value)
    diagnostics = chain_diagnostics(levels)
    between = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else float("nan")
    monte_carlo = max(x for x in (diagnostics["mcse"], between, 0.0) if math.isfinite(x))
    r_hat, ess = diagnostics["r_hat"], diagnostics["ess"]
    converged = meets_targets(r_hat, ess, config, steps)
    ess_per_chain, mcse_per_chain = [float("nan")] * chains, [float("nan")] * chains
    for i, c in enumerate(healthy):
        ess_per_chain[c], mcse_per_chain[c] = diagnostics["ess_per_chain"][i], diagnostics["mcse_per_chain"][i]
    return LLCResult(
        llc_mean=float(means.mean()), llc_std_error=math.sqrt(monte_carlo**2 + (trace.n_beta * trace.init_se) ** 2),
        llc_per_chain=per_chain, init_loss=trace.init_loss,
        loss_trace=trace.losses[healthy, burnin:steps:thinning].astype(float).tolist(),
        diverged_chains=sorted(trace.diverged), diverged_reasons=dict(trace.diverged), r_hat=r_hat, ess=ess,
        ess_per_chain=ess_per_chain, mcse=diagnostics["mcse"], mcse_per_chain=mcse_per_chain,
        between_chain_se=between, burnin=burnin, burnin_detected=detected, thinning=thinning,
        num_draws=levels.shape[1], steps=steps, converged=converged, n_beta=trace.n_beta,
        num_params=trace.num_params, config=config, elapsed_s=trace.elapsed_s,
        steps_per_second=chains * steps / trace.elapsed_s if trace.elapsed_s else float("nan"),
        vectorized=trace.vectorized, suggested_step_size=suggestion,
        extra={**trace.extra, "reference_std_error": trace.init_se}, trace=trace.to_bytes())


def stored(store_path, model: str | None = None, keys: set[str] | None = None) -> list[tuple[dict, Trace]]:
    """The LLC rows of a results store (of one model, or with these task keys, when given) with
    their traces, in step order."""
    from mdl_slt.store.database import open_existing

    with open_existing(store_path) as store:
        table = store.table()
        chosen = (table.task == "llc") & ((table.model == model) if model else True)
        rows = table[chosen & (table.task_key.isin(keys) if keys is not None else True)].sort_values(["model", "step"])
        found = []
        for row in rows.itertuples():
            data = store.trace(row.task_key)
            if data is not None:
                found.append(({"model": row.model, "revision": row.revision, "step": row.step,
                               "llc_mean": row.llc_mean, "burnin": row.detail.get("burnin")}, Trace.from_bytes(data)))
    return found


def reestimate_store(store_path, burnin: int | None = None, thinning: int | None = None,
                     model: str | None = None) -> list[dict]:
    """λ̂ of every stored trace (of one model, when given) with another burn-in or thinning, or its
    own, beside the stored value; no sampling."""
    rows = []
    for row, trace in stored(store_path, model):
        result = estimate(trace, burnin, thinning)
        rows.append({"model": row["model"], "revision": row["revision"], "step": row["step"],
                     "stored_llc_mean": row["llc_mean"], "stored_burnin": row["burnin"], "llc_mean": result.llc_mean,
                     "llc_std_error": result.llc_std_error, "r_hat": result.r_hat, "ess": result.ess,
                     "burnin": result.burnin, "thinning": result.thinning, "draws": result.num_draws,
                     "converged": result.converged})
    if not rows:
        raise UserError(f"{store_path} holds no stored sampling trace{f' of {model}' if model else ''}: run its "
                        "experiment (`mdl-slt run`), which stores each LLC's trace beside its row")
    return rows

