"""Seed replicates of a training run scored on the torch model.

A replicate (any seed but the study's) is not exported: its loss is taken on the torch model by
the same scorer and windows the ONNX loss uses (:func:`edgescale.bench.loss.score`, with the
study's evaluation protocol), and so are the study seed's models when they are compared with
their replicates, so every seed of a comparison is scored one way. The statistics over seeds
are in :mod:`edgescale.train.seed_stats` (no torch: results assembly imports them).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgescale.bench.loss import score
from edgescale.data.corpus import Split
from edgescale.models.checkpoint import load_model

TORCH_SCORER = "torch model through edgescale.bench.loss.score (the evaluation protocol's windows)"


def torch_bpb(
    checkpoint: Path,
    split: Split,
    context: int,
    stride: int,
    max_tokens: int,
    batch_size: int,
    spans: list[tuple[int, int]] | None = None,
) -> float:
    """Bits per byte of a trained checkpoint on ``split``, scored as the ONNX loss is (byte tokens,
    the protocol's ``spans``: :func:`edgescale.data.corpus.eval_spans`)."""
    model = load_model(checkpoint)[0].eval()
    with torch.no_grad():
        res = score(
            lambda ids: model.logits(torch.from_numpy(ids)).numpy(),
            split,
            context,
            stride,
            max_tokens,
            batch_size,
            spans,
        )
    return res.bits_per_byte
