"""Check an exported graph against the torch model it came from.

Two properties: fp32 logits agree on a random batch (prefill), and a greedy generation
driven through the graph's KV cache is token-for-token identical to torch's.

torch's side is computed first (:func:`torch_reference`), then onnxruntime's
(:func:`check_against`), so a caller that can drop the torch model in between
holds one copy of a large model's weights at a time, not two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.errors import UserError


class ExportMismatch(UserError):
    """The ONNX graph does not compute what the torch model computes."""


@dataclass(frozen=True)
class TorchReference:
    """What the torch model computed: prefill logits on ``ids`` and greedy tokens after ``prompt``."""

    ids: np.ndarray  # (2, T) int64
    logits: np.ndarray  # (2, T, V) float32
    prompt: np.ndarray  # (1, P) int64
    tokens: list[int]


def torch_reference(model, *, gen_tokens: int = 32, seed: int = 0) -> TorchReference:
    gen = torch.Generator().manual_seed(seed)
    spec = model.spec  # every edgescale torch model names its vocabulary and block size there
    block = spec.block_size
    ids = torch.randint(0, spec.vocab_size, (2, min(16, block)), generator=gen)
    with torch.no_grad():
        ref = model.logits(ids).numpy()
    prompt = ids[:1, : min(8, block // 4)]
    gen_tokens = min(gen_tokens, block - prompt.shape[1])  # stay inside the position table
    expected = model.generate(prompt, gen_tokens).tolist()
    return TorchReference(ids.numpy(), ref, prompt.numpy(), expected)


def check_against(ref: TorchReference, path: Path, *, atol: float = 1e-4) -> dict:
    lm = OrtCausalLM(path)
    got = lm.logits(ref.ids)
    diff = float(np.abs(got - ref.logits).max())
    allowed = atol * max(1.0, float(np.abs(ref.logits).max()))  # float32 error grows with the logits' magnitude
    if not diff <= allowed:
        raise ExportMismatch(f"ONNX logits differ from torch by {diff:.3g} (allowed {allowed:.3g})", file=path)
    produced = lm.generate(ref.prompt, len(ref.tokens))
    if produced != ref.tokens:
        first = next(i for i, (a, b) in enumerate(zip(produced, ref.tokens, strict=True)) if a != b)
        raise ExportMismatch(f"greedy generation diverges from torch at token {first}", file=path)
    return {"max_abs_logit_diff": diff, "greedy_tokens_identical": len(ref.tokens)}


def verify_export(model, path: Path, *, atol: float = 1e-4, gen_tokens: int = 32, seed: int = 0) -> dict:
    return check_against(torch_reference(model, gen_tokens=gen_tokens, seed=seed), path, atol=atol)
