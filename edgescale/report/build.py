"""Write a run's report: the PNG figures, ``report.html`` (self-contained) and ``summary.md``.

The same function serves the pipeline (``write_outputs``) and ``edgescale report RUN_DIR``:
everything comes from ``results.json`` and its ``analysis`` section (recomputed with
:func:`edgescale.report.analysis.analyse` when an older run lacks it), so a report can be
rebuilt for old runs, into the run directory or elsewhere (``--out``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from edgescale.atomic import write_bytes
from edgescale.errors import UserError
from edgescale.report import charts, overtrained, plots
from edgescale.report.analysis import analyse
from edgescale.report.html import render
from edgescale.report.summary import write_summary
from edgescale.results.analysis_schema import Analysis
from edgescale.results.schema import Results
from edgescale.results.snapshot import locked, read_snapshot


def _figures() -> dict[str, tuple[str, Callable[[Results, Analysis, Path], Path | None]]]:
    """Figure name → (file name, draw(results, analysis, path)); in the page's order."""
    return {
        "frontier_devices": ("frontier-devices.png", lambda r, a, p: plots.plot_device_frontiers(r, p)),
        "frontier": ("frontier.png", lambda r, a, p: plots.plot_frontier(r, p)),
        "compare": ("compare.png", lambda r, a, p: charts.plot_compare(r, a.compare, p)),
        "degradation": ("degradation.png", lambda r, a, p: charts.plot_degradation(r, a.degradation or {}, p)),
        "latency": ("latency.png", lambda r, a, p: charts.plot_latency(r, p)),
        "plan": ("plan.png", lambda r, a, p: charts.plot_plan(r, a, p)),
        "scaling": ("scaling.png", lambda r, a, p: plots.plot_scaling(r, p)),
        "loss_curves": ("loss-curves.png", lambda r, a, p: plots.plot_loss_curves(r, p)),
    }


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    summary: Path
    figures: dict[str, Path]  # figure name → PNG written (figures with nothing to draw are left out)
    warnings: tuple[str, ...] = ()  # about the run read (unfinished, no manifest): for the terminal


def analysis_of(results: Results, root: Path | None = None) -> Analysis:
    """``results.analysis``, or computed now (with the run directory ``root``) for results written before it existed."""
    return results.analysis if results.analysis is not None else analyse(results, root=root)


def draw_figures(results: Results, analysis: Analysis, out_dir: Path) -> dict[str, Path]:
    """Draw every figure into ``out_dir``; a figure with nothing to draw leaves no file (and
    removes a stale one of a previous report there)."""
    out = {}
    for name, (file, draw) in _figures().items():
        path = Path(out_dir) / file
        drawn = draw(results, analysis, path)
        if drawn is None:
            path.unlink(missing_ok=True)
        else:
            out[name] = drawn
    return out


def write_report(
    results: Results, analysis: Analysis, figures: Mapping[str, Path], path: Path, extra: tuple = ()
) -> Path:
    """Write ``report.html`` embedding ``figures`` (name → PNG) as data URIs; return ``path``.
    ``extra``: sections from outside results.json (see :func:`edgescale.report.html.render`)."""
    images = {name: Path(p).read_bytes() for name, p in figures.items()}
    return write_bytes(path, render(results, analysis, images, extra).encode("utf-8"))


def build_report(results: Results, out_dir: Path, root: Path | None = None) -> ReportFiles:
    """Every report file for ``results`` (of the run directory ``root``) in ``out_dir``: the PNGs,
    ``report.html``, ``summary.md``."""
    out_dir = Path(out_dir)
    analysis = analysis_of(results, root)
    figures = draw_figures(results, analysis, out_dir)
    # benchmarks/overtrained.py's verdicts, where it left them in this run directory
    ot = overtrained.load(root if root is not None else out_dir)
    extra = (("overtrained", overtrained.TITLE, overtrained.html(ot)),) if ot else ()
    html = write_report(results, analysis, figures, out_dir / "report.html", extra)
    extra_md = "\n" + overtrained.markdown(ot) if ot else ""
    summary = write_summary(results, analysis, out_dir / "summary.md", figures, extra_md)
    return ReportFiles(html, summary, figures)


def report_run(run_dir: Path, out: Path | None = None, *, allow_unfinished: bool = False) -> ReportFiles:
    """(Re)write the report of a finished run directory, into ``out`` (default: the run directory).

    Under the run directory's lock (exclusive when the report goes into it), from results that
    passed the checks of :mod:`edgescale.results.snapshot`; its warnings come back in ``warnings``."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UserError("not a directory", file=run_dir, field="RUN_DIR")
    out_dir = Path(out) if out is not None else root
    into_run = out_dir.resolve() == root.resolve()
    with locked(root, exclusive=into_run):
        snap = read_snapshot(root, allow_unfinished=allow_unfinished)
        files = build_report(snap.results, out_dir, root)
    return replace(files, warnings=snap.warnings)
