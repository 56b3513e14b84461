"""Held-out loss of a model on a token stream, in nats per token and bits per byte.

The protocol (context length, stride, token count, split hash) is recorded with every
number. The scorer takes any ``logits_fn(ids) -> logits`` so the same code scores an
ONNX file through onnxruntime (what the frontier uses) and a torch model (training
curves, and the test that the two agree).

Which text is scored is chosen in byte space (:func:`edgescale.data.corpus.eval_segments`):
by default segments spread over every work of the split, each mapped to a model's own tokens
as spans (first input token, targets), so every tokenizer scores the same bytes.

Every number carries its standard error. The scoring windows are the independent units
(tokens inside a window share a context and are correlated), so the error is clustered by
window: bits per byte is the ratio estimator R = Σ y_w / Σ b_w over windows w (y_w the
window's NLL in bits, b_w its bytes), whose linearised variance is
n/(n−1) · Σ (y_w − R·b_w)² / (Σ b_w)² (Cochran 1977, §6.4). The per-window sums are kept
(:class:`WindowNLL`) so that two models scored on the same windows can be compared paired
(:mod:`edgescale.results.nll`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.data.corpus import Split, eval_windows
from edgescale.progress import advance

LogitsFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class WindowNLL:
    """Summed NLL per scored window, in order (the final partial window included), and the text
    bytes each window's scored span covers (= its scored tokens for byte tokens)."""

    split_sha256: str
    context_length: int
    stride: int
    nats: np.ndarray  # (W,) float64
    bytes: np.ndarray  # (W,) int64
    tokens: np.ndarray | None = None  # (W,) int64 scored tokens per window; None where not kept
    starts: np.ndarray | None = None  # (W,) int64 index of each window's first target; None where not kept

    def bits_per_byte(self) -> float:
        return float(self.nats.sum() / math.log(2) / self.bytes.sum())

    def se_bits_per_byte(self) -> float:
        """Window-clustered standard error of :meth:`bits_per_byte`; NaN with fewer than 2 windows."""
        return ratio_se(self.nats / math.log(2), self.bytes)


def ratio_se(y: np.ndarray, b: np.ndarray) -> float:
    """Linearised standard error of Σ y / Σ b with the (y_w, b_w) pairs as independent clusters."""
    n = y.size
    if n < 2:
        return math.nan
    r = y.sum() / b.sum()
    return float(math.sqrt(n / (n - 1) * float(((y - r * b) ** 2).sum())) / b.sum())


@dataclass(frozen=True)
class LossResult:
    split: str
    split_sha256: str
    context_length: int
    stride: int
    tokens: int  # scored tokens
    bytes: int  # bytes those tokens cover (= tokens for byte-level)
    nats_per_token: float
    bits_per_byte: float
    se_bpb: float = math.nan  # window-clustered standard error of bits_per_byte
    windows: WindowNLL | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The record's numbers (the per-window arrays are saved apart: edgescale.results.nll)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "windows"}


def _window_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood per position, in float64; logits (B, T, V), targets (B, T)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(z).sum(axis=-1))
    picked = np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
    return logz - picked


def _tail_window(
    windows: list[tuple[int, int]], n_tokens: int, context: int, stride: int, remaining: int
) -> tuple[int, int, int] | None:
    """The window after the whole ones, scoring only the ``remaining`` positions of the cap, as
    (start, first scored, end): the scored span then ends exactly at the cap, so candidates with
    different tokenizers score the same bytes to within one token. With no whole window (a span
    shorter than the context) it is the one short window over the span."""
    start, first = (windows[-1][0] + stride, context - stride) if windows else (0, 0)
    if remaining <= 0 or start + first + remaining + 1 > n_tokens:
        return None
    return start, first, first + min(remaining, stride if windows else remaining)


def span_windows(
    n_tokens: int, context: int, stride: int, spans: list[tuple[int, int]], short: bool = True
) -> list[tuple[int, int, int]]:
    """Every window of every span as (start, first scored, end), in order: a span (s, m) feeds
    tokens from ``s`` and scores the ``m`` targets after it, with :func:`eval_windows`' windows
    and a tail window for what is left. ``short``: a span shorter than one window gets one short
    window (False: none, as for the single head span)."""
    out = []
    for s, m in spans:
        sub = min(n_tokens - s, m + 1)
        whole = eval_windows(sub, context, stride, m)
        out += [(s + a, first, context) for a, first in whole]
        tail = _tail_window(whole, sub, context, stride, m - sum(context - f for _, f in whole))
        if tail is not None and (whole or short):
            out.append((s + tail[0], tail[1], tail[2]))
    return out


def score(
    logits_fn: LogitsFn,
    split: Split,
    context_length: int,
    stride: int,
    max_tokens: int,
    batch_size: int = 16,
    spans: list[tuple[int, int]] | None = None,
) -> LossResult:
    """Loss over the first ``max_tokens`` targets, or (``spans`` given) over each span's targets,
    as (first input token, targets) from :func:`edgescale.data.corpus.eval_spans`."""
    tokens = split.tokens  # not a whole-split copy: a memory-mapped split is read one window at a time
    windows = span_windows(tokens.size, context_length, stride, spans or [(0, max_tokens)], short=spans is not None)
    if not windows:
        raise ValueError(f"split {split.name} has {tokens.size} tokens, fewer than one window of {context_length}")
    nats = np.zeros(len(windows), np.float64)  # per scored window, in span order
    counts = np.array([stop - first for _, first, stop in windows], np.int64)
    whole = [i for i, w in enumerate(windows) if w[2] == context_length]
    for i in range(0, len(whole), batch_size):  # streamed: one batch of logits in memory at a time
        chunk = whole[i : i + batch_size]
        ids = np.stack([tokens[windows[k][0] : windows[k][0] + context_length] for k in chunk]).astype(np.int64)
        tgt = np.stack([tokens[windows[k][0] + 1 : windows[k][0] + context_length + 1] for k in chunk]).astype(np.int64)
        nll = _window_nll(logits_fn(ids), tgt)
        for row, k in enumerate(chunk):
            nats[k] = float(nll[row, windows[k][1] :].sum())
        advance(i + len(chunk), len(whole))
    for k in (k for k, w in enumerate(windows) if w[2] < context_length):  # the input ends at the last target
        start, first, stop = windows[k]
        ids, tgt = (np.asarray(tokens[None, a : a + stop], np.int64) for a in (start, start + 1))
        nll = _window_nll(logits_fn(ids), tgt)
        nats[k] = float(nll[0, first:].sum())
    starts = np.array([start + first + 1 for start, first, _ in windows], np.int64)  # first target of each
    w = WindowNLL(split.sha256, context_length, stride, nats, counts, counts.copy(), starts)
    total, count = sum(nats.tolist()), int(counts.sum())  # summed in order, as before windows were kept
    res = LossResult(
        split=split.name,
        split_sha256=split.sha256,
        context_length=context_length,
        stride=stride,
        tokens=count,
        bytes=count,
        nats_per_token=total / count,
        bits_per_byte=total / math.log(2) / count,
        se_bpb=w.se_bits_per_byte(),
        windows=w,
    )
    return res if split.byte_ends is None else per_text_byte(res, split.byte_ends)


def per_text_byte(res: LossResult, byte_ends: np.ndarray) -> LossResult:
    """A token-level score re-expressed in bits per text byte; ``byte_ends[i]``: the text bytes up to
    the end of token i. Window k scores the targets tokens[s_k : s_k + t_k] (``starts`` and
    ``tokens`` of its windows; without starts, the windows run contiguously from tokens[1]): its
    bytes are the byte ends' difference."""
    ends = np.concatenate([[0], np.asarray(byte_ends, np.int64)])  # ends[i]: text bytes before token i
    w = res.windows
    if w is None or w.tokens is None:  # no per-window tokens: no clustered error
        n_bytes = int(ends[1 + res.tokens] - ends[1])
        bpb = res.nats_per_token * res.tokens / math.log(2) / n_bytes
        return replace(res, bytes=n_bytes, bits_per_byte=bpb, se_bpb=math.nan, windows=None)
    starts = w.starts if w.starts is not None else 1 + np.concatenate([[0], np.cumsum(w.tokens)[:-1]])
    w = replace(w, bytes=(ends[starts + w.tokens] - ends[starts]).astype(np.int64))
    n_bytes = int(w.bytes.sum())
    bpb = res.nats_per_token * res.tokens / math.log(2) / n_bytes
    return replace(res, bytes=n_bytes, bits_per_byte=bpb, se_bpb=w.se_bits_per_byte(), windows=w)


def onnx_loss(
    path: Path,
    split: Split,
    context_length: int,
    stride: int,
    max_tokens: int,
    batch_size: int = 16,
    spans: list[tuple[int, int]] | None = None,
):
    """Loss of an ONNX causal LM through onnxruntime (the number a frontier point carries)."""
    lm = OrtCausalLM(path)
    return score(lm.logits, split, context_length, stride, max_tokens, batch_size, spans)
