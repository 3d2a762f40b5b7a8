"""The measures of a checkpoint other than the LLC, and the studies built on them.

    critical     the critical search: the most compression within each ε, and its standard error
    sensitivity  the field's measures (Hessian trace, HAWQ's Ω, Fisher, weight outliers), a registry
    allocation   per-group knob values each measure buys, judged on the measured loss

May import: errors, compute, compressors, llc.
"""
