"""The one reader and the one writer of ``results.json``, and the migration of older versions.

Version 1 (every file written before the schema existed; some have no ``schema_version``)
differs from version 2 only by names, so it is migrated on read:

- ``analysis.target_bpb``, ``analysis.picks.*.target_bpb``, ``analysis.routes.target_bpb`` and
  ``scaling.plan_for_target.target_bpb`` → ``loss_target_bpb``
- ``variants[].cost.flops_context`` → dropped: it always equalled ``cost.decode_context``
- ``scaling.plan_for_target.shape.d_model`` → ``n_embd``

A version newer than this edgescale knows is refused with one message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgescale.atomic import write_json
from edgescale.errors import UserError
from edgescale.results.schema import SCHEMA_VERSION, Results


def _rename(d: dict | None, old: str, new: str) -> None:
    if isinstance(d, dict) and old in d:
        d[new] = d.pop(old)  # the new name goes last; v1 files are not rewritten, so order is free


def _dict(x: Any) -> dict:
    """``x`` if it is a dict, else an empty one (that the caller may change without effect)."""
    return x if isinstance(x, dict) else {}


def migrate(data: dict[str, Any], source: Path | str = "results.json") -> dict[str, Any]:
    """``data`` (a parsed results.json of any known version) in the current version's names."""
    version = data.get("schema_version", 1)
    if version == SCHEMA_VERSION:
        return data
    if version != 1:
        raise UserError(
            f"results.json schema_version {version!r} is not one this edgescale reads (1 or {SCHEMA_VERSION}): "
            "read it with the edgescale that wrote it, or rerun the study",
            file=source,
        )
    out = json.loads(json.dumps(data))  # a deep copy: the caller's dict stays as read
    out["schema_version"] = SCHEMA_VERSION
    # Only the dicts are renamed: a section of the wrong shape is left for the schema to name.
    analysis = _dict(out.get("analysis"))
    _rename(analysis, "target_bpb", "loss_target_bpb")
    for answer in _dict(analysis.get("picks")).values():
        _rename(answer, "target_bpb", "loss_target_bpb")
    _rename(analysis.get("routes"), "target_bpb", "loss_target_bpb")
    plan = _dict(out.get("scaling")).get("plan_for_target")
    _rename(plan, "target_bpb", "loss_target_bpb")
    _rename(_dict(plan).get("shape"), "d_model", "n_embd")
    variants = out.get("variants")
    for v in variants if isinstance(variants, list) else []:
        cost = _dict(_dict(v).get("cost"))
        if "flops_context" in cost and cost["flops_context"] != cost.get("decode_context"):
            raise UserError(
                f"variant {v.get('variant_id')}: cost.flops_context {cost['flops_context']} differs from "
                f"decode_context {cost.get('decode_context')}: not a results.json this edgescale can migrate; "
                "rerun the study",
                file=source,
            )
        cost.pop("flops_context", None)
    return out


def parse_results(data: dict[str, Any], source: Path | str = "results.json") -> Results:
    """Typed results from parsed JSON of any known version; a file that does not fit is a UserError."""
    try:
        return Results.model_validate(migrate(data, source))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UserError(f"not a valid edgescale results.json: {first['msg']}", file=source, field=where) from None


def read_results(run_dir: Path) -> Results:
    """A finished run directory's ``results.json``; a missing, corrupt or unknown one is a UserError."""
    return read_results_sha(run_dir)[0]


def read_results_sha(run_dir: Path) -> tuple[Results, str]:
    """``read_results`` and the sha256 of the very bytes it parsed (to match the run's finished manifest)."""
    path = Path(run_dir) / "results.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError("no results.json: not a finished edgescale run directory", file=run_dir) from None
    except IsADirectoryError:
        raise UserError("results.json is a directory: not an edgescale results file", file=path) from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"corrupt results.json: {e}", file=path) from None
    if not isinstance(data, dict):
        raise UserError("results.json is not a JSON object: not an edgescale results file", file=path)
    return parse_results(data, path), hashlib.sha256(raw).hexdigest()


def write_results(path: Path, results: Results) -> Path:
    """Write ``results`` to ``path`` (temp file, then rename)."""
    return write_json(path, results.data())
