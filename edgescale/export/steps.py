"""The ``export.onnx`` step: torch model → single-file ONNX graph with a KV cache, verified.

Two graphs of edgescale's GPT (``graph``): ``fused`` (:mod:`edgescale.export.fused`: written
from the weights with onnxruntime's contrib ops, ~9 nodes per layer) and ``traced`` (torch's
dynamo exporter, standard ONNX ops, ~40 nodes per layer). ``auto`` picks ``fused`` when the
recipe's execution provider has a kernel for every contrib op it writes (the CPU and GPU
providers) and ``traced`` otherwise (NNAPI, CoreML, XNNPACK, QNN), resolved when the recipe
is compiled (:func:`resolve_graph`), so the chain's facts name the ops the file will hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgescale.compress.registry import EXPORT_OP, StepConfig, StepContext, StepFacts, implement, register
from edgescale.export.fused import CONTRIB_OPS, export_fused
from edgescale.export.mobile import ep_takes
from edgescale.export.onnx import export_onnx, export_onnx_nocache
from edgescale.export.verify import verify_export

CPU_EP = "CPUExecutionProvider"


class ExportConfig(StepConfig):
    opset: int = Field(18, ge=18, le=21, description="ONNX opset of the exported graph")
    atol: float = Field(1e-4, gt=0, description="max |logit difference| against torch, relative to max |logit|")
    verify_tokens: int = Field(32, ge=1, le=256, description="greedy tokens that must match torch")
    graph: Literal["auto", "fused", "traced"] = Field(
        "auto",
        description="fused (GroupQueryAttention, SkipLayerNormalization, BiasGelu: ~9 nodes per layer, CPU/GPU "
        "providers), traced (torch's exporter, standard ops only); auto: fused where the recipe's execution "
        "provider runs those ops, else traced. Only edgescale's GPT has a fused writer: other models export "
        "their one graph (a Hugging Face checkpoint's fused graph is export.genai's)",
    )


def resolve_graph(cfg: ExportConfig, execution_provider: str | None) -> ExportConfig:
    """``graph: auto`` made concrete for a recipe's execution provider (CPU when it names none)."""
    if cfg.graph != "auto":
        return cfg
    ep = execution_provider or CPU_EP
    fused = all(ep_takes(ep, op) for op in CONTRIB_OPS)
    return cfg.model_copy(update={"graph": "fused" if fused else "traced"})


def _writes(cfg: ExportConfig) -> frozenset[str]:
    return CONTRIB_OPS if cfg.graph == "fused" else frozenset()


@register("export.onnx", ExportConfig, takes="torch", gives="onnx", facts=StepFacts(writes=_writes))  # float32
def export_step(model, cfg: ExportConfig, ctx: StepContext) -> Path:
    """Export to ONNX (prefill + KV-cache decode in one graph) and check it against torch."""
    cfg = resolve_graph(cfg, None)
    out = ctx.work_dir / "model.onnx"
    path = export_fused(model, out, cfg.opset) if cfg.graph == "fused" else export_onnx(model, out, opset=cfg.opset)
    ctx.metrics["graph"] = cfg.graph
    return _verified(model, path, cfg, ctx)


@implement(EXPORT_OP, backend="custom")
def export_nocache_step(model, cfg: ExportConfig, ctx: StepContext) -> Path:
    """``export.onnx`` for a module without a KV cache (a user's module behind the adapter):
    ``input_ids → logits``, every token recomputing the context."""
    return _verified(model, export_onnx_nocache(model, ctx.work_dir / "model.onnx", opset=cfg.opset), cfg, ctx)


def _verified(model, path: Path, cfg: ExportConfig, ctx: StepContext) -> Path:
    check = verify_export(model, path, atol=cfg.atol, gen_tokens=cfg.verify_tokens, seed=ctx.seed)
    ctx.log(
        f"export.onnx: max |Δlogit| {check['max_abs_logit_diff']:.2e}, "
        f"{check['greedy_tokens_identical']} greedy tokens identical to torch"
    )
    return path
