"""The sampler's settings: one pydantic schema, with the fields of every registered sampler.

Hold them fixed across the checkpoints you compare. `step_size: auto` and `n_beta: auto` are made
concrete per model and data by `mdl_slt.llc.sampling.resolve`; a sampler's own `auto` settings by
its class (`mdl_slt.llc.samplers`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from mdl_slt.llc.health import CHECK_EVERY
from mdl_slt.llc.samplers import SAMPLERS


# each sampler's Settings once: samplers with no settings of their own share the base's
class LLCConfig(*dict.fromkeys(sampler.Settings for sampler in SAMPLERS.values())):
    """Sampler settings, with every registered sampler's own; hold them fixed across the checkpoints
    you compare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sampler: Literal[tuple(SAMPLERS)] = Field("sgld", description="plain or RMSProp-preconditioned SGLD, or "
                                              "underdamped Langevin (BAOAB; wants exact gradients): "
                                              "`mdl_slt.llc.samplers`")
    preset: Literal["pythia"] | None = Field(None, description="`pythia`: the paper's settings (γ 300, nβ 30, "
                                                            "batch 32, 4 chains, 100 draws, step size by model size) "
                                                            "for every field not given")
    step_size: float | Literal["auto"] = Field(3e-4, description="SGLD step size η; `auto`: the paper's step for a "
                                               "Pythia model, else η = 0.3/(nβ·λ_max + γ) from the top Hessian "
                                               "eigenvalue at w* (in a run: of each model's last checkpoint, held "
                                               "for all its checkpoints); for baoab η = h², h its time step")
    n_beta: float | Literal["auto"] = Field(30.0, description="nβ; `auto` = n/log n, β = 1/log n")
    localization: float = Field(300.0, ge=0, description="γ, strength of the pull towards w*")
    num_chains: int = Field(4, ge=1)
    num_draws: int | Literal["auto"] = Field("auto", description="draws kept per chain after burn-in and thinning; "
                                             "`auto`: sample until converged (target_r_hat, target_ess)")
    num_burnin: int | Literal["auto"] = Field("auto", description="steps discarded at the start of each chain; "
                                              "`auto`: where the transient ends (MSER-5 on the trace)")
    thinning: int = Field(1, ge=1, description="keep every k-th step after burn-in")
    max_steps: int = Field(2000, ge=2, description="the most steps a chain takes when sampling until converged")
    block: int = Field(100, ge=CHECK_EVERY, description="steps between convergence checks")
    target_r_hat: float = Field(1.05, gt=1, description="converged: split R̂ at most this")
    target_ess: float = Field(100.0, ge=0, description="converged: pooled bulk ESS at least this")
    batch_size: int = Field(16, ge=1)
    seed: int = 0
    parameters: list[str] | None = Field(None, description="sample only parameters whose names match these "
                                                            "glob patterns (component LLC); None = all")
    reference_batches: int | None = Field(None, ge=1, description="batches for L(w*); None = the whole set")
    vectorize: Literal["auto", "always", "never"] = Field(
        "auto", description="run chains together with torch.func.vmap: `auto` does for plain torch modules "
                            "and for transformers models on CUDA (eager attention), not for those on CPU")
    compile: bool = Field(False, description="torch.compile each step's gradient: the vmapped chains' once per "
                                             "model, the chain-by-chain runner's once per architecture and process "
                                             "(reused by every checkpoint and chain); about 25 s to compile on a CPU. "
                                             "On the suite's models on a CPU it paid only on the smallest "
                                             "(bench/chain_step.py, README)")
    runaway: float = Field(4.0, gt=0, description="divergence: window means of nβ·(L − L*) above this × d")
    jump: float = Field(10.0, gt=1, description="divergence: window means of nβ·(L − L*) above this × the other "
                                                "chains' and the chain's own earlier level")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass "
                                                            "(transformers models): less memory for long contexts")
    numerics: Literal["auto", "fp32", "bf16"] = Field("auto", description="token losses in fp32 or under bf16 "
                                                                        "autocast; auto: bf16 on CUDA, fp32 elsewhere")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, values):
        if isinstance(values, dict) and values.get("preset") == "pythia":
            from mdl_slt.models.pythia import PAPER_SAMPLER

            values = {**PAPER_SAMPLER, "step_size": "auto", **values}
        return values

    @field_validator("step_size")
    @classmethod
    def _positive_step(cls, value):
        if value != "auto" and value <= 0:
            raise ValueError("step_size must be positive, or auto")
        return value

    @field_validator("num_draws", "num_burnin")
    @classmethod
    def _count(cls, value, info):
        least = {"num_draws": 2, "num_burnin": 0}[info.field_name]
        if value != "auto" and value < least:
            raise ValueError(f"{info.field_name} must be at least {least}, or auto")
        return value

    @property
    def fixed_steps(self) -> int | None:
        """Steps per chain when both burn-in and draws are fixed; None when the trace decides."""
        if self.num_draws == "auto" or self.num_burnin == "auto":
            return None
        return self.num_burnin + self.num_draws * self.thinning

    @property
    def budget_steps(self) -> int:
        """The most SGLD steps one chain can take."""
        return self.fixed_steps or self.max_steps

    @property
    def budget_text(self) -> str:
        if self.fixed_steps is not None:
            return f"{self.fixed_steps} steps"
        what = f"{self.num_draws} draws after a detected burn-in" if self.num_draws != "auto" else \
            f"until R̂ ≤ {self.target_r_hat:g}, ESS ≥ {self.target_ess:g} and 4 relaxation times"
        return f"≤ {self.max_steps} steps ({what})"
