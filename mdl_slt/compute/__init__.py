"""Where the math runs: the device, the numerics, torch's threads, and the held-out loss.

    device   cpu or cuda, fp32 or bf16 autocast, evaluation batch sizes
    threads  torch's thread count as a setting
    loss     a causal LM's per-token and per-sequence negative log-likelihood, evaluated in batches

May import: errors.
"""
