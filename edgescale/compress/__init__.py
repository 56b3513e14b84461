"""Compression steps. Importing a technique module registers its steps."""

from edgescale.compress import fp16, int4, int8_static, optimize_graph, prune_sparse, prune_structured, quantize  # noqa: F401
from edgescale.hf import quantize as _optimum_preset  # noqa: F401  (quantize.optimum_preset; optimum imported on use)
from edgescale.train import recover  # noqa: F401  (distill.recover)
