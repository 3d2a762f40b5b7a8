"""How a run proceeds: units claimed and handed to an executor, measured task by task, each outcome
written to the store as it arrives; and `predict`, which measures one checkpoint beside a fit.

    measure    one unit: load the checkpoint once, then each task, yielding each outcome when done
    studies    the rows of the layer study, the sensitivity measures and the allocations
    executors  where units run: this process, a pool of processes (one per GPU), or Ray tasks
    runner     plan → executor → store, resumable, with progress and a log
    predict    a fit file and a fresh λ̂ give a prediction; `--verify` measures beside it

May import: errors, progress, home, compute, data, models, store, compressors, llc, measures, plan,
analysis (the fit file).
"""
