"""The analytic prediction of a real layout by name: a device profile id (or path) and a Hugging Face
``config.json`` or a shipped published config (``edgescale predict --config`` / ``--arch``)."""

from __future__ import annotations

from pathlib import Path

from edgescale.bench.architectures import get_architecture, load_config
from edgescale.bench.devices import get_device
from edgescale.bench.predict import Prediction, predict_architecture


def predict_layout(
    device: str,
    config: Path | None,
    arch: str | None,
    bits: float,
    embed_bits: float | None = None,
    head_bits: float | None = None,
    context: int = 512,
    kv_bits: float = 16,
    prompt_len: int = 128,
) -> Prediction:
    """Decode and prefill on ``device`` of the layout in ``config`` (a file) or ``arch`` (a shipped name)."""
    layout = load_config(config) if config is not None else get_architecture(arch or "")
    return predict_architecture(get_device(device), layout, bits, context, kv_bits, prompt_len, embed_bits, head_bits)
