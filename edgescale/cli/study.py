"""Commands on studies and their files: run, validate, export, report, recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgescale.cli.common import app, emit, err, table_console
from edgescale.errors import UserError

# A study's model.factory is code: it runs only from a module beside the study file or one named here.
TrustCode = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-code",
        metavar="MODULE",
        help="run model.factory code from this installed module or package (repeatable); modules beside "
        "the study file are trusted, the standard library never is",
    ),
]


@app.command()
def run(
    study: Annotated[Path | None, typer.Argument(help="study YAML (default: the built-in default study)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="run directory (default: runs/<study name>/)")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="no progress output")] = False,
    executor: Annotated[
        str, typer.Option("--executor", help="local (default) | ray: variants and latency as Ray tasks")
    ] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="with --executor ray: an existing cluster (default: start one here)")
    ] = None,
    trust_code: TrustCode = None,
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            help="train and score on this corpus instead of the study's corpus.source: a folder of "
            ".txt/.jsonl/.parquet files, or one such file",
        ),
    ] = None,
) -> None:
    """Run a study end to end: train, export, compress, measure, report. The training's compute and
    wall-time estimate is printed before anything trains."""
    from edgescale.executor import check_executor
    from edgescale.progress import Reporter
    from edgescale.run import run_study

    check_executor(executor)
    if address and executor != "ray":
        raise UserError("only with --executor ray", field="--address")
    run_dir = run_study(study, out, Reporter(quiet=quiet), executor, address, tuple(trust_code or ()), corpus)
    err.print(f"wrote {run_dir}/results.json, report.html, summary.md and the figures")


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="study, recipe or device YAML files, or ONNX models")],
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="for ONNX files: cpu | nnapi | coreml | xnnpack | qnn (op coverage of that execution provider; "
            "xnnpack warns about nodes left to the CPU EP, the others refuse them)",
        ),
    ] = "cpu",
    trust_code: TrustCode = None,
) -> None:
    """Validate files without running anything; for ONNX models, check op coverage on a target.
    A study whose model.factory would run code says so, and is refused unless that code is trusted."""
    from edgescale.inputs import validate_file

    for f in files:
        if f.suffix == ".onnx":
            from edgescale.export.mobile import TARGETS, op_coverage
            from edgescale.onnx_probe import probe_onnx

            if target not in TARGETS:
                raise UserError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}", field="--target")
            probe_onnx(f, need_session=False)  # a native crash or hang in a child, not here
            cov = op_coverage(f, target)
            if not cov.complete:
                raise UserError(cov.message(), file=f, field=f"--target {target}")
            err.print(f"ok  {f}  ({cov.message()})", soft_wrap=True)
            continue
        kind = validate_file(f, tuple(trust_code or ()))
        err.print(f"ok  {f}  ({kind})", soft_wrap=True)


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="an ONNX model (e.g. a variant from a run directory)")],
    out: Annotated[Path, typer.Option("--out", help="output file")],
    fmt: Annotated[str, typer.Option("--format", help="ort: onnxruntime's mobile format")] = "ort",
) -> None:
    """Convert a model for a device runtime (ORT format for onnxruntime mobile)."""
    from edgescale.export.mobile import to_ort_format

    if fmt != "ort":
        raise UserError(f"unknown format {fmt!r}; allowed: ort", field="--format")
    from edgescale.onnx_probe import probe_onnx

    probe_onnx(model)  # file exists, is ONNX, and onnxruntime opens it without crashing
    err.print(f"wrote {to_ort_format(model, out)}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory (results.json)")],
    out: Annotated[Path | None, typer.Option("--out", help="where to write (default: the run directory)")] = None,
    allow_unfinished: Annotated[
        bool, typer.Option("--allow-unfinished", help="report a run that was killed or is unfinished (with a warning)")
    ] = False,
) -> None:
    """(Re)write a run's report: report.html (self-contained), summary.md and the PNG figures."""
    from edgescale.cli.answer import warn_about
    from edgescale.report.build import report_run

    files = report_run(run_dir, out, allow_unfinished=allow_unfinished)
    warn_about(files.warnings)
    err.print(f"wrote {files.html}, {files.summary.name} and {len(files.figures)} figures", soft_wrap=True)


@app.command()
def recipes(
    ops: Annotated[bool, typer.Option("--ops", help="also list every registered op with its fields")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """List the built-in recipes (target, steps, description) and, with --ops, every op's fields."""
    from edgescale.compress.catalog import op_catalog, recipe_catalog

    listing = {"recipes": recipe_catalog(), **({"ops": op_catalog()} if ops else {})}
    if as_json:
        emit(listing, True)
        return
    console = table_console(160)
    table = Table(title="recipes")
    for col in ("name", "target", "steps", "description"):
        table.add_column(col)
    for r in listing["recipes"]:
        target = f"{r['target']['runtime']} / {r['target']['execution_provider']}" if r["target"] else "–"
        table.add_row(r["name"], target, r["chain"], r["description"].strip())
    console.print(table)
    for op, d in listing.get("ops", {}).items():
        t = Table(title=f"{op}  ({d['takes']} → {d['gives']})  {d['summary']}", title_justify="left")
        t.caption_justify = "left"
        t.caption = "facts: " + ("; ".join(f"{k} {v}" for k, v in d["facts"].items()) or "none")
        for col in ("field", "type", "default", "description"):
            t.add_column(col)
        for name, f in d["fields"].items():
            t.add_row(name, f["type"], repr(f["default"]), f["description"])
        console.print(t)
