"""Scaling-law commands: plan what to train, fit a law to measured runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgescale.cli.common import EXIT_INFEASIBLE, app, emit, err, renamed_flags
from edgescale.errors import UserError


# The law's loss is in its own units (nats per token for the published laws), hence no _bpb suffix.
@app.command(cls=renamed_flags({"--target-loss": "--loss-target"}))
def plan(
    compute: Annotated[float | None, typer.Option("--compute", help="training compute budget, FLOPs")] = None,
    loss_target: Annotated[float | None, typer.Option("--loss-target", help="loss to reach (the law's units)")] = None,
    inference_tokens: Annotated[
        float, typer.Option("--inference-tokens", help="lifetime inference tokens (Sardana et al. 2024)")
    ] = 0.0,
    max_tokens: Annotated[float | None, typer.Option("--max-tokens", help="cap on training tokens")] = None,
    law: Annotated[str, typer.Option("--law", help="kaplan2020 | chinchilla2022 | epoch2024 | fit:FILE")] = "epoch2024",
    peak_flops: Annotated[float, typer.Option(help="accelerator peak FLOP/s for the cost")] = 312e12,
    utilisation: Annotated[float, typer.Option(help="model-FLOPs utilisation for the cost")] = 0.40,
    power_w: Annotated[float, typer.Option(help="accelerator power (W) for the energy")] = 400.0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Plan what to train: compute-optimal for a budget, or the cheapest way to a target loss."""
    from edgescale.results.points import resolve_law
    from edgescale.scaling.plan import (
        plan_for_compute,
        plan_for_loss,
        plan_smallest_under_compute,
    )

    if compute is None and loss_target is None:
        raise UserError(
            "give --compute, --loss-target, or both (the smallest model reaching the target within the compute)",
            field="plan",
        )
    for name, value in (("--compute", compute), ("--loss-target", loss_target), ("--max-tokens", max_tokens)):
        if value is not None and not value > 0:
            raise UserError(f"must be positive, got {value:g}", field=name)
    if inference_tokens < 0:
        raise UserError("must be >= 0", field="--inference-tokens")
    the_law = resolve_law(law)
    cost = {"peak_flops": peak_flops, "mfu": utilisation, "power_w": power_w}
    if compute is not None and loss_target is not None:
        result = plan_smallest_under_compute(the_law, loss_target, compute, **cost)
    elif compute is not None:
        result = plan_for_compute(the_law, compute, inference_tokens=inference_tokens, **cost)
    else:
        result = plan_for_loss(the_law, loss_target, inference_tokens=inference_tokens, max_tokens=max_tokens, **cost)
    emit(result.to_dict(), as_json)
    if result.status == "infeasible":
        if not as_json:
            err.print(f"infeasible: {result.reason}", soft_wrap=True)
        raise typer.Exit(EXIT_INFEASIBLE)


@app.command()
def fit(
    source: Annotated[Path, typer.Argument(help="CSV with columns N, D, loss, or an edgescale run directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="write a PNG of the data and the fit")] = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap refits for the intervals")] = 200,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
) -> None:
    """Fit L = E + A/N^alpha + B/D^beta (Chinchilla approach 3) with bootstrap 95% intervals."""
    from edgescale.results.points import load_points
    from edgescale.scaling.fit import fit_chinchilla

    pts = load_points(source)
    result = fit_chinchilla(pts.n, pts.d, pts.loss, n_boot=bootstrap, seed=seed, n_convention=pts.n_convention)
    out = {**result.to_dict(), "source": pts.source, "loss_unit": pts.loss_unit, "notes": pts.notes}
    if plot:
        from edgescale.scaling.report import plot_fit

        out["plot"] = str(plot_fit(result, pts, plot))
    emit(out, as_json)
