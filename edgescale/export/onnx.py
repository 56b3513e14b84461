"""torch → ONNX export of a causal LM with a KV cache, as one merged graph.

The graph follows optimum's ``text-generation-with-past`` naming, so tools that know
optimum's exports know this one:

    inputs   input_ids (batch, seq) int64
             attention_mask (batch, past+seq) int64
             position_ids (batch, seq) int64
             past_key_values.{i}.key / .value (batch, heads_i, past, head_dim) float32
    outputs  logits (batch, seq, vocab)
             present.{i}.key / .value (batch, heads_i, past+seq, head_dim)

``heads_i`` is layer i's head count: ``n_head`` for a trained family member, fewer after
head pruning (``GPTConfig.layer_heads``); readers take it from each input's shape.

Prefill feeds an empty past (``past = 0``), decode feeds one token and the presents of
the previous call. The trace uses example sizes >= 2 on every dynamic axis so that
torch.export does not specialise them to 0 or 1.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

from edgescale.atomic import atomic_path, write_bytes
from edgescale.export import cache
from edgescale.export.cache import Fold
from edgescale.models.custom import exportable_transformer_masks
from edgescale.models.gpt import GPT

log = logging.getLogger(__name__)


def kv_names(n_layer: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    return past, present


class _FlatKV(torch.nn.Module):
    """Flattens the KV cache into positional tensors, which is what ONNX I/O needs."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        pkv = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits, presents = self.model(input_ids, position_ids, attention_mask, pkv)
        return (logits, *[t for kv in presents for t in kv])


def export_onnx(model: GPT, path: Path, opset: int = 18) -> Path:
    """Export ``model`` to a single-file ONNX graph at ``path`` (written atomically).

    A model whose shape was exported before gets its file from :mod:`edgescale.export.cache`,
    byte for byte what a fresh export writes.

    Example::

        export_onnx(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32)), Path("m.onnx"))
    """
    cfg = model.cfg
    model.eval()  # as every export has left it, from the cache or not
    B, T, P = 2, 3, 4  # >= 2 everywhere: sizes 0 and 1 would be specialised
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    mask = torch.ones(B, P + T, dtype=torch.int64)
    pos = torch.arange(P, P + T).expand(B, T).contiguous()
    past = [torch.zeros(B, h, P, cfg.head_dim) for h in cfg.heads_per_layer for _kv in ("key", "value")]
    past_names, present_names = kv_names(cfg.n_layer)
    batch, seq, past_len, total = (torch.export.Dim(n) for n in ("batch", "seq", "past", "total"))
    dynamic = {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: total},
        "position_ids": {0: batch, 1: seq},
        "past": tuple({0: batch, 2: past_len} for _ in past),
    }
    names = (["input_ids", "attention_mask", "position_ids", *past_names], ["logits", *present_names])
    args = (ids, mask, pos, *past)  # drawn on a cache hit too: the caller's random stream moves alike

    fp = cache.fingerprint(model, opset, Path(__file__))
    entry = cache.load(fp.key) if fp else False
    if entry and entry.serves(fp):
        log.debug("export cache hit %s: %s", fp.key[:12], path)
        write_bytes(path, cache.fill(entry, model))
        return Path(path)
    folds = _export(_FlatKV(model).eval(), args, path, names, dynamic, opset)
    if fp and entry is not False:
        cache.learn(fp, model, (Path(path).read_bytes(), folds), entry or None)
    return Path(path)


def _export(
    module,
    args: tuple,
    path: Path,
    names: tuple[list, list],
    dynamic: dict,
    opset: int,
    extra: contextlib.AbstractContextManager | None = None,
) -> dict[str, Fold]:
    """torch.onnx.export (dynamo) to one file, atomically, with the exporter's chatter silenced.

    Returns the transposes it folded into initializers."""
    with (
        atomic_path(path) as tmp,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        _quiet_torch_logs(),
        torch.no_grad(),
        extra or contextlib.nullcontext(),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            tmp,
            input_names=names[0],
            output_names=names[1],
            dynamic_shapes=dynamic,
            opset_version=opset,
            external_data=False,
            dynamo=True,
            verbose=False,
        )
        return _fold_constant_transposes(tmp)


def _fold_constant_transposes(path: Path) -> dict[str, Fold]:
    """Replace ``Transpose(initializer)`` by the transposed initializer and drop the exporter's
    per-node metadata, in place.

    The exporter reads a tied LM head as a transpose of the embedding table in some
    exports and as a stored copy in others; onnxruntime folds the transpose at load
    anyway. Folding it in the file makes every export alike, so the quantizers see the
    LM head as the constant-weight MatMul it is (they skip a MatMul on a computed input).
    The node metadata holds the Python stack of every traced op — this checkout's file paths
    and line numbers — so without dropping it the same model exported from two checkouts, or
    after an edit that moves a line of ``models/gpt.py``, gave other bytes, hashes and sizes.
    Returns each folded initializer's source and permutation (the export cache replays them).
    """
    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    folded, folds = [], {}
    for node in g.node:
        del node.metadata_props[:]
        if node.op_type != "Transpose" or node.input[0] not in inits:
            continue
        array = numpy_helper.to_array(inits[node.input[0]])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        perm = tuple(range(array.ndim))[::-1] if perm is None else tuple(perm)  # ONNX's default: reverse
        g.initializer.append(numpy_helper.from_array(array.transpose(perm).copy(), node.output[0]))
        folded.append(node)
        folds[node.output[0]] = Fold(node.input[0], perm)
    for node in folded:
        g.node.remove(node)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    onnx.save(model, str(path))
    return folds


@contextlib.contextmanager
def _quiet_torch_logs():
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def export_onnx_nocache(model: torch.nn.Module, path: Path, opset: int = 18) -> Path:
    """Export a model without a KV cache: ``input_ids (batch, seq) → logits (batch, seq, vocab)``.

    Decoding such a graph recomputes the whole context for every token.
    """
    model = model.eval()
    ids = torch.randint(0, 256, (2, 5))  # sizes >= 2 so they stay symbolic
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=model.spec.block_size)
    dynamic = {"input_ids": {0: batch, 1: seq}}
    _export(model, (ids,), path, (["input_ids"], ["logits"]), dynamic, opset, exportable_transformer_masks())
    return Path(path)
