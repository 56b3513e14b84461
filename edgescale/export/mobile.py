"""What ships to a phone: onnxruntime's mobile (ORT) format, and op coverage per target.

- :func:`to_ort_format` converts with ``onnxruntime.tools.convert_onnx_models_to_ort``
  (fixed optimisation style) and checks the ``.ort`` file loads in onnxruntime.
- :func:`op_coverage` checks every node against a target execution provider. The NNAPI
  and CoreML lists are the ones onnxruntime itself ships
  (``onnxruntime/tools/mobile_helpers/*_supported_ops.md``), so they match the
  installed runtime. Nodes an EP cannot take fall back to the CPU EP — or, in an
  EP-only deployment, stop the model — so each unsupported op is named with its count.
  Contrib ops (``com.microsoft``: ``MatMulNBits``, ``DynamicQuantizeMatMul``,
  ``MatMulIntegerToFloat``…) exist only in onnxruntime's own CPU/CUDA kernels.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from edgescale.errors import UserError

TARGETS = {
    "cpu": "CPUExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
_LISTS = {
    "nnapi": ["nnapi_supported_ops.md"],
    "coreml": ["coreml_supported_mlprogram_ops.md", "coreml_supported_neuralnetwork_ops.md"],
}


def _supported(target: str) -> set[str]:
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

    @property
    def complete(self) -> bool:
        return not self.unsupported

    def message(self) -> str:
        if self.complete:
            return f"all {self.nodes} nodes run on {self.execution_provider}"
        ops = ", ".join(f"{op} ×{n}" for op, n in sorted(self.unsupported.items(), key=lambda kv: -kv[1]))
        return (
            f"{self.execution_provider} cannot run {sum(self.unsupported.values())} of {self.nodes} nodes: {ops} "
            "(they fall back to the CPU EP, or fail where the EP must take the whole graph)"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "complete": self.complete}


def op_coverage(path: Path, target: str) -> Coverage:
    import onnx

    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}", field="--target")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for corrupt files
        raise UserError(f"not a readable ONNX file: {e}", file=path) from None
    ops = Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)
    if target == "cpu":
        unsupported = _cpu_unsupported(path)
    else:
        supported = _supported(target)
        unsupported = {op: n for op, n in ops.items() if op not in supported}
    total = sum(ops.values())
    return Coverage(target, TARGETS[target], total, total - sum(unsupported.values()), unsupported)


def _cpu_unsupported(path: Path) -> dict[str, int]:
    """The CPU EP has every standard and contrib kernel: a session that builds is coverage."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        m = re.search(r"(\w+)\(\d+\) node with name", str(e)) or re.search(r"op_type:\s*(\w+)", str(e))
        return {m.group(1) if m else str(e).splitlines()[0]: 1}
    return {}


def to_ort_format(path: Path, out: Path) -> Path:
    """Convert ``path`` to ``out`` (``.ort``) and check that onnxruntime loads it."""
    import onnxruntime as ort
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
