"""The deterministic fields of a finished run: what two runs of one study must share."""

import json
from pathlib import Path

VARIANT_KEYS = ("onnx_path", "onnx_sha256", "file_bytes", "loss", "cost", "steps", "flags")


def deterministic(run: Path, keys: tuple[str, ...] = VARIANT_KEYS) -> dict:
    """Artifact hashes, per-variant ``keys`` and training curves (latencies excluded)."""
    results = json.loads((run / "results.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    return {
        "artifacts": manifest["artifacts"],
        "variants": {v["variant_id"]: {k: v[k] for k in keys} for v in results["variants"]},
        "curves": {s["size"]: s["curve"] for s in results["sizes"]},
    }
