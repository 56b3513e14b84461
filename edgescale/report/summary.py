"""``summary.md``: the report for a terminal. The answer first (the pick per device for the
study's loss target), then the recipe comparison and the train-small-or-compress verdicts.

Markdown that reads as plain text too: one table, bullet lines and a fixed-width block.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgescale.atomic import write_bytes
from edgescale.progress import loss_text
from edgescale.report import device_tables, time_profile
from edgescale.report.compare import table_lines
from edgescale.report.summary_checks import distillation_lines, pair_lines, trust_lines
from edgescale.results.analysis_schema import Analysis, Pick, VariantPick
from edgescale.results.schema import Results


def _cell(x: Any) -> str:
    """Table-safe text: a ``|`` or a newline would break the markdown row."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def _f(x: Any, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _pick_row(device: str, p: Pick) -> str:
    if isinstance(p, VariantPick):
        v, loss, lat = p.variant, p.variant.loss, p.variant.latency
        meets = {True: " (meets)", False: " (misses)"}.get(loss.test_meets_target, "")
        lo, hi = (None, None) if lat is None else (lat.decode_ms_low, lat.decode_ms_high)
        interval = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
        cells = [
            device,
            f"**use {v.variant_id}**",
            _f(v.params_total, ","),
            _f(None if v.file_bytes is None else v.file_bytes / 1024, ",.1f"),
            loss_text(loss.validation_bpb, loss.validation_se_bpb),
            loss_text(loss.test_bpb, loss.test_se_bpb) + meets,
            _f(lat and lat.decode_ms, ".3g") + interval,
            "?" if lat is None else lat.source,
        ]
    elif p.status == "plan" and p.best is not None:
        b = p.best
        plan, dev = b.plan, b.device
        what = (
            f"train a new model: N={plan.n_params:.3g}, D={plan.n_tokens:.3g} "
            f"(C={plan.compute_flops:.3g} FLOPs), then {b.recipe}"
        )
        cells = [device, f"**{what}**", _f(b.deployed_params, ".3g"), "–",
                 f"{b.predicted_loss_bpb:.4f} (law)", "–", _f(dev and dev.decode_ms, ".3g"),
                 "?" if dev is None else dev.source]  # fmt: skip
    else:
        cells = [device, f"**{p.status}**: {p.reason}", "", "", "", "", "", ""]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def summary_text(results: Results, analysis: Analysis, figures: Mapping[str, Path] | None = None) -> str:
    """The whole ``summary.md`` as a string."""
    target = analysis.loss_target_bpb
    picks = analysis.picks or {}
    lines = [f"# edgescale · {results.study}", ""]
    if target:
        lines += [
            f"**The smallest model that meets {target:g} bits/byte, per device** (chosen on validation, "
            "reported on test; latency measured on this host, predicted elsewhere):",
            "",
            "| device | answer | params | file KiB | val bpb ± SE | test bpb ± SE | decode ms/token | latency |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
            *(_pick_row(d, p) for d, p in picks.items()),
        ]
        notes = [p.memory_note for p in picks.values() if not isinstance(p, VariantPick) and p.memory_note]
        lines += ["", *(f"- {n}" for n in notes)] if notes else []
    else:
        lines += ["The study sets no loss_target_bpb: no pick (edgescale pick RUN_DIR --loss-target-bpb L)."]
    if results.failed_variants:
        lines += ["", "## Failed variants (left out of everything below; a rerun retries them)", ""]
        lines += [
            f"- {f.variant_id}: failed at {f.failed_stage} ({f.error_type}): {f.reason}"
            for f in results.failed_variants
        ]
    lines += device_tables.md_lines(results)  # the predictions behind the answer, next to it
    verdicts = [r.statement for r in analysis.routes.per_device.values()] if analysis.routes else []
    if any(verdicts):
        lines += ["", "## Train small, or train big and compress?", "", *(f"- {v}" for v in verdicts if v)]
    pairs = pair_lines(analysis)
    if pairs and not any(verdicts):
        lines += ["", "## Train small, or train big and compress?"]
    lines += pairs
    lines += distillation_lines(results.distillation)
    cmp = analysis.compare
    if cmp is not None and cmp.sizes:
        lines += ["", "## Recipes compared on the same model", "", "```", *table_lines(cmp), "```"]
        lines += ["", "`~` after a CI: within noise (the interval holds 1×, or lies within the run's A/A noise floor)."]
    fits = analysis.degradation or {}
    if fits:
        lines += ["", "## Degradation law (loss change vs size, per recipe)", ""]
        for recipe, f in fits.items():
            law = f"γ_N = {f.gamma_n:.3f}" if f.gamma_n is not None else f"form {f.form}"
            law += f", γ_D = {f.gamma_d:.3f}" if f.gamma_d is not None else ""
            n_sizes = len({pt.size for pt in f.points})
            lines.append(f"- {recipe}: {law} over {len(f.points)} points of {n_sizes} sizes; {'; '.join(f.notes)}")
    lines += time_profile.lines(results)
    lines += trust_lines(results)
    if figures:
        lines += ["", "## Files", "", "- report.html (everything, self-contained)"]
        lines += [f"- {Path(p).name}" for p in figures.values()]
    return "\n".join(lines).rstrip() + "\n"


def write_summary(
    results: Results, analysis: Analysis, path: Path, figures: Mapping[str, Path] | None = None, extra: str = ""
) -> Path:
    """``summary.md``; ``extra``: markdown from outside results.json, appended (edgescale.report.overtrained)."""
    return write_bytes(path, (summary_text(results, analysis, figures) + extra).encode("utf-8"))
