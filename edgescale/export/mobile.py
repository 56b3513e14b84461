"""What ships to a phone: onnxruntime's mobile (ORT) format, and op coverage per target.

- :func:`to_ort_format` converts with ``onnxruntime.tools.convert_onnx_models_to_ort``
  (fixed optimisation style) and checks the ``.ort`` file loads in onnxruntime.
- :func:`op_coverage` checks every node against a target execution provider. The NNAPI
  and CoreML lists are the ones onnxruntime itself ships
  (``onnxruntime/tools/mobile_helpers/*_supported_ops.md``), so they match the
  installed runtime; XNNPACK and QNN ship none, so theirs are transcribed from the
  providers' sources, with the conditions the graph shows checked
  (:mod:`edgescale.export.ep_ops`). Each unsupported op is named with its count.

Whether a partial graph still ships depends on how the EP is deployed
(:data:`FALLBACK`): XNNPACK runs beside the CPU EP in the same process and memory, so
the nodes it cannot take simply run on the CPU EP (a warning). NNAPI, CoreML and QNN
are accelerators: every CPU partition costs device copies (onnxruntime's
``mobile_helpers/usability_checker.py`` rates more than two partitions as not worth
using the EP). QNN HTP deployments ship the graph compiled into a QNN context binary, and
QNN's documentation sets ``session.disable_cpu_ep_fallback`` to make sure the whole model
runs on HTP. For these a missing op refuses the model, as before.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgescale.errors import UserError
from edgescale.export import ep_ops
from edgescale.ortenv import import_onnxruntime

TARGETS = {
    "cpu": "CPUExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "qnn": "QNNExecutionProvider",
}
# Can nodes the EP cannot take run on the CPU EP instead, in the way the target ships?
FALLBACK = {"cpu": False, "nnapi": False, "coreml": False, "xnnpack": True, "qnn": False}
_NO_FALLBACK_WHY = {
    "cpu": "the CPU EP is the last resort",
    "nnapi": "each CPU partition costs NPU-CPU copies; onnxruntime's usability checker rates >2 as not worth it",
    "coreml": "each CPU partition costs NPU-CPU copies; onnxruntime's usability checker rates >2 as not worth it",
    "qnn": "a QNN HTP context binary takes the whole graph, deployed with session.disable_cpu_ep_fallback",
}
_LISTS = {
    "nnapi": ["nnapi_supported_ops.md"],
    "coreml": ["coreml_supported_mlprogram_ops.md", "coreml_supported_neuralnetwork_ops.md"],
}


def ep_takes(execution_provider: str, op: str) -> bool:
    """Whether ``execution_provider`` has a kernel for op type ``op`` (``domain:Op``, or a bare
    name in the default domain), by the same lists ``op_coverage`` uses; graph conditions
    (constant weights, static shapes) are not checked here."""
    key = op if ":" in op else f"ai.onnx:{op}"
    target = next((t for t, ep in TARGETS.items() if ep == execution_provider), None)
    if target in _LISTS:
        return key in _supported(target)
    if target == "xnnpack":
        return key in ep_ops.XNNPACK_OPS
    if target == "qnn":
        return key in ep_ops.QNN_OPS
    # the CPU EP and the GPU providers (CUDA, DML, TensorRT) carry onnxruntime's contrib kernels
    return True


def _supported(target: str) -> set[str]:
    import_onnxruntime()  # the package first, with its telemetry off
    import onnxruntime.tools.mobile_helpers as helpers

    ops: set[str] = set()
    for name in _LISTS[target]:
        text = (Path(helpers.__file__).parent / name).read_text()
        ops |= set(re.findall(r"^\|((?:ai\.onnx|com\.microsoft):\w+)\|", text, flags=re.M))
    return ops


@dataclass(frozen=True)
class Coverage:
    target: str
    execution_provider: str
    nodes: int
    supported_nodes: int
    unsupported: dict[str, int]  # "domain:Op" -> node count
    fallback: bool = False  # nodes the EP cannot take run on the CPU EP instead
    reasons: dict[str, str] = field(default_factory=dict)  # "domain:Op" -> why not taken (a checked condition)
    caveats: dict[str, str] = field(default_factory=dict)  # "domain:Op" -> a condition the graph cannot show
    blockers: tuple[str, ...] = ()  # whole-graph refusals (e.g. QNN and dynamic shapes)

    @property
    def all_on_ep(self) -> bool:
        return not self.unsupported and not self.blockers

    @property
    def complete(self) -> bool:
        """The model ships on this target: every node on the EP, or the rest on the CPU EP."""
        return not self.blockers and (not self.unsupported or self.fallback)

    def message(self) -> str:
        ep, n_bad = self.execution_provider, sum(self.unsupported.values())
        ops = ", ".join(
            f"{op} ×{n}" + (f" ({self.reasons[op]})" if op in self.reasons else "")
            for op, n in sorted(self.unsupported.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        if not self.unsupported:
            parts = [f"all {self.nodes} nodes run on {ep}"]
        elif self.fallback:
            parts = [
                f"warning: {ep} takes {self.supported_nodes} of {self.nodes} nodes; {n_bad} fall back to "
                f"CPUExecutionProvider: {ops}"
            ]
        else:
            why = _NO_FALLBACK_WHY[self.target]
            parts = [f"{ep} cannot run {n_bad} of {self.nodes} nodes: {ops} ({why})"]
        parts += [f"{ep} refuses {b}" for b in self.blockers]
        if self.caveats:
            parts.append("not checked: " + "; ".join(f"{op}: {c}" for op, c in sorted(self.caveats.items())))
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {**asdict(self), "complete": self.complete, "all_on_ep": self.all_on_ep}


def op_coverage(path: Path, target: str) -> Coverage:
    import onnx

    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}", field="--target")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for corrupt files
        raise UserError(f"not a readable ONNX file: {e}", file=path) from None
    # onnxruntime turns Constant nodes into initializers when it loads a graph (graph.cc),
    # so no EP ever sees them.
    nodes = [n for n in model.graph.node if n.op_type != "Constant"]
    ops = Counter(_key(n) for n in nodes)
    reasons: dict[str, str] = {}
    caveats: dict[str, str] = {}
    blockers: tuple[str, ...] = ()
    if target == "cpu":
        unsupported = _cpu_unsupported(path)
    elif target in _LISTS:
        supported = _supported(target)
        unsupported = {op: n for op, n in ops.items() if op not in supported}
    else:
        unsupported, reasons, caveats = _ep_unsupported(model, nodes, target)
        if target == "qnn":
            dynamic = ep_ops.qnn_dynamic_io(model)
            if dynamic:  # name a few; the rest follow from them
                more = f" and {len(dynamic) - 4} more" if len(dynamic) > 4 else ""
                fix = "fix them (python -m onnxruntime.tools.make_dynamic_shape_fixed) and validate again"
                blockers = (f"dynamic shapes: {', '.join(dynamic[:4])}{more}; {fix}",)
    total = sum(ops.values())
    return Coverage(
        target,
        TARGETS[target],
        total,
        total - sum(unsupported.values()),
        unsupported,
        FALLBACK[target],
        reasons,
        caveats,
        blockers,
    )


def _key(node) -> str:
    return f"{node.domain or 'ai.onnx'}:{node.op_type}"


def _ep_unsupported(model, nodes: list, target: str) -> tuple[dict[str, int], dict[str, str], dict[str, str]]:
    """Nodes XNNPACK or QNN cannot take, why, and the unchecked caveats of the ops they take."""
    g = ep_ops.GraphIndex.of(model)
    if target == "xnnpack":
        ops, checks, caveat_text = ep_ops.XNNPACK_OPS, ep_ops.XNNPACK_CHECKS, ep_ops.XNNPACK_CAVEATS
        followers = ep_ops.XNNPACK_FUSED | ep_ops.XNNPACK_QDQ
    else:
        ops, checks, caveat_text = ep_ops.QNN_OPS | ep_ops.QNN_FUSION_ONLY, ep_ops.QNN_CHECKS, ep_ops.QNN_CAVEATS
        followers = frozenset()
    taken: set[int] = set()
    bad: Counter[str] = Counter()
    reasons: dict[str, str] = {}

    def judge(node, reason: str | None) -> None:
        if reason is None:
            taken.add(id(node))
        else:
            bad[_key(node)] += 1
            reasons.setdefault(_key(node), reason)

    for node in nodes:  # topological order, so a follower's producer is judged first
        key = _key(node)
        if key in followers:
            continue
        if key not in ops:
            bad[key] += 1
        else:
            judge(node, checks[key](node, g) if key in checks else None)
    for node in nodes:
        if _key(node) in followers:
            judge(node, ep_ops.check_xnnpack_follower(node, g, taken))
    seen = {_key(n) for n in nodes if id(n) in taken}
    return dict(bad), reasons, {op: c for op, c in caveat_text.items() if op in seen}


def _cpu_unsupported(path: Path) -> dict[str, int]:
    """The CPU EP has every standard and contrib kernel: a session that builds is coverage."""
    ort = import_onnxruntime()  # telemetry off (edgescale.ortenv)

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        m = re.search(r"(\w+)\(\d+\) node with name", str(e)) or re.search(r"op_type:\s*(\w+)", str(e))
        return {m.group(1) if m else str(e).splitlines()[0]: 1}
    return {}


def to_ort_format(path: Path, out: Path) -> Path:
    """Convert ``path`` to ``out`` (``.ort``) and check that onnxruntime loads it."""
    ort = import_onnxruntime()  # telemetry off (edgescale.ortenv)
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    logging.getLogger("ort_format_model").setLevel(logging.WARNING)  # the converter logs INFO lines
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
        src = Path(d) / "model.onnx"
        shutil.copyfile(path, src)
        convert_onnx_models_to_ort(src, Path(d) / "out", [OptimizationStyle.Fixed])
        produced = next((Path(d) / "out").glob("*.ort"), None)
        if produced is None:
            raise UserError("onnxruntime produced no .ort file", file=path)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".ort.tmp")
        shutil.copyfile(produced, tmp)
        tmp.replace(out)
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return out
