"""Causality guard: the logits at positions <= t must not depend on tokens after t.

A model that peeks ahead (bidirectional attention, a mask bug, a label leak) scores a
fake-low held-out loss, so every model entering the pipeline is checked strictly — the
torch model after training and its exported float graph.

Graphs made by ONNX-stage steps are checked with a looser tolerance, and the measured
influence is recorded: dynamic activation quantization computes one scale per call
over the whole input, so in a batched prefill a position's logits move slightly
(0.5–2.4% of the largest logit on tiny models) when later tokens change. Decoding
through the KV cache, one token per call, has no such effect.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgescale.errors import CausalityError

LogitsFn = Callable[[np.ndarray], np.ndarray]


def check_causal(
    logits_fn: LogitsFn, vocab_size: int, what: str, *, length: int = 24, seed: int = 0, atol: float = 1e-4
) -> float:
    """Raise :class:`CausalityError` if changing tokens after t changes logits at <= t by
    more than ``atol`` (relative to the largest logit); return the largest relative change."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(1, length), dtype=np.int64)
    base = np.asarray(logits_fn(ids), dtype=np.float64)
    scale = max(1.0, float(np.abs(base).max()))
    worst = 0.0
    for t in (0, length // 3, length // 2, length - 2):
        changed = ids.copy()
        changed[0, t + 1 :] = (changed[0, t + 1 :] + rng.integers(1, vocab_size, size=length - t - 1)) % vocab_size
        other = np.asarray(logits_fn(changed), dtype=np.float64)
        diff = float(np.abs(other[0, : t + 1] - base[0, : t + 1]).max())
        worst = max(worst, diff / scale)
        if diff > atol * scale:
            raise CausalityError(
                f"not causal: changing tokens after position {t} changed the logits at positions <= {t} "
                f"by {diff:.3g}; a model that sees future tokens would report a fake-low loss",
                file=what,
            )
    return worst


def check_causal_torch(model, what: str = "model") -> float:
    import torch

    def fn(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.logits(torch.from_numpy(ids)).numpy()

    spec = model.cfg if hasattr(model, "cfg") else model.spec
    return check_causal(fn, spec.vocab_size, what, length=min(24, spec.block_size))


def check_causal_onnx(path: Path, *, atol: float = 1e-4, length: int = 24) -> float:
    """Same check through onnxruntime, on a batched prefill."""
    from edgescale.bench.ort_model import OrtCausalLM

    lm = OrtCausalLM(path)
    vocab = lm.session.get_outputs()[0].shape[-1]
    return check_causal(lm.logits, vocab if isinstance(vocab, int) else 256, str(path), atol=atol, length=length)
