"""``optimize.graph``: onnxruntime's graph optimisations, applied offline and saved.

Two passes, both onnxruntime's own:

1. the transformer optimiser (``onnxruntime.transformers.optimizer.optimize_model``,
   ``model_type="gpt2"``, Python pattern fusions only): LayerNorm + residual Add →
   ``SkipLayerNormalization``, bias + GELU → ``BiasGelu``, and attention → ``Attention``
   where the pattern matches (the dynamo exporter's attention does not, today);
2. onnxruntime's session-level optimiser at ``level`` (``basic``: constant folding and
   redundant-node removal; ``extended``: also the contrib-op fusions such as
   ``FusedMatMul``), written out through ``SessionOptions.optimized_model_filepath``.

``ORT_ENABLE_ALL`` is not offered: it adds layout transforms for the machine doing the
optimising, and onnxruntime warns that such a saved model "should only be used in the
same environment". The fused ops are ``com.microsoft`` contrib ops: the CPU and CUDA
providers run them, NNAPI/CoreML/QNN do not. The CPU provider applies the same fusions
when it loads a model anyway, so on the host this step changes load time, not
steady-state latency; it matters for runtimes that load with fewer optimisations
(the ORT mobile format's saved optimisations, minimal builds).

``ctx.metrics`` records the node count before, after each pass and at the end, the
fusions the transformer optimiser reports, and the op types each pass added or removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgescale.atomic import atomic_path
from edgescale.compress.onnx_graph import check_io_unchanged, load, op_counts, quiet_onnxruntime
from edgescale.compress.registry import StepConfig, StepContext, StepFacts, register
from edgescale.ortenv import import_onnxruntime

OP = "optimize.graph"


class OptimizeGraphConfig(StepConfig):
    level: Literal["none", "basic", "extended"] = Field(
        "extended",
        description="onnxruntime offline optimisation level: none (skip), basic (constant folding, redundant "
        "nodes), extended (also contrib-op fusions); 'all' is not offered (machine-specific layouts)",
    )
    transformer_fusions: bool = Field(
        True, description="run onnxruntime's transformer optimiser (model_type gpt2) before the session pass"
    )

    @model_validator(mode="after")
    def _does_something(self) -> OptimizeGraphConfig:
        if self.level == "none" and not self.transformer_fusions:
            raise ValueError("level none with transformer_fusions false does nothing; drop the step instead")
        return self


def _written(cfg: OptimizeGraphConfig) -> frozenset[str]:
    """The contrib ops the fusions write (NNAPI, CoreML and QNN lack most of them): both passes fuse bias + GELU."""
    if cfg.transformer_fusions or cfg.level == "extended":
        return frozenset({f"com.microsoft:{op}" for op in ("SkipLayerNormalization", "FusedMatMul", "BiasGelu")})
    return frozenset()


@register(OP, OptimizeGraphConfig, takes="onnx", gives="onnx", facts=StepFacts(writes=_written))
def optimize_graph(path: Path, cfg: OptimizeGraphConfig, ctx: StepContext) -> Path:
    """onnxruntime graph optimisation (transformer fusions, then a session pass), saved to a file."""
    before = op_counts(path)
    stages = {"input": before}
    current, fusions = path, {}
    if cfg.transformer_fusions:
        current, fusions = _transformer_pass(current, ctx.work_dir / "model.fused.onnx")
        stages["transformer_fusions"] = op_counts(current)
    if cfg.level != "none":
        current = _session_pass(current, ctx.work_dir / "model.optimized.onnx", cfg.level)
        stages[f"onnxruntime_{cfg.level}"] = op_counts(current)
    check_io_unchanged(path, current, OP)
    after = op_counts(current)
    ctx.metrics.update(
        {
            "nodes_before": sum(before.values()),
            "nodes_after": sum(after.values()),
            "nodes_per_stage": {k: sum(v.values()) for k, v in stages.items()},
            "fusions": fusions,
            "op_changes": _op_changes(before, after),
            "op_counts": after,
        }
    )
    ctx.log(f"{OP}: {sum(before.values())} → {sum(after.values())} nodes; fusions {fusions or 'none'}")
    return current


def _transformer_pass(src: Path, out: Path) -> tuple[Path, dict[str, int]]:
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = _attention_shape(src)
    with quiet_onnxruntime():
        model = optimize_model(str(src), model_type="gpt2", num_heads=heads, hidden_size=hidden, opt_level=0)
        stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        with atomic_path(out) as tmp:
            model.save_model_to_file(str(tmp))
    return out, dict(sorted(stats.items()))


def _session_pass(src: Path, out: Path, level: str) -> Path:
    ort = import_onnxruntime()  # telemetry off (edgescale.ortenv)

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    with atomic_path(out) as tmp:
        opts.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return out


def _attention_shape(path: Path) -> tuple[int, int]:
    """(heads, hidden) of layer 0 from its past-key input, (0, 0) when the graph has no KV cache."""
    for vi in load(path).graph.input:
        if vi.name == "past_key_values.0.key":
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            return dims[1], dims[1] * dims[3]
    return 0, 0


def _op_changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Op type → change in node count, for the types whose count changed."""
    keys = sorted(before.keys() | after.keys())
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)}
