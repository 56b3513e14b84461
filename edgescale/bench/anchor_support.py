"""How well a device profile's published anchors support a prediction, and how far its interval widens.

An anchor is a published measurement on the device (:class:`edgescale.profiles.Anchor`); a
prediction for a model of ``params`` parameters at ``bits`` stored bits per weight is
*supported* where some anchor lies near it, and *extrapolated* where it lies outside the
range the anchors span. All anchors count, calibration and validation, decode and prefill:
each is a point where the roofline's structure was seen to hold on that device.

**Widening rule.** The base interval is the validation anchors' (``anchor_interval``:
twice the RMS log error, an assumed ±50% without any), as a factor ``f = 1 + rel``. The
distance outside the anchors' range is

- ``d_p``: decades of parameters outside ``[min, max]`` anchor params (0 inside);
- ``d_b``: bits per weight outside ``[min, max]`` anchor bits, divided by 4 (0 inside; 4
  bits, e.g. 4-bit → 8-bit weights, counts as much as a decade of size).

The widened factor is ``F = f ** (1 + d_p + d_b)`` and the interval multiplicative:
``[ms / F, ms × F]``, never negative. Inside the range ``F = f``: the interval is the
validation anchors' own. Each decade or 4 bits further out multiplies the interval once
more by ``f``: the error of an untested regime compounds, it does not add a constant. A
device without anchors keeps the base ±50% (``F = 1.5``) and is labelled extrapolated,
since nothing on it was measured.

The nearest anchor is the one closest in ``|Δ decades| + |Δ bits| / 4`` (the same scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgescale.bench.anchor_fit import anchor_interval
from edgescale.profiles import DeviceProfile

BITS_PER_DECADE = 4.0  # bits per weight that count as one decade of size in the distance


@dataclass(frozen=True)
class AnchorSupport:
    """The anchors behind one prediction on one device, and its widened interval factor."""

    count: int  # calibration + validation, both workloads
    calibration: int
    validation: int
    decode: int
    prefill: int
    nearest_model: str | None  # None without anchors
    nearest_decades: float | None  # log10(params / nearest anchor's params)
    nearest_bits: float | None  # bits - nearest anchor's bits
    extrapolated: bool
    outside_decades: float  # d_p
    outside_bits: float  # bits outside the range, before dividing by BITS_PER_DECADE
    base_rel: float  # from anchor_interval
    base_why: str
    factor: float  # F: the interval is [ms / F, ms * F]

    def bounds(self, ms: float) -> tuple[float, float]:
        return ms / self.factor, ms * self.factor

    def nearest_text(self) -> str:
        """``model, +1.2 dec, -0.5 bits`` (the model's name without its parenthesised derivation); ``none``
        without anchors."""
        if self.nearest_model is None:
            return "none"
        name = self.nearest_model.split(" (")[0]
        return f"{name}, {self.nearest_decades:+.2f} dec, {self.nearest_bits:+.3g} bits"

    def why(self) -> str:
        """The interval's reason: its base, and the widening where there is one."""
        if self.count == 0:
            return f"{self.base_why}; extrapolated: no anchors on this device"
        if not self.extrapolated:
            return f"{self.base_why}; inside the range of {self.count} anchor(s): not widened"
        return (
            f"{self.base_why}; extrapolated {self.outside_decades:.2f} decade(s) of params and "
            f"{self.outside_bits:.3g} bits/weight outside the {self.count} anchor(s): factor "
            f"{1 + self.base_rel:.3g}^(1 + {self.outside_decades:.2f} + {self.outside_bits:.3g}/{BITS_PER_DECADE:g}) "
            f"= ×{self.factor:.3g}"
        )


def _outside(x: float, lo: float, hi: float) -> float:
    return max(0.0, lo - x, x - hi)


def support(device: DeviceProfile, params: float, bits: float) -> AnchorSupport:
    """The anchor support of a ``params``-parameter model at ``bits`` bits per weight on ``device``."""
    rel, why = anchor_interval(device)
    anchors = [*device.calibration, *device.validation]
    if not anchors:
        return AnchorSupport(0, 0, 0, 0, 0, None, None, None, True, 0.0, 0.0, rel, why, 1 + rel)
    logs = [math.log10(a.params) for a in anchors]
    bit_list = [a.bits_per_weight for a in anchors]
    d_p = _outside(math.log10(params), min(logs), max(logs))
    d_bits = _outside(bits, min(bit_list), max(bit_list))
    nearest = min(
        anchors, key=lambda a: abs(math.log10(params / a.params)) + abs(bits - a.bits_per_weight) / BITS_PER_DECADE
    )
    return AnchorSupport(
        count=len(anchors),
        calibration=len(device.calibration),
        validation=len(device.validation),
        decode=sum(a.workload == "decode" for a in anchors),
        prefill=sum(a.workload == "prefill" for a in anchors),
        nearest_model=nearest.model,
        nearest_decades=math.log10(params / nearest.params),
        nearest_bits=bits - nearest.bits_per_weight,
        extrapolated=d_p > 0 or d_bits > 0,
        outside_decades=d_p,
        outside_bits=d_bits,
        base_rel=rel,
        base_why=why,
        factor=(1 + rel) ** (1 + d_p + d_bits / BITS_PER_DECADE),
    )
