"""Calibration data for ONNX-stage steps: train-split token windows, fed to the whole graph.

Static int8 quantization (Jacob et al. 2018, "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", §3) fixes every activation's
scale and zero point offline from the ranges seen on calibration batches; GPTQ (Frantar
et al. 2023) builds each layer's Hessian from the same batches. Calibration uses the
**train split** only (DESIGN.md: calibration and recovery use train, selection
validation, the answer test), so a calibrated artifact never saw held-out text.

Windows come from ``StepContext.calibration`` when the caller supplies them (a 2-D array
of token windows, or a 1-D token stream), else from ``StepContext.corpus["train"]``.
Starts are drawn from a generator seeded by the step's seed, so the same seed gives the
same windows and the same artifact.

The reader feeds every input of an edgescale causal-LM graph (``edgescale.export.onnx``):
``input_ids``, ``attention_mask``, ``position_ids`` and an empty past for every
``past_key_values.{i}.key/value`` — the prefill call, whose activations cover every
position a decode step sees. It duck-types onnxruntime's ``CalibrationDataReader``
(``get_next``), so this module imports without onnxruntime.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgescale.compress.registry import StepContext
from edgescale.errors import UserError

_KV_PREFIX = "past_key_values."
FALLBACK_WINDOW_TOKENS = 128  # graphs without a position table (a user's module)
_NP_TYPES = {1: np.float32, 10: np.float16, 7: np.int64}  # onnx.TensorProto element types


def window_tokens(model_path: Path, op: str, requested: int | None) -> int:
    """Calibration window length: ``requested``, or the model's context (its position table) when unset."""
    limit = context_tokens(model_path)
    if requested is None:
        return limit or FALLBACK_WINDOW_TOKENS
    if limit and requested > limit:
        raise UserError(
            f"{op}: calibration_window_tokens {requested} exceeds the model's context of {limit} positions; "
            f"use at most {limit} or leave it unset",
            field=f"{op}.calibration_window_tokens",
        )
    return requested


def context_tokens(model_path: Path) -> int | None:
    """Rows of the position-embedding table, if the graph has one.

    That is a Gather from a 2-D constant table indexed by anything but the token ids
    (``position_ids`` in edgescale's GPT graphs, a computed range in a user's module).
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    tables = {t.name: t.dims for t in graph.initializer if len(t.dims) == 2}
    rows = [
        int(tables[n.input[0]][0])
        for n in graph.node
        if n.op_type == "Gather" and n.input[0] in tables and n.input[1] != "input_ids"
    ]
    return min(rows) if rows else None


def calibration_windows(ctx: StepContext, op: str, n_windows: int, length: int) -> np.ndarray:
    """``n_windows`` token windows of ``length`` tokens from the train split, as int64 (n, length).

    Raises a UserError naming ``op`` when the context carries no calibration data (e.g. a
    recipe applied to a bare ONNX file without a corpus).
    """
    given = ctx.calibration
    if isinstance(given, np.ndarray) and given.ndim == 2:
        if given.shape[0] < n_windows or given.shape[1] < length:
            raise UserError(
                f"{op} asks for {n_windows} calibration windows of {length} tokens, but the run supplied "
                f"{given.shape[0]} of {given.shape[1]}; lower calibration_windows or calibration_window_tokens",
                field=f"{op}.calibration_windows",
            )
        return np.ascontiguousarray(given[:n_windows, :length], dtype=np.int64)
    stream = _token_stream(ctx, op)
    if stream.size < length + 1:
        raise UserError(
            f"{op}: the train split has {stream.size} tokens, fewer than one calibration window of {length}",
            field=f"{op}.calibration_window_tokens",
        )
    rng = np.random.default_rng([ctx.seed, 0xCA1B])  # its own stream: independent of training batches
    starts = rng.integers(0, stream.size - length, size=n_windows)
    return np.stack([stream[s : s + length] for s in starts]).astype(np.int64)


def _token_stream(ctx: StepContext, op: str) -> np.ndarray:
    given = ctx.calibration
    if isinstance(given, np.ndarray) and given.ndim == 1:
        return given
    if given is not None and hasattr(given, "tokens"):  # a corpus Split
        return np.asarray(given.tokens)
    if ctx.corpus is not None:
        return np.asarray(ctx.corpus["train"].tokens)
    raise UserError(
        f"{op} needs calibration data (train-split token windows) and this run has none: run the recipe "
        "inside a study (its corpus's train split is used), or choose a step that needs no data "
        "(quantize.int8_dynamic, or quantize.int4_weight_only with algorithm rtn or hqq)",
        field=op,
    )


class LMCalibrationReader:
    """Prefill feeds for every input of a causal-LM ONNX graph, ``batch_size`` windows per call.

    Implements onnxruntime's ``CalibrationDataReader`` protocol (``get_next`` returning a
    feed dict, then None) and iteration, which GPTQ's data loader uses.
    """

    def __init__(self, model_path: Path, windows: np.ndarray, batch_size: int = 8) -> None:
        self.inputs = _graph_inputs(Path(model_path))
        self.windows = windows
        self.batch_size = batch_size
        self.position = 0

    def __len__(self) -> int:
        return -(-len(self.windows) // self.batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.windows):
            return None
        ids = self.windows[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self.feeds(ids)

    def rewind(self) -> None:
        self.position = 0

    def chunks(self, batches: int) -> Iterator[LMCalibrationReader]:
        """Readers over consecutive slices of ``batches`` batches each (to bound calibration memory)."""
        step = batches * self.batch_size
        for start in range(0, len(self.windows), step):
            part = copy.copy(self)
            part.windows, part.position = self.windows[start : start + step], 0
            yield part

    def __iter__(self) -> LMCalibrationReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feeds = self.get_next()
        if feeds is None:
            raise StopIteration
        return feeds

    def feeds(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """One prefill call on ``ids`` (B, T) with an empty past, for every graph input."""
        B, T = ids.shape
        out: dict[str, np.ndarray] = {}
        for name, (dtype, shape) in self.inputs.items():
            if name == "input_ids":
                out[name] = np.ascontiguousarray(ids, dtype=np.int64)
            elif name == "attention_mask":
                out[name] = np.ones((B, T), np.int64)
            elif name == "position_ids":
                out[name] = np.broadcast_to(np.arange(T, dtype=np.int64), (B, T)).copy()
            else:  # a past KV input: (batch, heads, past, head_dim) with past = 0
                out[name] = np.zeros((B, shape[1], 0, shape[3]), dtype=dtype)
        return out


def _graph_inputs(path: Path) -> dict[str, tuple[type, list]]:
    """Input name → (numpy dtype, shape with symbolic dims as strings); refuses graphs it cannot feed."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    out = {}
    for vi in graph.input:
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        known = vi.name in ("input_ids", "attention_mask", "position_ids")
        is_kv = vi.name.startswith(_KV_PREFIX) and len(shape) == 4 and all(isinstance(shape[i], int) for i in (1, 3))
        if not (known or is_kv) or t.elem_type not in _NP_TYPES:
            raise UserError(
                f"cannot build calibration feeds for input {vi.name!r} ({shape}); calibrated steps take "
                "edgescale causal-LM graphs (input_ids, attention_mask, position_ids, past_key_values.{i}.key/value)",
                file=path,
            )
        out[vi.name] = (_NP_TYPES[t.elem_type], shape)
    if "input_ids" not in out:
        raise UserError("cannot calibrate a graph without an input_ids input", file=path)
    return out
