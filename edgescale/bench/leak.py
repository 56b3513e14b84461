"""How much of a graph's held-out loss comes from tokens it should not have seen.

A graph with *dynamic* activation quantization (onnxruntime's ``DynamicQuantizeLinear``:
one uint8 scale and zero point per tensor, per call; Jacob et al. 2018's affine scheme)
computes that scale over everything in the call: in a batched prefill, over every
position of every window in the batch. A position's logits then depend, through the
rounding of its activations, on tokens after it. The architecture is causal (that is
checked strictly on the float export and at initialization, :mod:`edgescale.guard`);
the quantized graph's prefill is not exactly. This module measures what that does to
the loss instead of judging it by a tolerance on logits.

Method: a seeded sample of ``k`` positions drawn uniformly without replacement from
the positions the scorer scores (:func:`edgescale.data.corpus.eval_windows`, as
:func:`edgescale.bench.loss.score` walks them). At each sampled position the NLL of
its target is computed twice:

- **windowed**: the window as scored, in the same batches of ``batch_size`` windows
  the scorer runs (its batch companions are later text and move the scales too), so
  the sample estimates the reported loss exactly;
- **causal**: the window truncated right after the position, alone in its call
  (batch 1, no padding: a pad token or a companion sequence would enter the scale).
  Nothing after the position is in the input, so this is the strictly causal
  prediction, the one a deployment that feeds the text as it arrives makes.

The leak is ``windowed − causal`` per position (negative: the reported loss is
fake-low; positive: pessimistic), with a paired bootstrap 95% interval (resampling
positions, both NLLs together), in nats per token and in bits per byte of the sampled
targets. ``max_abs_logit_diff`` is the largest logit change seen.

Decision rule (``flagged``): the leak matters when its interval excludes 0 *and* its
size exceeds ``LOSS_FRACTION`` of the causal loss. 1% of the loss is the scale of the
differences a frontier separates (an int8 variant and its float twin typically differ
by 0.5–3%), so a smaller leak cannot reorder variants, and one that large is reported
as a flag on the variant rather than hidden or made fatal. A graph that attends to
the future outright is a different matter and is refused by the guard.

Cost: the touched scoring batches once more (at most one more scoring pass) plus
``k`` prefix calls of their positions' lengths. ``prefix_batch`` > 1 runs prefixes of
equal length together; that is exact only for a batch-independent function (a float
graph, a torch model), never for a dynamically quantized graph.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.data.corpus import eval_windows
from edgescale.guard import dynamic_scale_ops

LogitsFn = Callable[[np.ndarray], np.ndarray]

LOSS_FRACTION = 0.01  # a leak above this fraction of the causal loss (and significant) is flagged
BOOTSTRAP = 2000
# K for a scored graph: on a 2-layer int8 model the 95% interval is about ±0.001 bpb at 64 positions,
# a tenth of the 1% flag threshold at 4.5 bpb; 256 halves it for twice the prefix calls.
POSITIONS = 64


@dataclass(frozen=True)
class LeakResult:
    """A leak measurement at ``positions`` sampled scored positions (see the module docstring)."""

    positions: int  # K: sampled scored positions
    seed: int
    bytes: int  # text bytes of the sampled targets
    windowed_nats_per_token: float  # mean NLL at the sample, window as scored (future tokens present)
    causal_nats_per_token: float  # mean NLL at the sample, prefix-only run
    windowed_bits_per_byte: float
    causal_bits_per_byte: float
    leak_nats_per_token: float  # windowed - causal
    leak_nats_ci95: tuple[float, float]  # paired bootstrap over positions
    leak_bits_per_byte: float
    leak_bits_per_byte_ci95: tuple[float, float]
    max_abs_logit_diff: float  # largest |windowed - causal| logit at a sampled position
    seconds: float  # wall time of the measurement (timing: leave out of run comparisons)

    @property
    def significant(self) -> bool:
        lo, hi = self.leak_bits_per_byte_ci95
        return lo > 0 or hi < 0

    @property
    def flagged(self) -> bool:
        return self.significant and abs(self.leak_bits_per_byte) > LOSS_FRACTION * self.causal_bits_per_byte

    def to_dict(self) -> dict:
        # without its wall time: a loss record is the same in every run (the stage's time is in its resources)
        out = {k: v for k, v in asdict(self).items() if k != "seconds"}
        return {**out, "significant": self.significant, "flagged": self.flagged}

    def describe(self) -> str:
        lo, hi = self.leak_bits_per_byte_ci95
        return (
            f"causal leak {self.leak_bits_per_byte:+.4f} bpb [{lo:+.4f}, {hi:+.4f}] at {self.positions} positions "
            f"(windowed {self.windowed_bits_per_byte:.4f}, causal {self.causal_bits_per_byte:.4f} bpb; "
            f"max |Δlogit| {self.max_abs_logit_diff:.3g})"
        )


def _nll(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """NLL of ``target`` under each row of ``logits`` (N, V), in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return np.log(np.exp(z).sum(axis=-1)) - z[np.arange(len(target)), target]


def sample_positions(
    n_tokens: int, context_length: int, stride: int, max_tokens: int, k: int, seed: int
) -> list[tuple[int, int]]:
    """``k`` scored positions as (window index, position in window), uniform without
    replacement over every scored position, sorted; all of them when there are fewer."""
    windows = eval_windows(n_tokens, context_length, stride, max_tokens)
    counts = np.array([context_length - first for _, first in windows], dtype=np.int64)
    if counts.sum() == 0:
        raise ValueError(f"{n_tokens} tokens hold no window of {context_length}")
    flat = np.random.default_rng(seed).choice(int(counts.sum()), size=min(k, int(counts.sum())), replace=False)
    ends = np.cumsum(counts)
    out = []
    for i in np.sort(flat):
        w = int(np.searchsorted(ends, i, side="right"))
        out.append((w, windows[w][1] + int(i - (ends[w] - counts[w]))))
    return out


def _windowed(logits_fn, tokens, windows, sample, context_length: int, batch_size: int) -> np.ndarray:
    """Logits at each sampled position from the scorer's own batches, run once each."""
    out: list[np.ndarray] = [np.empty(0)] * len(sample)
    by_batch: dict[int, list[int]] = {}
    for j, (w, _) in enumerate(sample):
        by_batch.setdefault(w // batch_size, []).append(j)
    for b, members in by_batch.items():
        chunk = windows[b * batch_size : (b + 1) * batch_size]
        ids = np.stack([tokens[s : s + context_length] for s, _ in chunk]).astype(np.int64)
        logits = np.asarray(logits_fn(ids))
        for j in members:
            w, p = sample[j]
            out[j] = logits[w - b * batch_size, p]
    return np.stack(out)


def _causal(logits_fn, tokens, windows, sample, prefix_batch: int) -> np.ndarray:
    """Logits at each sampled position from its prefix alone (exactly p + 1 tokens, no padding)."""
    out: list[np.ndarray] = [np.empty(0)] * len(sample)
    by_len: dict[int, list[int]] = {}
    for j, (_, p) in enumerate(sample):
        by_len.setdefault(p + 1, []).append(j)
    for length, members in by_len.items():
        for i in range(0, len(members), prefix_batch):
            group = members[i : i + prefix_batch]
            ids = np.stack([tokens[windows[sample[j][0]][0] : windows[sample[j][0]][0] + length] for j in group])
            ids = ids.astype(np.int64)
            logits = np.asarray(logits_fn(ids))
            for row, j in enumerate(group):
                out[j] = logits[row, -1]
    return np.stack(out)


def _interval(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def measure_leak(
    logits_fn: LogitsFn,
    tokens: np.ndarray,
    context_length: int,
    stride: int,
    max_tokens: int,
    *,
    batch_size: int = 16,
    k: int = 64,
    seed: int = 0,
    token_bytes: np.ndarray | None = None,
    prefix_batch: int = 1,
) -> LeakResult:
    """Windowed against strictly causal NLL at ``k`` seeded scored positions of ``tokens``.

    ``context_length``, ``stride``, ``max_tokens`` and ``batch_size`` are the scorer's
    (:func:`edgescale.bench.loss.score`); ``token_bytes[i]`` is the text bytes token ``i``
    covers (``None``: one byte per token, byte-level models). ``prefix_batch`` > 1 batches
    equal-length prefixes: exact only for batch-independent functions.

    Example::

        lm = OrtCausalLM("model.int8_dynamic.onnx")
        leak = measure_leak(lm.logits, split.tokens, 128, 64, 8192, k=64, seed=0)
        leak.leak_bits_per_byte, leak.leak_bits_per_byte_ci95
    """
    t0 = time.perf_counter()
    tokens = np.asarray(tokens)  # no whole-split int64 copy: a memory-mapped split is read window by window
    windows = eval_windows(tokens.size, context_length, stride, max_tokens)
    sample = sample_positions(tokens.size, context_length, stride, max_tokens, k, seed)
    targets = np.array([tokens[windows[w][0] + p + 1] for w, p in sample], np.int64)
    idx = np.array([windows[w][0] + p + 1 for w, p in sample])
    nbytes = np.ones(len(sample)) if token_bytes is None else np.asarray(token_bytes, dtype=np.float64)[idx]
    win = _windowed(logits_fn, tokens, windows, sample, context_length, batch_size)
    cau = _causal(logits_fn, tokens, windows, sample, prefix_batch)
    nll_w, nll_c = _nll(win, targets), _nll(cau, targets)
    diff = nll_w - nll_c
    boot = np.random.default_rng([seed, 1]).integers(0, len(diff), size=(BOOTSTRAP, len(diff)))
    ln2 = math.log(2)
    return LeakResult(
        positions=len(sample),
        seed=seed,
        bytes=int(nbytes.sum()),
        windowed_nats_per_token=float(nll_w.mean()),
        causal_nats_per_token=float(nll_c.mean()),
        windowed_bits_per_byte=float(nll_w.sum() / ln2 / nbytes.sum()),
        causal_bits_per_byte=float(nll_c.sum() / ln2 / nbytes.sum()),
        leak_nats_per_token=float(diff.mean()),
        leak_nats_ci95=_interval(diff[boot].mean(axis=1)),
        leak_bits_per_byte=float(diff.sum() / ln2 / nbytes.sum()),
        leak_bits_per_byte_ci95=_interval(diff[boot].sum(axis=1) / ln2 / nbytes[boot].sum(axis=1)),
        max_abs_logit_diff=float(np.abs(win.astype(np.float64) - cau.astype(np.float64)).max()),
        seconds=time.perf_counter() - t0,
    )


def causal_leak(
    path: Path,
    tokens: np.ndarray,
    context_length: int,
    stride: int,
    max_tokens: int,
    batch_size: int,
    seed: int,
    token_bytes: np.ndarray | None = None,
) -> dict | None:
    """A loss record's ``causal_leak``: :func:`measure_leak` at ``POSITIONS`` positions for a graph
    with dynamic activation scales; None for one without (the guard judged it exactly causal)."""
    if not dynamic_scale_ops(path):
        return None
    lm = OrtCausalLM(path)
    kw = {"batch_size": batch_size, "k": POSITIONS, "seed": seed, "token_bytes": token_bytes}
    return measure_leak(lm.logits, tokens, context_length, stride, max_tokens, **kw).to_dict()
