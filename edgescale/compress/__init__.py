"""Compression steps. Importing a technique module registers its steps."""

from edgescale.compress import quantize  # noqa: F401
from edgescale.train import distill  # noqa: F401  (distill.recover)
