"""Device profiles with their efficiencies fitted to their calibration anchors: what predictions use.

:mod:`edgescale.profiles` reads the files (schema and priors); fitting is the predictor's
job (:func:`edgescale.bench.anchor_fit.calibrated`), so the fitted profiles come from here.
"""

from __future__ import annotations

import functools
from pathlib import Path

from edgescale.bench.anchor_fit import calibrated, check_anchors
from edgescale.errors import UserError
from edgescale.profiles import DeviceProfile, device_files, load_device_file, read_devices


def load_devices() -> dict[str, DeviceProfile]:
    """The shipped profiles, efficiencies fitted to each profile's calibration anchors (see
    :func:`edgescale.bench.anchor_fit.calibrated`). Fitted once per process while the files are unchanged."""
    return dict(_fitted(device_files()))


@functools.cache
def _fitted(files: tuple[tuple[Path, int, int], ...]) -> dict[str, DeviceProfile]:
    return {k: calibrated(v) for k, v in read_devices(files).items()}


def get_device(name: str) -> DeviceProfile:
    """A shipped profile by id, or a profile file by path (e.g. the host's from edgescale calibrate), fitted
    (only that one: a fit needs scipy and a few ms per anchor)."""
    if name.endswith((".yaml", ".yml")):
        return calibrated(load_device_file(Path(name)))
    devices = read_devices(device_files())
    if name not in devices:
        raise UserError(f"unknown device {name!r}; allowed: {', '.join(sorted(devices))}", field="--device")
    return calibrated(devices[name])


LITTLE_CORES = {"cortex-a53", "cortex-a55", "cortex-a520"}  # in-order cores


def anchor_class(device: DeviceProfile) -> str:
    """The class an anchor counts for: an edge GPU, little in-order cores, or the profile's class."""
    if device.compute_unit == "gpu":
        return "edge GPU"
    if {c.core for c in device.cpu.clusters} <= LITTLE_CORES:
        return "little cores"
    return device.device_class


def anchor_table(devices: dict[str, DeviceProfile]) -> list[dict]:
    """Every anchor of every profile, predicted with the calibration fit: calibration rows first, per device."""
    return [
        {**r, "split": which, "class": anchor_class(d)}
        for d in devices.values()
        for which in ("calibration", "validation")
        for r in check_anchors(d, which)
    ]
