"""The classic small encoder-style LM users bring: a stack of ``nn.TransformerEncoderLayer``.

Sequence-first (T, B, C), takes float features (no embedding of its own), has no mask of
its own — the caller passes one — and ends in a linear head over a 1,000-token
vocabulary. edgescale adapts it (``model:`` in a study): adds token and position
embeddings, transposes to sequence-first, passes a causal mask, and maps the byte
corpus onto the first 256 of the head's 1,000 outputs.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class EncoderLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, nhead: int, dim_feedforward: int, num_layers: int) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, src: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # src: (T, B, d_model) float features -> (T, B, vocab_size)
        return self.head(self.encoder(src, mask=mask))


def encoder_lm(
    vocab_size: int = 1000, d_model: int = 256, nhead: int = 8, dim_feedforward: int = 512, num_layers: int = 6
) -> EncoderLM:
    return EncoderLM(vocab_size, d_model, nhead, dim_feedforward, num_layers)
