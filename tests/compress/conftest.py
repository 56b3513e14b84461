"""Fixtures for the ONNX-stage steps: a briefly trained tiny model, real text, logit agreement.

A randomly initialised model's logits are nearly flat, so "quantized logits stay close"
would be easy to pass; the trained fixture (2 layers, width 32, ~150k train-split tokens,
about 10 s on 2 cores) has learned byte statistics (≈4.5 bits/byte vs 8 at random).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def trained_onnx(tiny_cfg, corpus, tmp_path_factory) -> Path:
    from edgescale.config import TrainingConfig
    from edgescale.export.onnx import export_onnx
    from edgescale.models.checkpoint import load_model
    from edgescale.train.trainer import train

    out = tmp_path_factory.mktemp("trained")
    cfg = TrainingConfig(
        min_tokens=1,
        batch_size=16,
        learning_rate=1e-2,
        warmup_fraction=0.1,
        eval_every_tokens=10**9,
        eval_tokens=1024,
        cooled_eval_tokens=1024,
        checkpoint_every_steps=10**6,
    )
    res = train(tiny_cfg, cfg, corpus, 150_000, 0, out / "train", "fixture")
    model, _ = load_model(res.checkpoint)
    return export_onnx(model.eval(), out / "trained.onnx")


@pytest.fixture(scope="session")
def val_ids(corpus, tiny_cfg) -> np.ndarray:
    """Eight windows of validation text (held out from calibration, which uses train)."""
    tokens = corpus["validation"].tokens
    starts = np.linspace(0, tokens.size - tiny_cfg.block_size - 1, 8).astype(int)
    return np.stack([tokens[s : s + tiny_cfg.block_size] for s in starts]).astype(np.int64)


@pytest.fixture(scope="session")
def agreement() -> Callable[[Path, Path, np.ndarray], tuple[float, float]]:
    """(cosine, SQNR in dB) between two models' logits, each position centred over the vocabulary.

    Centring removes the per-position offset softmax ignores, so agreement is measured
    on what changes the predicted distribution.
    """
    from edgescale.bench.ort_model import OrtCausalLM

    def measure(ref: Path, got: Path, ids: np.ndarray) -> tuple[float, float]:
        a, b = (OrtCausalLM(p).logits(ids).astype(np.float64) for p in (ref, got))
        a, b = (x - x.mean(axis=-1, keepdims=True) for x in (a, b))
        cosine = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        sqnr = float(10 * np.log10((a**2).sum() / ((a - b) ** 2).sum()))
        return cosine, sqnr

    return measure
