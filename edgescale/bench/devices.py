"""Device profiles with their efficiencies fitted to their calibration anchors: what predictions use.

:mod:`edgescale.profiles` reads the files (schema and priors); fitting is the predictor's
job (:func:`edgescale.bench.predict.calibrated`), so the fitted profiles come from here.
"""

from __future__ import annotations

import functools
from pathlib import Path

from edgescale.bench.predict import calibrated
from edgescale.errors import UserError
from edgescale.profiles import DeviceProfile, device_files, load_device_file, read_devices


def load_devices() -> dict[str, DeviceProfile]:
    """The shipped profiles, efficiencies fitted to each profile's calibration anchors (see
    :func:`edgescale.bench.predict.calibrated`). Fitted once per process while the files are unchanged."""
    return dict(_fitted(device_files()))


@functools.cache
def _fitted(files: tuple[tuple[Path, int, int], ...]) -> dict[str, DeviceProfile]:
    return {k: calibrated(v) for k, v in read_devices(files).items()}


def get_device(name: str) -> DeviceProfile:
    """A shipped profile by id, or a profile file by path (e.g. the host's from edgescale calibrate), fitted."""
    if name.endswith((".yaml", ".yml")):
        return calibrated(load_device_file(Path(name)))
    devices = load_devices()
    if name not in devices:
        raise UserError(f"unknown device {name!r}; allowed: {', '.join(sorted(devices))}", field="--device")
    return devices[name]
