"""Content hashes for artifacts; ONNX files are hashed after canonicalisation.

Canonicalisation drops what does not change the computation — producer name and
version, doc strings, metadata properties (the model's and each node's), the graph name — and serialises
deterministically, so the same model always gets the same hash.

A graph over 2 GB keeps its weights in ONNX external data: ``X.onnx`` plus one data file
beside it, which each tensor names by a relative ``location`` (with offset and length).
Its hash covers both: the canonical graph with every ``location`` blanked (so renaming
the data file, as the run directory does when it stores it under its hash, changes
nothing) and the data file's sha256. A graph without external data hashes as it always
did. :func:`move_onnx` moves a graph and its data file together, data first, graph last,
rewriting the graph's ``location`` to the new data file name (``<graph name>.data``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from edgescale.atomic import write_bytes
from edgescale.errors import UserError

_EXTERNAL_SALT = b"edgescale onnx+external-data v1\0"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_graph(path: Path):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for corrupt files
        raise UserError(f"not a readable ONNX file: {e}", file=path) from None


def _external_tensors(model) -> list:
    """Every tensor (initializers and attributes, subgraphs included) whose data lives in a file."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [t for t in _get_all_tensors(model) if uses_external_data(t)]


def _location(tensor) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def _set_location(tensors: list, location: str) -> None:
    for t in tensors:
        for e in t.external_data:
            if e.key == "location":
                e.value = location


def _data_files(path: Path, tensors: list) -> list[Path]:
    """The external data files ``tensors`` name, in first-use order; a location that leaves the
    graph's folder or a file that is missing is refused."""
    names = list(dict.fromkeys(_location(t) for t in tensors))
    files = []
    for name in names:
        if not name or Path(name).is_absolute() or Path(name).name != name:
            raise UserError(f"external data location {name!r} is not a file name beside the graph", file=path)
        f = Path(path).parent / name
        if not f.is_file():
            raise UserError(f"external data file {name} is missing", file=path)
        files.append(f)
    return files


def external_data_files(path: Path) -> list[Path]:
    """The external data files of the ONNX graph at ``path`` ([] when its weights are inline)."""
    return _data_files(path, _external_tensors(_load_graph(path)))


def artifact_bytes(path: Path) -> int:
    """Bytes on disk of an artifact: an ONNX graph with its external data files, or the one file."""
    path = Path(path)
    extra = external_data_files(path) if path.suffix == ".onnx" else []
    return path.stat().st_size + sum(f.stat().st_size for f in extra)


def onnx_sha256(path: Path) -> str:
    model = _load_graph(path)
    model.producer_name = ""
    model.producer_version = ""
    model.doc_string = ""
    model.graph.doc_string = ""
    model.graph.name = ""
    del model.metadata_props[:]
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]  # an exporter's per-node stack traces: source paths and line numbers
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        vi.doc_string = ""
    external = _external_tensors(model)
    if not external:
        return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    files = _data_files(path, external)
    _set_location(external, "")  # the hash names the data by content, not by file name
    h = hashlib.sha256(_EXTERNAL_SALT)
    h.update(hashlib.sha256(model.SerializeToString(deterministic=True)).digest())
    for f in files:
        h.update(bytes.fromhex(file_sha256(f)))
    return h.hexdigest()


def artifact_sha256(path: Path) -> str:
    return onnx_sha256(path) if Path(path).suffix == ".onnx" else file_sha256(path)


def move_onnx(src: Path, dst: Path) -> Path:
    """Move an ONNX graph to ``dst`` with its external data (if any) as ``dst.name + ".data"``.

    Data first, graph last, each by rename: a reader that finds the graph finds its data.
    Graphs with several data files are refused (every writer here writes one)."""
    src, dst = Path(src), Path(dst)
    model = _load_graph(src)
    external = _external_tensors(model)
    if not external:
        os.replace(src, dst)
        return dst
    files = _data_files(src, external)
    if len(files) != 1:
        raise UserError(f"graph with {len(files)} external data files; one is supported", file=src)
    data = dst.with_name(dst.name + ".data")
    os.replace(files[0], data)
    _set_location(external, data.name)
    write_bytes(dst, model.SerializeToString())
    src.unlink()
    return dst
