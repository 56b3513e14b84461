"""A cache of exported GPT graphs: equal shapes give the same graph, so a later export only
substitutes the weights.

torch's dynamo export takes seconds per model, and the export of a GPT is a function of its
shape, of the code and versions that trace it, and of a few properties of its weights: the
exporter merges initializers of equal value, and an optimiser may treat a tensor whose
elements are all equal (a fresh LayerNorm's ones, a zero bias) as a constant. The key holds
all of these (:class:`Fingerprint`), so two models with the same key differ only in the values
of the initializers that copy a parameter, plainly or transposed (by the exporter's constant
folding or by the fold in :mod:`edgescale.export.onnx`).

An entry is learnt from a fresh export, as a candidate: substituting the model's own weights
must give the file byte for byte. A candidate serves only the weights it came from (the
exporter is deterministic). It is proven by the next export of the same key whose weights
differ in every tensor the key does not fix: that export runs afresh, and substituting its
weights into the candidate must give its file byte for byte; then the entry serves every
model of the key. A candidate that fails marks the key as not cacheable, and its models export
afresh. No export costs more than one trace.

Entries live in a per-user folder (``$EDGESCALE_CACHE``, else ``$XDG_CACHE_HOME/edgescale``,
else ``~/.cache/edgescale``): keyed by content, an entry cannot go stale, and every run and
test session on the machine shares it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError

from edgescale.atomic import write_bytes, write_json
from edgescale.errors import EnvironmentFailure
from edgescale.models import gpt, shape

log = logging.getLogger(__name__)

FORMAT = 2  # bump when an entry's layout or meaning changes
PREFIX = "model."  # the export wrapper holds the GPT as ``self.model``
_PACKAGES = ("torch", "onnx", "onnxscript", "numpy")
_CODE = (gpt, shape)  # the modules whose code decides the traced graph, besides the exporter's own


@dataclass(frozen=True)
class Fold:
    """An initializer that the fold computed as a transpose of another."""

    source: str
    perm: tuple[int, ...]


@dataclass(frozen=True)
class Slot:
    """An initializer of the cached graph that copies one parameter, possibly transposed."""

    index: int  # position in graph.initializer
    param: str  # state-dict name
    perm: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Entry:
    graph: onnx.ModelProto  # the export with every slot's data cleared
    slots: tuple[Slot, ...]
    proven: bool  # serves every model of its key; else only the weights it came from
    digests: tuple[str | None, ...]  # the weights it came from

    def serves(self, fp: Fingerprint) -> bool:
        return self.proven or self.digests == fp.digests

    def proven_by(self, fp: Fingerprint) -> bool:
        """Whether a fresh export of ``fp``'s weights tests every slot: each tensor the key
        leaves free holds other values than the candidate's."""
        return all(a != b for a, b in zip(self.digests, fp.digests, strict=True) if a is not None)


def cache_dir() -> Path:
    base = os.environ.get("EDGESCALE_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) / "edgescale" if xdg else Path.home() / ".cache" / "edgescale"
    return Path(base) / "onnx-export"


@dataclass(frozen=True)
class Fingerprint:
    key: str  # shape, code, versions and the weights' structure: what decides the graph
    digests: tuple[str | None, ...]  # each state tensor's content hash; None where the key fixes it


def fingerprint(model: torch.nn.Module, opset: int, exporter: Path) -> Fingerprint | None:
    """The cache key of ``model``'s export, or None for a model the cache does not know.

    ``exporter`` is the source file of the export code, hashed with the model's code."""
    if not _stock(model):
        return None
    state = model.state_dict(keep_vars=True)
    if any(t.dtype != torch.float32 for t in state.values()):  # the weights edgescale trains; others export afresh
        return None
    classes: dict[tuple, int] = {}  # (dtype, shape, value hash) → first state index holding it
    storages: dict[tuple, int] = {}  # tied parameters share storage
    tensors, digests = [], []
    for i, (name, t) in enumerate(state.items()):
        data = t.detach().cpu().contiguous()
        digest = hashlib.sha256(data.numpy().tobytes()).hexdigest()
        equal_to = classes.setdefault((str(data.dtype), tuple(data.shape), digest), i)
        tied_to = storages.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), t.stride()), i)
        uniform = _uniform_value(data)
        tensors.append([name, str(data.dtype), list(data.shape), equal_to, tied_to, uniform])
        digests.append(None if uniform is not None else digest)
    code = hashlib.sha256(Path(exporter).read_bytes())
    for module in _CODE:
        code.update(Path(module.__file__).read_bytes())
    key = {
        "format": FORMAT,
        "cfg": repr(model.cfg),
        "opset": opset,
        "versions": {p: version(p) for p in _PACKAGES},
        "code": code.hexdigest(),
        "tensors": tensors,
    }
    return Fingerprint(hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest(), tuple(digests))


def _stock(model: torch.nn.Module) -> bool:
    """A GPT built of edgescale's and torch's own modules, none with a forward of its own: the
    graph is then a function of the hashed code. A subclass, a swapped-in submodule (an
    attention without its causal mask) or a patched forward exports afresh."""
    if type(model) is not gpt.GPT:
        return False
    return all(
        (type(m).__module__ == gpt.__name__ or type(m).__module__.startswith("torch.nn.")) and "forward" not in vars(m)
        for m in model.modules()
    )


def _uniform_value(t: torch.Tensor) -> str | None:
    """The one value of a tensor whose elements are all equal (exactly, as bytes), else None."""
    flat = t.reshape(-1)
    if flat.numel() == 0 or not bool((flat == flat[0]).all()):
        return None
    return flat[:1].numpy().tobytes().hex()


def load(key: str) -> Entry | None | bool:
    """The entry for ``key``; False when the key is known not to cache; None when unknown."""
    folder = cache_dir()
    if (folder / f"{key}.skip").exists():
        return False
    meta, graph = folder / f"{key}.json", folder / f"{key}.onnx"
    if not meta.exists():  # written last: its presence means the entry is complete
        return None
    try:
        record = json.loads(meta.read_text())
        slots = tuple(Slot(s["index"], s["param"], tuple(s["perm"]) if s["perm"] else None) for s in record["slots"])
        graph_proto = onnx.ModelProto.FromString(graph.read_bytes())
        return Entry(graph_proto, slots, record["proven"], tuple(record["digests"]))
    except (OSError, ValueError, KeyError, TypeError, DecodeError) as e:  # damaged (a full disk, an edit): unknown
        log.warning("export cache entry %s is unreadable (%s): exporting afresh", meta, e)
        return None


def fill(entry: Entry, model: torch.nn.Module) -> bytes:
    """The file bytes of ``model``'s export: the cached graph with the model's weights."""
    graph = copy.deepcopy(entry.graph)
    state = model.state_dict()
    for s in entry.slots:
        array = state[s.param].detach().cpu().numpy()
        if s.perm is not None:
            array = array.transpose(s.perm)
        graph.graph.initializer[s.index].raw_data = np.ascontiguousarray(array).tobytes()
    return graph.SerializeToString()


def learn(fp: Fingerprint, model: torch.nn.Module, fresh: tuple[bytes, dict[str, Fold]], known: Entry | None) -> None:
    """Learn from ``fresh`` (a fresh export of ``model``: file bytes and folds): a first export
    of its key gives a candidate; a later one with other weights proves ``known`` or refutes it."""
    exported, folds = fresh
    if known is None:
        entry = _entry(onnx.ModelProto.FromString(exported), folds, model, fp)
        _save(fp.key, entry if entry is not None and fill(entry, model) == exported else None)
    elif fill(known, model) != exported:
        _save(fp.key, None)
    elif known.proven_by(fp):
        _save(fp.key, replace(known, proven=True))


def _save(key: str, entry: Entry | None) -> None:
    """Write ``entry`` for ``key``, or None: a mark that the key does not cache."""
    folder = cache_dir()
    try:
        if entry is None:
            write_bytes(folder / f"{key}.skip", b"")
            return
        write_bytes(folder / f"{key}.onnx", entry.graph.SerializeToString())
        slots = [{"index": s.index, "param": s.param, "perm": list(s.perm) if s.perm else None} for s in entry.slots]
        record = {"format": FORMAT, "proven": entry.proven, "digests": list(entry.digests), "slots": slots}
        write_json(folder / f"{key}.json", record)
    except (OSError, EnvironmentFailure) as e:  # a read-only or full home: exports stay fresh, and correct
        log.warning("export cache not written in %s: %s", folder, e)


def _entry(graph: onnx.ModelProto, folds: dict[str, Fold], model: torch.nn.Module, fp: Fingerprint) -> Entry | None:
    """The slots of a fresh export: initializers named after a parameter or folded from one, and
    those the exporter's own constant folding computed as a parameter's transpose (``val_*``)."""
    state = model.state_dict()
    copies = _copies(state)
    slots = []
    for i, t in enumerate(graph.graph.initializer):
        fold = folds.get(t.name)
        source = fold.source if fold else t.name
        param = source.removeprefix(PREFIX) if source.startswith(PREFIX) else None
        if param in state:
            slot = Slot(i, param, fold.perm if fold else None)
        elif fold is None and (t.raw_data, tuple(t.dims)) in copies:
            slot = Slot(i, *copies[t.raw_data, tuple(t.dims)])
        else:
            continue  # a constant of the graph: the key fixes it
        if not t.raw_data:  # a parameter stored another way: substituting raw bytes would not rebuild it
            return None
        slots.append(slot)
        t.ClearField("raw_data")
    return Entry(graph, tuple(slots), False, fp.digests)


def _copies(state: dict[str, torch.Tensor]) -> dict[tuple[bytes, tuple[int, ...]], tuple[str, tuple | None]]:
    """(bytes, shape) → (parameter, permutation) for each parameter and its transpose. Tensors whose
    elements are all equal are left out: the key fixes them, so they stay constants."""
    out: dict[tuple[bytes, tuple[int, ...]], tuple[str, tuple | None]] = {}
    for name, t in state.items():
        data = t.detach().cpu()
        if not t.is_floating_point() or _uniform_value(data) is not None:
            continue
        out.setdefault((data.contiguous().numpy().tobytes(), tuple(data.shape)), (name, None))
        if data.dim() >= 2:
            perm = tuple(range(data.dim()))[::-1]
            moved = np.ascontiguousarray(data.numpy().transpose(perm))
            out.setdefault((moved.tobytes(), moved.shape), (name, perm))
    return out
