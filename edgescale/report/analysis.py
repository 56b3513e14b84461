"""Everything the report says, computed once from ``results.json``.

:func:`analyse` gathers the frontiers on every cost axis, the recipes' degradation laws,
the pick for the loss target on every study device, the recipe comparison and the
train-small-versus-compress routes into one typed :class:`~edgescale.results.analysis_schema.Analysis`,
validated once here. ``write_outputs`` stores it in ``results.json`` as ``analysis``, so
``edgescale pick`` / ``compare`` (run with the same arguments) and the report show the same
numbers. Non-finite numbers become ``null``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgescale.report.compare import compare
from edgescale.report.degradation import fit_recipes
from edgescale.report.frontier import frontiers
from edgescale.report.pick import Run, pick
from edgescale.report.routes import routes
from edgescale.results.analysis_schema import Analysis
from edgescale.results.base import clean
from edgescale.results.schema import Results

SCHEMA_VERSION = 2  # 2: the loss target is named loss_target_bpb (was target_bpb)


def analyse(
    results: Results,
    *,
    device: str | None = None,
    served_tokens: float = 1e9,
    target: float | None = None,
    root: Path | None = None,
) -> Analysis:
    """Frontiers, degradation fits, picks per device, the compare table (on ``device``, default
    the host) and routes, for ``target`` (default: the study's ``loss_target_bpb``). ``root``: the
    run directory, whose per-window losses pair the loss intervals (None: unpaired or none)."""
    variants = results.variants
    field = "loss_target_bpb" if target is None else "--loss-target-bpb"  # named if the target is invalid
    target = results.loss_target_bpb if target is None else target
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "loss_target_bpb": target, "served_tokens": served_tokens}
    if not variants:
        return Analysis.model_validate(out | {"note": "no variants"})
    devices = results.devices()
    device = device or ("host" if "host" in devices else devices[0])
    run = Run(results.study, results)
    out |= {
        "devices": devices,
        "frontiers": frontiers(variants),
        "degradation": {r: f.to_dict() for r, f in fit_recipes(results, root=root).items()},
        "picks": {d: pick([run], target, d, served_tokens=served_tokens, target_field=field) for d in devices}
        if target
        else {},
        "compare": compare(results, device=device),
        "routes": routes(results, devices, served_tokens=served_tokens, target=target, root=root),
    }
    if not target:
        out["picks_note"] = "the study sets no loss_target_bpb: no pick"
    return Analysis.model_validate(clean(out))
