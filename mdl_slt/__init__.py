"""mdl-slt: how far can a language model be compressed, and does its LLC predict it?

Heavy imports (torch, transformers) happen only when their functions are first used, so the
analysis and report layers run without them.
"""

__version__ = "0.6.0"

_LAZY = {
    "estimate_llc": "mdl_slt.llc.sampling",
    "LLCConfig": "mdl_slt.llc.config",
    "LLCResult": "mdl_slt.llc.trace",
    "load_checkpoint": "mdl_slt.models.checkpoints",
    "CheckpointRef": "mdl_slt.models.checkpoints",
    "find_critical": "mdl_slt.measures.critical",
    "evaluate_loss": "mdl_slt.compute.loss",
    "results": "mdl_slt.analysis.frames",
    "traces": "mdl_slt.analysis.frames",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mdl_slt' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
