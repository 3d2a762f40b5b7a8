"""The registry of compression methods: one module per family, one explicit list of built-ins.

    rtn          uniform round-to-nearest quantization (quantize)
    gptq         GPTQ quantization with inverse-Hessian error feedback (gptq)
    awq          activation-aware input scaling, then group quantization (awq)
    hqq          calibration-free half-quadratic quantization, via the hqq package (halfquadratic)
    bnb          bitsandbytes int8 / NF4 / FP4 formats (bnb)
    mx           microscaling block formats MXFP8 / MXFP6 / MXFP4 and NVFP4 (microscaling)
    svd          truncated SVD at a kept-rank fraction; svd-energy: global energy criterion (lowrank)
    tucker, cp   decompositions of head-stacked attention weights (decompose)
    magnitude    magnitude pruning, unstructured or N:M; heads: attention-head pruning (prune)
    wanda        pruning by |weight| × input norm, unstructured or N:M (wanda)
    sparsegpt    second-order pruning with inverse-Hessian updates, unstructured or N:M (sparsegpt)
    noise        Gaussian weight noise, a perturbation probe (noise)
    variational  a Gaussian posterior's sample sent by relative-entropy coding, the MDL code (variational, rec)

May import: errors, compute (mdl_slt's loss evaluation and device).
"""

from compressors import (awq, bnb, decompose, gptq, halfquadratic, lowrank, microscaling, noise, prune,  # noqa: F401
                         quantize, sparsegpt, variational, wanda)
from compressors.registry import Compressor, DescriptionLength, Knob, get, names, registered

__all__ = ["Compressor", "DescriptionLength", "Knob", "get", "names", "registered"]
