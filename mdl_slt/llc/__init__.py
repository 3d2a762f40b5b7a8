"""The local learning coefficient (LLC) by sampling (Lau et al., arXiv 2308.12108).

The posterior localized at the trained parameter w*, p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²), is
sampled by chains started at w*; λ̂ = nβ·(E_p[L_B(w)] − L_n(w*)). Sampling produces an artifact,
estimation reads it: `sampling.sample` returns a `trace.Trace` of every step's minibatch loss,
burn-in included; `trace.estimate` gives λ̂ with R̂, ESS, MCSE and convergence;
`sampling.estimate_llc` does both (also `mdl_slt.estimate_llc`).

Modules, in the order the data flows (this file imports none of them, so reading a trace never
loads the sampler):

    config      LLCConfig: the settings, with each registered sampler's own
    samplers    one class per sampler: its update, its `auto` settings, its relaxation time
    batches     sizes, minibatches and the default losses
    health      divergence checks on each chain's window means
    chains      the runners: vmapped chains, or one chain after another
    sampling    resolve `auto` settings, run the chains until converged, return the trace
    trace       the artifact and the estimate read from it (numpy and arviz, no torch)
    curvature   λ_max, the diagonal and the trace of the Hessian at w* (Hutchinson)
    calibrate   a step size × nβ sweep on one checkpoint
    regime      where a λ̂ lies: E[ΔL] = λ̂/nβ, the trace limit nβ·tr(H)/(2γ), the slope in nβ
    scale       λ(ε): λ̂ at the nβ whose posterior sits ε above w*
    ground_truth  models whose λ is known in closed form (regular, normal crossing, deep linear,
                quadratic-quartic pairs)

May import: errors, home, compute, models (Pythia's step sizes), store (re-estimating a store's traces).
"""
