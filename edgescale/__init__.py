"""edgescale: the smallest, fastest model that meets a loss target on a device."""

__version__ = "0.1.0"
