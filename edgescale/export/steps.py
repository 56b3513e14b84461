"""The ``export.onnx`` step: torch model → single-file ONNX graph with a KV cache, verified."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edgescale.compress.registry import EXPORT_OP, StepConfig, StepContext, StepFacts, implement, register
from edgescale.export.onnx import export_onnx, export_onnx_nocache
from edgescale.export.verify import verify_export


class ExportConfig(StepConfig):
    opset: int = Field(18, ge=18, le=21, description="ONNX opset of the exported graph")
    atol: float = Field(1e-4, gt=0, description="max |logit difference| against torch, relative to max |logit|")
    verify_tokens: int = Field(32, ge=1, le=256, description="greedy tokens that must match torch")


@register("export.onnx", ExportConfig, takes="torch", gives="onnx", facts=StepFacts())  # float32, default-domain ops
def export_step(model, cfg: ExportConfig, ctx: StepContext) -> Path:
    """Export to ONNX (prefill + KV-cache decode in one graph) and check it against torch."""
    return _verified(model, export_onnx(model, ctx.work_dir / "model.onnx", opset=cfg.opset), cfg, ctx)


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
