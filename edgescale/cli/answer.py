"""The answer commands: pick a variant, compare recipes, list the stored runs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgescale.cli.common import EXIT_INFEASIBLE, app, check_range, emit, err, renamed_flags, table_console
from edgescale.errors import UserError

MAX_SERVED_TOKENS = 1e30  # what plan's --inference-tokens allows: no lifetime serves more, and the sums stay finite

# read a run directory whose manifest does not say "finished" (see docs/pick.md): loudly, never silently
ALLOW_UNFINISHED = typer.Option(
    "--allow-unfinished", help="read a run that was killed or is unfinished anyway (with a warning)"
)


def warn_about(warnings: Iterable[str]) -> None:
    """Print what the run-directory checks found (unfinished run, no manifest) on stderr."""
    for w in warnings:
        err.print(f"warning: {w}", soft_wrap=True, markup=False)


@app.command("pick", cls=renamed_flags({"--target-loss": "--loss-target-bpb"}))
def pick_cmd(
    run_dir: Annotated[Path | None, typer.Argument(help="a finished run directory (results.json)")] = None,
    loss_target_bpb: Annotated[
        float | None, typer.Option("--loss-target-bpb", help="validation loss to meet, bits per byte")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="a device of the run (host: measured; others: predicted)")] = (
        "host"
    ),
    cost: Annotated[
        str | None,
        typer.Option("--cost", help="decode_ms | prefill_ms | energy_mj on the device, or a frontier axis name"),
    ] = None,
    max_latency_ms: Annotated[float | None, typer.Option("--max-latency-ms", help="decode latency limit")] = None,
    max_memory_mb: Annotated[float | None, typer.Option("--max-memory-mb", help="peak memory limit (1 MB = 1e6 B)")] = (
        None
    ),
    more: Annotated[list[Path] | None, typer.Option("--run", help="another run directory (repeatable)")] = None,
    all_runs: Annotated[bool, typer.Option("--all-runs", help="every run in the results store")] = False,
    db: Annotated[Path | None, typer.Option("--db", help="results store for --all-runs")] = None,
    served_tokens: Annotated[
        float, typer.Option("--served-tokens", help="lifetime served tokens for the inference-aware plan")
    ] = 1e9,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    allow_unfinished: Annotated[bool, ALLOW_UNFINISHED] = False,
) -> None:
    """The smallest variant meeting a loss target on a device; or, if none, what to train."""
    from edgescale.report.pick import (
        Limits,
        load_run_dir,
        load_store_runs,
        pick,
        summary_lines,
    )
    from edgescale.results.base import clean

    if loss_target_bpb is None:
        raise UserError("give the loss to meet in bits per byte", field="--loss-target-bpb")
    for name, value in (("--max-latency-ms", max_latency_ms), ("--max-memory-mb", max_memory_mb)):
        if value is not None and not value > 0:
            raise UserError(f"must be positive, got {value:g}", field=name)
    check_range("--served-tokens", served_tokens, 0, MAX_SERVED_TOKENS, " tokens")
    runs = [
        load_run_dir(p, allow_unfinished=allow_unfinished) for p in ([run_dir] if run_dir else []) + list(more or [])
    ]
    if all_runs:
        known = {r.label for r in runs}
        runs += [r for r in load_store_runs(db) if r.label not in known]
    if not runs:
        raise UserError("give a run directory, --run DIR or --all-runs", field="RUN_DIR")
    result = pick(runs, loss_target_bpb, device, cost=cost, limits=Limits(max_latency_ms, max_memory_mb),
                  served_tokens=served_tokens)  # fmt: skip
    warn_about(w for r in runs for w in r.warnings)
    if as_json:
        emit(clean(result), True)
    else:
        err.print("\n".join(summary_lines(result)), soft_wrap=True, markup=False)
    if result["status"] == "infeasible":
        if not as_json:
            err.print(f"infeasible: {result['reason']}", soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_INFEASIBLE)


@app.command("compare")
def compare_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory (results.json)")],
    size: Annotated[str | None, typer.Option("--size", help="one size of the ladder (default: every size)")] = None,
    device: Annotated[str, typer.Option("--device", help="device for latency and the frontier")] = "host",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    allow_unfinished: Annotated[bool, ALLOW_UNFINISHED] = False,
) -> None:
    """Recipes side by side on the same model: loss change, speed-ups with CIs, size, frontier."""
    from edgescale.report.compare import compare, table_lines
    from edgescale.report.pick import load_run_dir

    run = load_run_dir(run_dir, allow_unfinished=allow_unfinished)
    result = compare(run.results, size, device)
    warn_about(run.warnings)
    if as_json:
        emit(result.data(), True)
        return
    table_console(200).print("\n".join(table_lines(result)), markup=False)


@app.command()
def runs(
    db: Annotated[
        Path | None, typer.Option("--db", help="results store (default: $EDGESCALE_DB, else runs/edgescale.db)")
    ] = None,
    add: Annotated[
        list[Path] | None, typer.Option("--add", help="first record this finished run directory (repeatable)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """List the runs in the results store (study, when, variants, best validation loss, CPU)."""
    from edgescale.store.read import list_runs
    from edgescale.store.schema import db_path
    from edgescale.store.write import record_run

    path = db_path(db)
    for run_dir in add or []:
        err.print(f"recorded {record_run(path, run_dir)} in {path}")
    listing = list_runs(path)
    if as_json:
        emit({"db": str(path), "runs": [r.to_dict() for r in listing]}, True)
        return
    if not listing:
        err.print(f"no runs recorded in {path}")
        return
    table = Table(title=f"runs in {path}")
    for col in ("study", "finished (UTC)", "variants", "best val bpb", "target", "CPU", "threads", "status", "run"):
        table.add_column(col)
    for r in listing:
        best = f"{r.best_val_bpb:.4f} ({r.best_variant})" if r.best_val_bpb is not None else "–"
        table.add_row(
            r.study,
            (r.finished_at or "?").replace("T", " ").removesuffix("+00:00"),
            str(r.n_variants),
            best,
            f"{r.loss_target_bpb:g}" if r.loss_target_bpb is not None else "–",
            r.cpu_model or "?",
            str(r.threads) if r.threads is not None else "?",
            r.status if r.present else "results.json missing",
            r.run_id,
        )
    table_console(200).print(table)
