"""The registry of compression methods: one module per family, one explicit list of built-ins.

    rtn          uniform round-to-nearest quantization (quantize)
    gptq         GPTQ quantization with inverse-Hessian error feedback (gptq)
    bnb          bitsandbytes int8 / NF4 / FP4 formats (bnb)
    svd          truncated SVD at a kept-rank fraction; svd-energy: global energy criterion (lowrank)
    tucker, cp   decompositions of head-stacked attention weights (decompose)
    magnitude    unstructured magnitude pruning; heads: attention-head pruning (prune)
    noise        Gaussian weight noise, a perturbation probe (noise)
"""

from compressors import bnb, decompose, gptq, lowrank, noise, prune, quantize  # noqa: F401  (registers built-ins)
from compressors.registry import Compressor, DescriptionLength, Knob, get, names, registered

__all__ = ["Compressor", "DescriptionLength", "Knob", "get", "names", "registered"]
