"""Helpers shared by the ONNX-stage steps: op counts, MatMul roles, onnxruntime's chatter.

onnxruntime's quantization tools talk through the *root* logger (``logging.warning``
"consider pre-processing", and ``matmul_nbits_quantizer`` calls ``logging.basicConfig``
at import, which adds a stderr handler and sets the root level to INFO for the whole
process), GPTQ prints a progress bar on stdout and HQQ triggers a torch UserWarning.
:func:`quiet_onnxruntime` scopes all of that to the call and puts the root logger back
as it found it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from edgescale.errors import EnvironmentFailure
from edgescale.export.canonical import external_data_files

_LOGGERS = ("onnxruntime", "neural_compressor", "onnx_ir")


@contextlib.contextmanager
def quiet_onnxruntime() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = [logging.getLogger(n) for n in _LOGGERS]
    named_levels = [lg.level for lg in named]
    root.setLevel(logging.ERROR)
    for lg in named:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # e.g. HQQ's torch.from_numpy on a read-only array: onnxruntime's internals, not the user's doing
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)
        root.setLevel(level)
        for lg, lvl in zip(named, named_levels, strict=True):
            lg.setLevel(lvl)


def load(path: Path) -> Any:
    """The model with its weights (external data included)."""
    import onnx

    return onnx.load(str(path))


def load_graph(path: Path) -> Any:
    """The model without reading external data: enough for its nodes, inputs and outputs, and
    what a check of a graph over 2 GB should load instead of its weights."""
    import onnx

    return onnx.load(str(path), load_external_data=False)


@contextlib.contextmanager
def quantizer_input(path: Path, work_dir: Path) -> Iterator[Path]:
    """The path to hand onnxruntime's quantizers for ``path``. They write a shape-inference copy
    beside their input (``<name>-inferred.onnx``), and a failed or killed step must not leave it in
    the run's ``artifacts/``: a graph without external data is hard-linked (copied where a link
    cannot be made) into ``work_dir/input/``, the step's scratch space, which the next run removes.
    onnx refuses external data reached through a hard or symbolic link (a "hardlink attack"), and
    copying gigabytes of weights costs more than it saves, so a graph with external data is used
    where it is and the copy beside it is removed when the step ends, however it ends (a killed
    step's copy: by the next run, under the run directory's lock, see edgescale.rundir)."""
    path = Path(path)
    if external_data_files(path):
        try:
            yield path
        finally:
            path.with_name(path.stem + "-inferred.onnx").unlink(missing_ok=True)
        return
    folder = Path(work_dir) / "input"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.link(path, folder / path.name)
    except OSError:  # another file system, or links not allowed: a copy costs only disk
        shutil.copyfile(path, folder / path.name)
    yield folder / path.name


@contextlib.contextmanager
def disk_full_as_failure(src: Path, work_dir: Path) -> Iterator[None]:
    """onnx's C++ shape inference writes its copy without checking the write: on a full disk the
    quantizer then fails to parse the truncated copy (a protobuf DecodeError). Said as what it is
    when the disk holding ``work_dir`` has less room left than a copy of ``src`` needs."""
    try:
        yield
    except DecodeError:
        if shutil.disk_usage(work_dir).free >= Path(src).stat().st_size:
            raise
        raise EnvironmentFailure(
            "no space left on the device; free space on the disk holding it or pass --out DIR on another disk",
            file=work_dir,
        ) from None


def has_external_data(path: Path) -> bool:
    """Whether the graph keeps its weights in an external data file (graphs over 2 GB); a step
    writes its output the same way (``use_external_data_format``)."""
    return bool(external_data_files(path))


def op_counts(path_or_model: Path | Any) -> dict[str, int]:
    """Node count per op type (``domain:Op`` for non-default domains), sorted by name."""
    model = load_graph(path_or_model) if isinstance(path_or_model, (str, Path)) else path_or_model
    names = (f"{n.domain}:{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node)
    return dict(sorted(Counter(names).items()))


def weight_matmuls(model: Any) -> list[str]:
    """Names of MatMul nodes whose second input is a constant weight (the projections and LM head)."""
    weights = {t.name for t in model.graph.initializer}
    weights |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def activation_matmuls(model: Any) -> list[str]:
    """Names of MatMul nodes multiplying two activations (attention scores q·kᵀ and probabilities·v)."""
    with_weight = set(weight_matmuls(model))
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in with_weight]


def initializer_bytes(model: Any) -> dict[str, int]:
    """Bytes held in initializers, per ONNX element type name (FLOAT, FLOAT16, INT8, UINT8, ...)."""
    import onnx

    out: Counter[str] = Counter()
    for t in model.graph.initializer:
        external = {e.key: e.value for e in t.external_data}
        size = int(external.get("length", 0)) if "location" in external else len(t.raw_data) or _typed_bytes(t)
        out[onnx.TensorProto.DataType.Name(t.data_type)] += size
    return dict(sorted(out.items()))


def _typed_bytes(t: Any) -> int:
    from onnx import numpy_helper

    return int(numpy_helper.to_array(t).nbytes)


def check_io_unchanged(src: Path, out: Path, op: str) -> None:
    """The quantized graph must keep every input and output type (float KV cache and logits)."""

    def io(p: Path) -> dict[str, int]:
        g = load_graph(p).graph
        return {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output)}

    before, after = io(src), io(out)
    if before != after:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        raise RuntimeError(f"{op} changed the graph's inputs/outputs {changed}; the harnesses feed float tensors")
