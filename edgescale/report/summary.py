"""``summary.md``: the report for a terminal. The answer first (the pick per device for the
study's loss target), then the recipe comparison and the train-small-or-compress verdicts.

Markdown that reads as plain text too: one table, bullet lines and a fixed-width block.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgescale.atomic import write_bytes
from edgescale.report.compare import table_lines
from edgescale.results.schema import Results


def _cell(x: Any) -> str:
    """Table-safe text: a ``|`` or a newline would break the markdown row."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def _f(x: Any, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _pick_row(device: str, p: Mapping) -> str:
    if p.get("status") == "ok":
        v = p["variant"]
        lat, loss = v.get("latency") or {}, v["loss"]
        meets = {True: " (meets)", False: " (misses)"}.get(loss.get("test_meets_target"), "")
        lo, hi = lat.get("decode_ms_low"), lat.get("decode_ms_high")
        interval = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
        cells = [
            device,
            f"**use {v['variant_id']}**",
            _f(v.get("params_total"), ","),
            _f(None if v.get("file_bytes") is None else v["file_bytes"] / 1024, ",.1f"),
            _f(loss.get("validation_bpb"), ".4f"),
            _f(loss.get("test_bpb"), ".4f") + meets,
            _f(lat.get("decode_ms"), ".3g") + interval,
            str(lat.get("source", "?")),
        ]
    elif p.get("status") == "plan":
        b = p["best"]
        plan, dev = b["plan"], b.get("device") or {}
        what = (
            f"train a new model: N={plan['n_params']:.3g}, D={plan['n_tokens']:.3g} "
            f"(C={plan['compute_flops']:.3g} FLOPs), then {b['recipe']}"
        )
        cells = [device, f"**{what}**", _f(b.get("deployed_params"), ".3g"), "–",
                 f"{b['predicted_loss_bpb']:.4f} (law)", "–", _f(dev.get("decode_ms"), ".3g"),
                 str(dev.get("source", "?"))]  # fmt: skip
    else:
        cells = [device, f"**{p.get('status', 'no pick')}**: {p.get('reason', '')}", "", "", "", "", "", ""]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def summary_text(results: Results, analysis: Mapping, figures: Mapping[str, Path] | None = None) -> str:
    """The whole ``summary.md`` as a string."""
    target = analysis.get("loss_target_bpb")
    lines = [f"# edgescale · {results.study}", ""]
    if target:
        lines += [
            f"**The smallest model that meets {target:g} bits/byte, per device** (chosen on validation, "
            "reported on test; latency measured on this host, predicted elsewhere):",
            "",
            "| device | answer | params | file KiB | val bpb | test bpb | decode ms/token | latency |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
            *(_pick_row(d, p) for d, p in (analysis.get("picks") or {}).items()),
        ]
        notes = [p["memory_note"] for p in (analysis.get("picks") or {}).values() if p.get("memory_note")]
        lines += ["", *(f"- {n}" for n in notes)] if notes else []
    else:
        lines += ["The study sets no loss_target_bpb: no pick (edgescale pick RUN_DIR --loss-target-bpb L)."]
    verdicts = [r.get("statement") for r in ((analysis.get("routes") or {}).get("per_device") or {}).values()]
    if any(verdicts):
        lines += ["", "## Train small, or train big and compress?", "", *(f"- {v}" for v in verdicts if v)]
    cmp = analysis.get("compare") or {}
    if cmp.get("sizes"):
        lines += ["", "## Recipes compared on the same model", "", "```", *table_lines(cmp), "```"]
        lines += ["", "`~` after a CI: the interval holds 1× (within noise)."]
    fits = analysis.get("degradation") or {}
    if fits:
        lines += ["", "## Degradation law (loss change vs size, per recipe)", ""]
        for recipe, f in fits.items():
            gn, gd = f.get("gamma_n"), f.get("gamma_d")
            law = f"γ_N = {gn:.3f}" if gn is not None else f"form {f.get('form')}"
            law += f", γ_D = {gd:.3f}" if gd is not None else ""
            lines.append(
                f"- {recipe}: {law} over {len(f.get('points') or [])} sizes; {'; '.join(f.get('notes') or [])}"
            )
    if figures:
        lines += ["", "## Files", "", "- report.html (everything, self-contained)"]
        lines += [f"- {Path(p).name}" for p in figures.values()]
    return "\n".join(lines).rstrip() + "\n"


def write_summary(results: Results, analysis: Mapping, path: Path, figures: Mapping[str, Path] | None = None) -> Path:
    return write_bytes(path, summary_text(results, analysis, figures).encode("utf-8"))
