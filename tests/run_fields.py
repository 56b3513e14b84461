"""The deterministic fields of a finished run: what two runs of one study must share."""

import json
from pathlib import Path

from edgescale.results import read_results
from edgescale.results.schema import Variant

VARIANT_KEYS = ("onnx_path", "onnx_sha256", "file_bytes", "loss", "cost", "steps", "flags")


def _field(variant: Variant, key: str):
    if key == "flags":  # "slower than the baseline (measured)" comes from timing, not from the study
        return [f for f in variant.flags if not f.endswith("(measured)")]
    return getattr(variant, key)


def deterministic(run: Path, keys: tuple[str, ...] = VARIANT_KEYS) -> dict:
    """Artifact hashes, per-variant ``keys`` and training curves (latencies and the flags
    that come from timing excluded), as the typed results hold them."""
    results = read_results(run)
    manifest = json.loads((run / "manifest.json").read_text())
    return {
        "artifacts": manifest["artifacts"],
        "variants": {v.variant_id: {k: _field(v, k) for k in keys} for v in results.variants},
        "curves": {s.size: s.curve for s in results.sizes},
    }
