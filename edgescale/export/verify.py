"""Check an exported graph against the torch model it came from.

Two properties: fp32 logits agree on a random batch (prefill), and a greedy generation
driven through the graph's KV cache is token-for-token identical to torch's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.errors import UserError


class ExportMismatch(UserError):
    """The ONNX graph does not compute what the torch model computes."""


def verify_export(model, path: Path, *, atol: float = 1e-4, gen_tokens: int = 32, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    spec = model.spec  # every edgescale torch model names its vocabulary and block size there
    block = spec.block_size
    ids = torch.randint(0, spec.vocab_size, (2, min(16, block)), generator=gen)
    with torch.no_grad():
        ref = model.logits(ids).numpy()
    lm = OrtCausalLM(path)
    got = lm.logits(ids.numpy())
    diff = float(np.abs(got - ref).max())
    allowed = atol * max(1.0, float(np.abs(ref).max()))  # float32 error grows with the logits' magnitude
    if not diff <= allowed:
        raise ExportMismatch(f"ONNX logits differ from torch by {diff:.3g} (allowed {allowed:.3g})", file=path)
    prompt = ids[:1, : min(8, block // 4)]
    gen_tokens = min(gen_tokens, block - prompt.shape[1])  # stay inside the position table
    expected = model.generate(prompt, gen_tokens).tolist()
    produced = lm.generate(prompt.numpy(), gen_tokens)
    if produced != expected:
        first = next(i for i, (a, b) in enumerate(zip(produced, expected, strict=True)) if a != b)
        raise ExportMismatch(f"greedy generation diverges from torch at token {first}", file=path)
    return {"max_abs_logit_diff": diff, "greedy_tokens_identical": gen_tokens}
