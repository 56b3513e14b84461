"""Compression steps. Importing a technique module registers its steps."""

from edgescale.compress import quantize  # noqa: F401
