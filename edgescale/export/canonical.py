"""Content hashes for artifacts; ONNX files are hashed after canonicalisation.

Canonicalisation drops what does not change the computation — producer name and
version, doc strings, metadata properties (the model's and each node's), the graph name — and serialises
deterministically, so the same model always gets the same hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgescale.errors import UserError


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def onnx_sha256(path: Path) -> str:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for corrupt files
        raise UserError(f"not a readable ONNX file: {e}", file=path) from None
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
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def artifact_sha256(path: Path) -> str:
    return onnx_sha256(path) if Path(path).suffix == ".onnx" else file_sha256(path)
