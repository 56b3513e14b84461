"""Export a transformers causal LM with optimum (``text-generation-with-past``), verified.

optimum writes one ``model.onnx`` with the signature edgescale's own exporter follows
(``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.{i}.key/value``
→ ``logits``, ``present.{i}.key/value``), so the loss, latency, prediction and
quantization code runs it unchanged. Like ``export.onnx`` for the GPT family, the graph
is checked against torch: fp32 logits within ``atol`` (relative to the largest logit) and
``verify_tokens`` greedy tokens identical when decoding through the KV cache.

A GPT-2 whose heads were pruned has fewer heads in some layers (``config.pruned_heads``)
while optimum builds its example KV cache from ``n_head``; :class:`_PrunedGPT2Past`
gives each layer its own head count.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from edgescale.errors import UserError
from edgescale.export.canonical import move_onnx
from edgescale.export.verify import check_against, torch_reference


@dataclass(frozen=True)
class LMSpec:
    vocab_size: int
    block_size: int


class HFCausalLM(nn.Module):
    """A transformers causal LM behind edgescale's model interface: ``logits(ids)``,
    greedy ``generate(prompt, n)`` and ``spec`` (vocabulary and context)."""

    def __init__(self, hf_model, block_size: int) -> None:
        super().__init__()
        self.hf = hf_model
        self.spec = LMSpec(int(hf_model.config.vocab_size), block_size)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=ids, use_cache=False).logits  # (B, T, V)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits(ids)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy tokens by full recomputation (the reference the KV-cache graph must match)."""
        ids, out = prompt, []
        for _ in range(max_new_tokens):
            out.append(int(self.logits(ids)[0, -1].argmax()))
            ids = torch.cat([ids, torch.tensor([[out[-1]]])], dim=1)
        return torch.tensor(out)


def _pruned_gpt2_config(config):
    """optimum's GPT-2 export config with one KV head count per layer (``pruned_heads``)."""
    from optimum.exporters.onnx.model_configs import GPT2OnnxConfig
    from optimum.utils.input_generators import DummyPastKeyValuesGenerator, DummyTextInputGenerator

    class _PrunedGPT2Past(DummyPastKeyValuesGenerator):
        def generate(self, input_name: str, framework: str = "pt", int_dtype: str = "int64", float_dtype="fp32"):
            c = config
            head_dim = c.n_embd // c.n_head
            heads = [c.n_head - len(c.pruned_heads.get(i, ())) for i in range(c.n_layer)]
            return [
                tuple(
                    self.random_float_tensor((self.batch_size, h, self.sequence_length, head_dim), dtype=float_dtype)
                    for _ in ("key", "value")
                )
                for h in heads
            ]

    class _PrunedGPT2OnnxConfig(GPT2OnnxConfig):
        DUMMY_INPUT_GENERATOR_CLASSES = (DummyTextInputGenerator, _PrunedGPT2Past)
        DUMMY_PKV_GENERATOR_CLASS = _PrunedGPT2Past

    return _PrunedGPT2OnnxConfig(config, task="text-generation", use_past=True, use_past_in_inputs=True)


def _conv1d_matmul(self, x: torch.Tensor) -> torch.Tensor:
    return torch.matmul(x, self.weight) + self.bias  # (..., in) @ (in, out): GPT-2's Conv1D stores W transposed


@contextlib.contextmanager
def _matmul_conv1d():
    """Trace GPT-2's ``Conv1D`` as MatMul + Add instead of its ``addmm`` (ONNX ``Gemm`` on a
    flattened input): onnxruntime's dynamic int8 and 4-bit quantizers rewrite MatMul and
    skip Gemm, so with Gemm the ``quantize.*`` steps would leave every projection float."""
    from transformers.pytorch_utils import Conv1D

    original = Conv1D.forward
    Conv1D.forward = _conv1d_matmul
    try:
        yield
    finally:
        Conv1D.forward = original


@contextlib.contextmanager
def _quiet():
    names = ("optimum", "transformers", "torch.onnx")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def export_hf(hf_model, out: Path, opset: int = 18) -> Path:
    """optimum's ``text-generation-with-past`` export of ``hf_model`` to ``out``: one file, or
    for a graph over 2 GB the graph plus its external data in ``out.name + ".data"``."""
    from optimum.exporters.onnx import onnx_export_from_model

    custom = None
    if hf_model.config.model_type == "gpt2" and any(hf_model.config.pruned_heads.values()):
        custom = {"model": _pruned_gpt2_config(hf_model.config)}
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".optimum-") as tmp, _quiet(), _matmul_conv1d():
        onnx_export_from_model(
            hf_model,
            tmp,
            task="text-generation-with-past",
            opset=opset,
            do_validation=False,  # edgescale checks logits and greedy tokens itself, below
            custom_onnx_configs=custom,
        )
        graphs = sorted(p.name for p in Path(tmp).glob("*.onnx"))
        if graphs != ["model.onnx"]:
            raise UserError(f"optimum wrote the graphs {graphs}; one model.onnx was expected", file=out)
        move_onnx(Path(tmp) / "model.onnx", out)  # over 2 GB, optimum's model.onnx_data moves with it
    return out


def export_and_verify(
    hf_model, out: Path, block_size: int, opset: int, atol: float, tokens: int, seed: int, *, release: bool = False
) -> dict:
    """Export, then check against torch (:mod:`edgescale.export.verify`).

    torch's references are computed before onnxruntime loads the graph. With ``release``
    the model's weights are dropped in between (moved to the meta device: the model is
    unusable afterwards), so a large model's weights are never in memory twice."""
    export_hf(hf_model, out, opset)
    gc.collect()  # the exporter's graph copy of the weights
    ref = torch_reference(HFCausalLM(hf_model, block_size), gen_tokens=tokens, seed=seed)
    if release:
        hf_model.to("meta")
        gc.collect()
    return check_against(ref, out, atol=atol)
