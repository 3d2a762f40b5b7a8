"""The registry of compression methods: one module per family, one explicit list of built-ins."""

from compressors import quantize  # noqa: F401  (registers the built-ins)
from compressors.registry import Compressor, DescriptionLength, Knob, get, names, registered

__all__ = ["Compressor", "DescriptionLength", "Knob", "get", "names", "registered"]
