"""Scaling-law commands: plan what to train, fit a law to measured runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgescale.cli.common import EXIT_INFEASIBLE, app, check_range, emit, err, renamed_flags
from edgescale.errors import UserError
from edgescale.scaling import distill_plan  # numpy only (scipy late): no cost to the commands that do not plan
from edgescale.scaling.laws import MAX_COMPUTE_FLOPS, MAX_LOSS_TARGET, MAX_TOKENS

# Below 1e9 FLOPs the laws' compute-optimal model has under ~2,000 parameters and ~1e5 tokens, smaller than
# the smallest GPT edgescale builds (11,504 parameters): a budget of 1e-30 would "plan" 2e-17 parameters.
MIN_COMPUTE_FLOPS = 1e9
MAX_BOOTSTRAP = 10_000  # refits: 10,000 already give a 95% interval's ends to ~0.5%; 1e9 allocated 44.7 GiB
MAX_SEED = 2**32 - 1  # what numpy's generators accept


# The law's loss is in its own units (nats per token for the published laws), hence no _bpb suffix.
@app.command(cls=renamed_flags({"--target-loss": "--loss-target"}))
def plan(
    compute: Annotated[float | None, typer.Option("--compute", help="training compute budget, FLOPs")] = None,
    loss_target: Annotated[float | None, typer.Option("--loss-target", help="loss to reach (the law's units)")] = None,
    inference_tokens: Annotated[
        float, typer.Option("--inference-tokens", help="lifetime inference tokens (Sardana et al. 2024)")
    ] = 0.0,
    max_tokens: Annotated[float | None, typer.Option("--max-tokens", help="cap on training tokens")] = None,
    unique_tokens: Annotated[
        float | None,
        typer.Option("--unique-tokens", help="unique training tokens that exist: caps D under a 4-epoch rule"),
    ] = None,
    law: Annotated[str, typer.Option("--law", help="kaplan2020 | chinchilla2022 | epoch2024 | fit:FILE")] = "epoch2024",
    peak_flops: Annotated[float, typer.Option(help="accelerator peak FLOP/s for the cost")] = 312e12,
    utilisation: Annotated[float, typer.Option(help="model-FLOPs utilisation for the cost")] = 0.40,
    power_w: Annotated[float, typer.Option(help="accelerator power (W) for the energy")] = 400.0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    bootstrap: Annotated[int, typer.Option(help="bootstrap refits that test a fit:FILE law's identifiability")] = 200,
    teacher_loss: Annotated[
        float | None, typer.Option("--teacher-loss", help="distil: the teacher's loss (the distillation law's units)")
    ] = None,
    teacher_params: Annotated[
        float | None, typer.Option("--teacher-params", help="distil: teacher parameters (its logits' compute)")
    ] = None,
    teacher_tokens: Annotated[
        float | None, typer.Option("--teacher-tokens", help="distil: teacher training tokens (with --teacher-params)")
    ] = None,
    distill_law: Annotated[
        str | None, typer.Option("--distill-law", help="distil: busbridge2025 (published preset) | fit:FILE")
    ] = None,
) -> None:
    """Plan what to train: compute-optimal for a budget, or the cheapest way to a target loss.

    With a teacher (--teacher-loss, or --teacher-params and --teacher-tokens) and --distill-law: the
    student size and distillation tokens reaching --loss-target, and whether training from scratch is cheaper."""
    if distill_law is not None or teacher_loss is not None or teacher_params is not None or teacher_tokens is not None:
        _plan_distill(distill_law, loss_target, compute, teacher_loss, teacher_params, teacher_tokens, as_json)
        return
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
    _check_ranges(compute, loss_target, max_tokens, unique_tokens, inference_tokens, peak_flops, utilisation, power_w)
    check_range("--compute", compute, MIN_COMPUTE_FLOPS, MAX_COMPUTE_FLOPS, " FLOPs")
    check_range("--bootstrap", bootstrap, 20, MAX_BOOTSTRAP, " refits (at least 20 for a 95% interval)")
    the_law = resolve_law(law, n_boot=bootstrap)
    cost = {"peak_flops": peak_flops, "mfu": utilisation, "power_w": power_w, "unique_tokens": unique_tokens}
    if compute is not None and loss_target is not None:
        result = plan_smallest_under_compute(the_law, loss_target, compute, **cost)
    elif compute is not None:
        result = plan_for_compute(the_law, compute, inference_tokens=inference_tokens, **cost)
    else:
        result = plan_for_loss(the_law, loss_target, inference_tokens=inference_tokens, max_tokens=max_tokens, **cost)
    if as_json:
        emit(result.to_dict(), as_json)
    else:
        typer.echo(plan_text(result, the_law))
    if result.status == "infeasible":
        if not as_json:
            err.print(f"infeasible: {result.reason}", soft_wrap=True)
        raise typer.Exit(EXIT_INFEASIBLE)


def _plan_distill(spec, target, compute, teacher_loss, teacher_params, teacher_tokens, as_json: bool) -> None:
    """``edgescale plan`` with a teacher: :func:`edgescale.scaling.distill_plan.plan_distill`."""
    if spec is None:
        raise UserError(
            "a distillation plan needs the law: --distill-law fit:FILE (fitted on your grid, e.g. by "
            "benchmarks/distill_law.py) or --distill-law busbridge2025 (the published constants, nats/token on C4)",
            field="--distill-law",
        )
    if target is None or compute is not None:
        raise UserError("a distillation plan takes --loss-target and no --compute", field="--loss-target")
    if teacher_loss is None and (teacher_params is None or teacher_tokens is None):
        raise UserError("give --teacher-loss, or --teacher-params and --teacher-tokens", field="--teacher-loss")
    check_range("--loss-target", target, 0, MAX_LOSS_TARGET, " (the law's units)", above=True)
    check_range("--teacher-loss", teacher_loss, 0, MAX_LOSS_TARGET, " (the law's units)", above=True)
    check_range("--teacher-params", teacher_params, 0, MAX_TOKENS, " parameters", above=True)
    check_range("--teacher-tokens", teacher_tokens, 0, MAX_TOKENS, " tokens", above=True)
    result = distill_plan.plan_from_spec(
        spec, target, teacher_loss=teacher_loss, teacher_params=teacher_params, teacher_tokens=teacher_tokens
    )
    if as_json:
        emit(result.to_dict(), as_json)
    else:
        typer.echo(distill_plan.describe(result))
    if result.status == "infeasible":
        if not as_json:
            err.print(f"infeasible: {result.reason}", soft_wrap=True)
        raise typer.Exit(EXIT_INFEASIBLE)


def _check_ranges(compute, loss_target, max_tokens, unique_tokens, inference_tokens, peak_flops, mfu, power_w):
    """Every number in its range (:mod:`edgescale.scaling.laws`'s limits): none overflows the plan's arithmetic."""
    ranges = (  # (flag, value, largest allowed, unit)
        ("--compute", compute, MAX_COMPUTE_FLOPS, " FLOPs"),
        ("--loss-target", loss_target, MAX_LOSS_TARGET, " (the law's units)"),
        ("--max-tokens", max_tokens, MAX_TOKENS, " tokens"),
        ("--unique-tokens", unique_tokens, MAX_TOKENS, " tokens"),
        ("--peak-flops", peak_flops, MAX_COMPUTE_FLOPS, " FLOP/s"),
        ("--utilisation", mfu, 1.0, ""),
        ("--power-w", power_w, 1e9, " W"),
    )
    for name, value, high, unit in ranges:
        check_range(name, value, 0, high, unit, above=True)
    if not 0 <= inference_tokens <= MAX_TOKENS:
        raise UserError(
            f"must be a number in [0, {MAX_TOKENS:g}] tokens, got {inference_tokens:g}", field="--inference-tokens"
        )


def plan_text(plan, law) -> str:
    """A plan for a person: the law and its form, the status, and the plan's numbers or why there are none."""
    unit = getattr(law, "loss_unit", "")
    ci = getattr(law, "ci", {}) or {}
    known = ", ".join(f"{k} [{ci[k][0]:.3g}, {ci[k][1]:.3g}]" for k in ("E", "alpha", "beta") if k in ci)
    lines = [
        f"law: {plan.law}" + (f" ({plan.form})" if plan.form else ""),
        *([f"  95% intervals: {known}"] if known else []),
        f"status: {plan.status} ({plan.objective})",
    ]
    if plan.status == "unidentified":
        add = plan.identify_with or {}
        lines.append(f"  {plan.reason}")
        if add.get("token_budgets"):
            lines.append("  train (N total → D tokens):")
            lines += [
                f"    N = {b['N']:.3g}: D = {', '.join(f'{x:.3g}' for x in b['D'])}" for b in add["token_budgets"]
            ]
        return "\n".join(lines)
    if plan.n_params is None:
        return "\n".join([*lines, f"  {plan.reason}"])
    sh = plan.shape
    shape = f" — {sh.n_layer} layers × width {sh.n_embd}, {sh.n_head} heads ({sh.params_total:,} total)" if sh else ""
    lines.append(f"N = {plan.n_params:.4g} parameters ({law.n_convention}){shape}")
    lines.append(f"D = {plan.n_tokens:.4g} tokens ({plan.tokens_per_param:.3g} per parameter)")
    if plan.epochs is not None:
        lines.append(
            f"  {plan.epochs:.3g} epochs of {plan.unique_tokens:.3g} unique tokens "
            f"(effective D' = {plan.effective_tokens:.3g}); rule: {plan.data_rule}"
        )
    if plan.status == "data_limited":
        lines.append(f"  data-limited: {plan.reason}")
    lines.append(f"compute = {plan.compute_flops:.3g} FLOPs ({plan.cost.accelerator_hours:.3g} accelerator-hours)")
    lines.append(
        f"predicted loss = {plan.predicted_loss:.4g} {unit} (a point on the law: its spread is the intervals above)"
    )
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


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
    from edgescale.scaling.identify import fit_identified

    check_range("--bootstrap", bootstrap, 0, MAX_BOOTSTRAP, " refits")
    check_range("--seed", seed, 0, MAX_SEED)
    pts = load_points(source)
    found = fit_identified(
        pts.n, pts.d, pts.loss, n_boot=bootstrap, seed=seed, n_convention=pts.n_convention, groups=pts.groups
    )  # a run's points: whole runs resampled, as its own fit
    result = found.full
    out = {**result.to_dict(), "source": pts.source, "loss_unit": pts.loss_unit, "notes": pts.notes}
    if found.reduced is not None:  # the full form is not identified: the reduced form, re-tested
        out["reduced"] = found.reduced.to_dict()
    if plot:
        from edgescale.scaling.report import plot_fit

        out["plot"] = str(plot_fit(result, pts, plot))
    emit(out, as_json)
