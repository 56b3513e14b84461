"""Causality guard: the logits at positions <= t must not depend on tokens after t.

A model that peeks ahead (bidirectional attention, a mask bug, a label leak) scores a
fake-low held-out loss, so every model entering the pipeline is checked — the torch
model after training and each ONNX artifact before its loss is measured.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgescale.errors import CausalityError

LogitsFn = Callable[[np.ndarray], np.ndarray]


def check_causal(
    logits_fn: LogitsFn, vocab_size: int, what: str, *, length: int = 24, seed: int = 0, atol: float = 1e-4
) -> None:
    """Raise :class:`CausalityError` if changing tokens after t changes logits at <= t."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(1, length), dtype=np.int64)
    base = np.asarray(logits_fn(ids), dtype=np.float64)
    scale = max(1.0, float(np.abs(base).max()))
    for t in (0, length // 3, length // 2, length - 2):
        changed = ids.copy()
        changed[0, t + 1 :] = (changed[0, t + 1 :] + rng.integers(1, vocab_size, size=length - t - 1)) % vocab_size
        other = np.asarray(logits_fn(changed), dtype=np.float64)
        diff = float(np.abs(other[0, : t + 1] - base[0, : t + 1]).max())
        if diff > atol * scale:
            raise CausalityError(
                f"not causal: changing tokens after position {t} changed the logits at positions <= {t} "
                f"by {diff:.3g}; a model that sees future tokens would report a fake-low loss",
                file=what,
            )


def check_causal_torch(model, what: str = "model") -> None:
    import torch

    def fn(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.logits(torch.from_numpy(ids)).numpy()

    check_causal(fn, model.cfg.vocab_size, what)


def check_causal_onnx(path: Path, *, atol: float = 1e-3) -> None:
    """Same check through onnxruntime (quantized graphs get a looser tolerance)."""
    from edgescale.bench.ort_model import OrtCausalLM

    lm = OrtCausalLM(path)
    vocab = lm.session.get_outputs()[0].shape[-1]
    check_causal(lm.logits, vocab if isinstance(vocab, int) else 256, str(path), atol=atol)
