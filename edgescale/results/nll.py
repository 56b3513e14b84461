"""Per-window NLL beside a run's loss records, and the standard error of a loss contrast.

A variant's loss is the ratio estimator Σ nats / ln 2 / Σ bytes over scoring windows
(:mod:`edgescale.bench.loss`). Its per-window sums are saved as a sidecar
``<run>/nll/<variant>.<split>.npz`` so that a difference of two losses scored on the same
windows (a compressed model against its baseline) gets a paired standard error: per window
x_w = Σ_i w_i · nats_i[w] / ln 2, the contrast is Σ x_w / Σ bytes_w, and its variance is
the ratio estimator's linearised variance over windows (Cochran 1977, §6.4). Pairing
removes what the two models share (which windows are hard), so the paired error of a
small δ is far below the unpaired sqrt(se_a² + se_b²). Models in different tokens score
different windows: they get the unpaired fallback (:func:`unpaired`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescale.atomic import atomic_path
from edgescale.bench.loss import WindowNLL, ratio_se

__all__ = ["Contrast", "WindowNLL", "contrast", "load", "paired_delta", "save", "unpaired"]

Z95 = 1.959963984540054  # the normal 97.5% quantile: windows number in the hundreds
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Contrast:
    """Σ w_i · bpb_i with its standard error and 95% interval; ``paired``: from per-window differences."""

    bpb: float
    se_bpb: float
    low: float
    high: float
    windows: int  # windows the paired error is over (0 for the unpaired fallback)
    paired: bool


def _name(variant_id: str, split: str) -> str:
    return f"{_UNSAFE.sub('_', variant_id.replace('/', '__'))}.{split}.npz"


def save(root: Path, variant_id: str, split: str, w: WindowNLL) -> str:
    """Write ``w`` to ``<root>/nll/<variant>.<split>.npz`` (temp then rename); the path relative to root."""
    rel = Path("nll") / _name(variant_id, split)
    arrays = {"nats": np.asarray(w.nats, np.float64), "bytes": np.asarray(w.bytes, np.int64)}
    if w.tokens is not None:
        arrays["tokens"] = np.asarray(w.tokens, np.int64)
    meta = np.array([w.split_sha256, str(w.context_length), str(w.stride)])
    with atomic_path(Path(root) / rel) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no suffix
        np.savez(f, meta=meta, **arrays)
    return rel.as_posix()


def load(root: Path | None, rel: str | None) -> WindowNLL | None:
    """The sidecar at ``root / rel``; None when either is missing or the file is absent (older runs)."""
    if root is None or not rel or not (Path(root) / rel).is_file():
        return None
    with np.load(Path(root) / rel, allow_pickle=False) as z:
        sha, context, stride = (str(x) for x in z["meta"])
        nats, n_bytes = z["nats"].astype(np.float64), z["bytes"].astype(np.int64)
        tokens = z["tokens"].astype(np.int64) if "tokens" in z.files else None
        return WindowNLL(sha, int(context), int(stride), nats, n_bytes, tokens)


def _aligned(ws: Sequence[WindowNLL]) -> bool:
    first = ws[0]
    return all(
        (w.split_sha256, w.context_length, w.stride) == (first.split_sha256, first.context_length, first.stride)
        and w.bytes.shape == first.bytes.shape
        and w.nats.shape == w.bytes.shape
        and np.array_equal(w.bytes, first.bytes)
        for w in ws
    )


def _interval(bpb: float, se: float, windows: int, paired: bool) -> Contrast:
    half = Z95 * se if math.isfinite(se) else math.nan
    return Contrast(bpb, se, bpb - half, bpb + half, windows, paired)


def contrast(terms: Sequence[tuple[float, WindowNLL]]) -> Contrast | None:
    """Σ w_i · bpb_i over windows every term shares, with the window-clustered (paired) error;
    None when the terms were not scored on the same windows (then use :func:`unpaired`)."""
    if not terms or not _aligned([w for _, w in terms]):
        return None
    b = terms[0][1].bytes.astype(np.float64)
    x = sum(weight * w.nats for weight, w in terms) / math.log(2)
    return _interval(float(x.sum() / b.sum()), ratio_se(x, b), int(b.size), True)


def paired_delta(a: WindowNLL, b: WindowNLL) -> Contrast | None:
    """bpb(a) − bpb(b) with its paired standard error; None when the windows differ."""
    return contrast([(1.0, a), (-1.0, b)])


def unpaired(terms: Sequence[tuple[float, float, float]]) -> Contrast:
    """Σ w_i · bpb_i from (weight, bpb, se_bpb) triples, errors independent: sqrt(Σ w² se²)."""
    bpb = float(sum(w * v for w, v, _ in terms))
    se = math.sqrt(sum((w * s) ** 2 for w, _, s in terms))
    return _interval(bpb, se, 0, False)
