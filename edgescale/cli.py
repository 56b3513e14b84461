"""The ``edgescale`` command line (typer). Each command validates, calls one library
function and says where its output went. Exit codes: 0 ok, 2 invalid input, 1 failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgescale.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="edgescale: the smallest, fastest model that meets your loss target on your device.",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)


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
) -> None:
    """Run a study end to end: train, export, compress, measure, report."""
    from edgescale.executor import check_executor
    from edgescale.pipeline import run_study
    from edgescale.progress import Reporter

    check_executor(executor)
    if address and executor != "ray":
        raise UserError("only with --executor ray", field="--address")
    run_dir = run_study(study, out, Reporter(quiet=quiet), executor, address)
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
) -> None:
    """Validate files without running anything; for ONNX models, check op coverage on a target."""
    from edgescale.config import validate_file

    for f in files:
        if f.suffix == ".onnx":
            from edgescale.export.mobile import TARGETS, op_coverage
            from edgescale.guard import probe_onnx

            if target not in TARGETS:
                raise UserError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}", field="--target")
            probe_onnx(f, need_session=False)  # a native crash or hang in a child, not here
            cov = op_coverage(f, target)
            if not cov.complete:
                raise UserError(cov.message(), file=f, field=f"--target {target}")
            err.print(f"ok  {f}  ({cov.message()})", soft_wrap=True)
            continue
        kind = validate_file(f)
        err.print(f"ok  {f}  ({kind})")


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
    from edgescale.guard import probe_onnx

    probe_onnx(model)  # file exists, is ONNX, and onnxruntime opens it without crashing
    err.print(f"wrote {to_ort_format(model, out)}")


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="an ONNX causal LM (edgescale's or optimum's signature)")],
    study: Annotated[
        Path | None, typer.Option("--study", help="study whose corpus and evaluation protocol score the loss")
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help="Hugging Face tokenizer folder, or bytes (default: the model's folder if it holds one, else bytes)",
        ),
    ] = None,
    prompt_len: Annotated[int, typer.Option("--prompt-len", help="prefill prompt length (tokens)")] = 64,
    context: Annotated[int, typer.Option("--context", help="context at which one decode step is timed")] = 128,
    repeats: Annotated[int, typer.Option(help="timed repeats")] = 30,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads")] = 2,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="scored tokens (default: the study's)")] = None,
    no_loss: Annotated[bool, typer.Option("--no-loss", help="latency only")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Measure a user's ONNX causal LM: prefill and decode latency here, and held-out loss in bits per byte."""
    from edgescale.guard import probe_onnx
    from edgescale.hf.onnx_file import bench as run_bench

    probe_onnx(model)  # an untrusted file: opened in a child process first

    for name, value in (("--prompt-len", prompt_len), ("--repeats", repeats - 2), ("--threads", threads)):
        if not value > 0:
            raise UserError(f"must be positive (repeats >= 3), got {value:g}", field=name)
    if context < 2:
        raise UserError("must be >= 2", field="--context")
    result = run_bench(model, study, tokenizer, prompt_len=prompt_len, decode_context=context, repeats=repeats,
                       threads=threads, max_tokens=max_tokens, loss=not no_loss)  # fmt: skip
    _emit(result, as_json)


@app.command()
def quantize(
    model: Annotated[Path, typer.Argument(help="an ONNX causal LM")],
    recipe: Annotated[str, typer.Option("--recipe", help="built-in recipe name or recipe YAML (ONNX-stage steps)")],
    out: Annotated[Path | None, typer.Option("--out", help="output file (default: MODEL.<recipe>.onnx)")] = None,
    study: Annotated[Path | None, typer.Option("--study", help="corpus for calibrating steps (int8_static)")] = None,
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="tokenizer folder for calibration, or bytes")] = (
        None
    ),
) -> None:
    """Apply a recipe's ONNX-stage steps (quantize.*, optimize.*) to an ONNX causal LM."""
    from edgescale.guard import probe_onnx
    from edgescale.hf.onnx_file import quantize as run_quantize

    probe_onnx(model)  # an untrusted file: opened in a child process first

    path, records = run_quantize(model, recipe, out, study, tokenizer)
    for r in records:
        counts = r["metrics"].get("op_counts", {})
        quantized = {k: v for k, v in counts.items() if "Integer" in k or "NBits" in k or "QLinear" in k}
        err.print(f"  {r['op']}: {quantized or 'done'}", markup=False)
    err.print(f"wrote {path}")


EXIT_INFEASIBLE = 3  # a target no model can reach: an answer, not an error


def _emit(obj: dict, as_json: bool) -> None:
    import json

    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=float))
        return
    from rich.pretty import pprint

    pprint(obj, expand_all=True)


@app.command()
def plan(
    compute: Annotated[float | None, typer.Option("--compute", help="training compute budget, FLOPs")] = None,
    target_loss: Annotated[float | None, typer.Option("--target-loss", help="loss to reach (the law's units)")] = None,
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
    from edgescale.scaling.plan import plan_for_compute, plan_for_loss, plan_smallest_under_compute, resolve_law

    if compute is None and target_loss is None:
        raise UserError(
            "give --compute, --target-loss, or both (the smallest model reaching the target within the compute)",
            field="plan",
        )
    for name, value in (("--compute", compute), ("--target-loss", target_loss), ("--max-tokens", max_tokens)):
        if value is not None and not value > 0:
            raise UserError(f"must be positive, got {value:g}", field=name)
    if inference_tokens < 0:
        raise UserError("must be >= 0", field="--inference-tokens")
    the_law = resolve_law(law)
    cost = {"peak_flops": peak_flops, "mfu": utilisation, "power_w": power_w}
    if compute is not None and target_loss is not None:
        result = plan_smallest_under_compute(the_law, target_loss, compute, **cost)
    elif compute is not None:
        result = plan_for_compute(the_law, compute, inference_tokens=inference_tokens, **cost)
    else:
        result = plan_for_loss(the_law, target_loss, inference_tokens=inference_tokens, max_tokens=max_tokens, **cost)
    _emit(result.to_dict(), as_json)
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
    from edgescale.scaling.fit import fit_chinchilla
    from edgescale.scaling.points import load_points

    pts = load_points(source)
    result = fit_chinchilla(pts.n, pts.d, pts.loss, n_boot=bootstrap, seed=seed, n_convention=pts.n_convention)
    out = {**result.to_dict(), "source": pts.source, "loss_unit": pts.loss_unit, "notes": pts.notes}
    if plot:
        from edgescale.scaling.report import plot_fit

        out["plot"] = str(plot_fit(result, pts, plot))
    _emit(out, as_json)


@app.command("pick")
def pick_cmd(
    run_dir: Annotated[Path | None, typer.Argument(help="a finished run directory (results.json)")] = None,
    target_loss: Annotated[
        float | None, typer.Option("--target-loss", help="validation loss to meet, bits per byte")
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
) -> None:
    """The smallest variant meeting a loss target on a device; or, if none, what to train."""
    from edgescale.report.analysis import clean
    from edgescale.report.pick import Limits, load_run_dir, load_store_runs, pick, summary_lines

    if target_loss is None:
        raise UserError("give the loss to meet in bits per byte", field="--target-loss")
    for name, value in (("--max-latency-ms", max_latency_ms), ("--max-memory-mb", max_memory_mb)):
        if value is not None and not value > 0:
            raise UserError(f"must be positive, got {value:g}", field=name)
    runs = [load_run_dir(p) for p in ([run_dir] if run_dir else []) + list(more or [])]
    if all_runs:
        known = {r.label for r in runs}
        runs += [r for r in load_store_runs(db) if r.label not in known]
    if not runs:
        raise UserError("give a run directory, --run DIR or --all-runs", field="RUN_DIR")
    result = pick(runs, target_loss, device, cost=cost, limits=Limits(max_latency_ms, max_memory_mb),
                  served_tokens=served_tokens)  # fmt: skip
    if as_json:
        _emit(clean(result), True)
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
) -> None:
    """Recipes side by side on the same model: loss change, speed-ups with CIs, size, frontier."""
    from edgescale.report.analysis import clean
    from edgescale.report.compare import compare, table_lines
    from edgescale.report.pick import load_run_dir

    result = compare(load_run_dir(run_dir).results, size, device)
    if as_json:
        _emit(clean(result), True)
        return
    Console(highlight=False, width=None if err.is_terminal else 200).print("\n".join(table_lines(result)), markup=False)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory (results.json)")],
    out: Annotated[Path | None, typer.Option("--out", help="where to write (default: the run directory)")] = None,
) -> None:
    """(Re)write a run's report: report.html (self-contained), summary.md and the PNG figures."""
    from edgescale.report.build import report_run

    files = report_run(run_dir, out)
    err.print(f"wrote {files.html}, {files.summary.name} and {len(files.figures)} figures", soft_wrap=True)


@app.command()
def devices(as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False) -> None:
    """List the device profiles (peak compute, bandwidth, RAM, with sources)."""
    from edgescale.profiles import load_devices

    profiles = load_devices()
    if as_json:
        _emit({k: v.model_dump(mode="json", by_alias=True) for k, v in profiles.items()}, True)
        return
    from rich.table import Table

    table = Table(title="device profiles (* = assumed numbers in the profile)")
    for col in ("id", "name", "class", "fp32 GOP/s", "int8 GOP/s", "peak GB/s", "decode GB/s", "usable GB", "ISA"):
        table.add_column(col)
    for p in profiles.values():
        star = "*" if p.assumed_fields() else ""
        table.add_row(
            p.id + star,
            p.name,
            p.device_class,
            f"{p.peak_gops.fp32.value:g}",
            f"{p.peak_gops.int8.value:g}" if p.peak_gops.int8 else "–",
            f"{p.memory.peak_gbps.value:g}",
            f"{p.decode_gbps():.1f}",
            f"{p.memory.usable_gb.value:g}",
            ",".join(p.cpu.isa),
        )
    Console(highlight=False, width=None if err.is_terminal else 160).print(table)


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
    from edgescale.store import db_path, list_runs, record_run

    path = db_path(db)
    for run_dir in add or []:
        err.print(f"recorded {record_run(path, run_dir)} in {path}")
    listing = list_runs(path)
    if as_json:
        _emit({"db": str(path), "runs": [r.to_dict() for r in listing]}, True)
        return
    if not listing:
        err.print(f"no runs recorded in {path}")
        return
    from rich.table import Table

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
    Console(highlight=False, width=None if err.is_terminal else 200).print(table)


@app.command()
def recipes(
    ops: Annotated[bool, typer.Option("--ops", help="also list every registered op with its fields")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """List the built-in recipes (target, steps, description) and, with --ops, every op's fields."""
    from edgescale.compress.catalog import op_catalog, recipe_catalog

    listing = {"recipes": recipe_catalog(), **({"ops": op_catalog()} if ops else {})}
    if as_json:
        _emit(listing, True)
        return
    from rich.table import Table

    console = Console(highlight=False, width=None if err.is_terminal else 160)
    table = Table(title="recipes")
    for col in ("name", "target", "steps", "description"):
        table.add_column(col)
    for r in listing["recipes"]:
        target = f"{r['target']['runtime']} / {r['target']['execution_provider']}" if r["target"] else "–"
        table.add_row(r["name"], target, r["chain"], r["description"].strip())
    console.print(table)
    for op, d in listing.get("ops", {}).items():
        t = Table(title=f"{op}  ({d['takes']} → {d['gives']})  {d['summary']}", title_justify="left")
        for col in ("field", "type", "default", "description"):
            t.add_column(col)
        for name, f in d["fields"].items():
            t.add_row(name, f["type"], repr(f["default"]), f["description"])
        console.print(t)


DEFAULT_CALIBRATION = Path("runs/host-calibration.yaml")


@app.command()
def predict(
    model: Annotated[Path | None, typer.Argument(help="an ONNX causal LM (omit for the analytic mode)")] = None,
    device: Annotated[str, typer.Option("--device", help="device profile id (edgescale devices), or host")] = "host",
    params: Annotated[float | None, typer.Option("--params", help="analytic mode: parameters of the model")] = None,
    bits: Annotated[
        float | None, typer.Option("--bits", help="analytic mode: stored bits per weight (4.5 = Q4_0)")
    ] = None,
    context: Annotated[int, typer.Option("--context", help="tokens in context when decoding")] = 512,
    kv_bits: Annotated[float, typer.Option("--kv-bits", help="analytic mode: bits per KV-cache element")] = 16,
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", help="prefill prompt length")] = 128,
    calibration: Annotated[
        Path, typer.Option("--calibration", help="host calibration (edgescale calibrate) for --device host")
    ] = DEFAULT_CALIBRATION,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Predict decode (and prefill) latency: of an ONNX model node by node, or analytically
    from a parameter count and bits per weight."""
    for name, value in (("--context", context), ("--kv-bits", kv_bits), ("--prompt-tokens", prompt_tokens)):
        if not value > 0:
            raise UserError(f"must be positive, got {value:g}", field=name)
    if model is not None:
        _emit(_predict_graph(model, device, context, prompt_tokens, calibration), as_json)
        return
    from edgescale.bench.predict import predict as run_predict
    from edgescale.profiles import get_device

    if params is None or bits is None:
        raise UserError("give MODEL.onnx, or --params and --bits for the analytic mode", field="predict")
    for name, value in (("--params", params), ("--bits", bits)):
        if not value > 0:
            raise UserError(f"must be positive, got {value:g}", field=name)
    if device == "host":
        raise UserError("the analytic mode needs a device profile; allowed: edgescale devices", field="--device")
    _emit(run_predict(get_device(device), params, bits, context, kv_bits, prompt_tokens).to_dict(), as_json)


def _predict_graph(model: Path, device: str, context: int, prompt_tokens: int, calibration: Path) -> dict:
    from edgescale.bench.ort_model import OrtCausalLM
    from edgescale.guard import probe_onnx

    probe_onnx(model)  # a native crash or hang in a child, not here
    OrtCausalLM(model)  # one message naming the file when it is not a causal LM
    if device == "host":
        from edgescale.bench.calibrate import load_calibration
        from edgescale.bench.host import predict_host

        if not calibration.is_file():
            raise UserError("no host calibration here; run edgescale calibrate first", file=calibration)
        return predict_host(model, load_calibration(calibration), context)
    from edgescale.bench.graph_predict import predict_on_device
    from edgescale.profiles import get_device

    return {"device": device, **predict_on_device(model, get_device(device), context, prompt_tokens)}


@app.command()
def calibrate(
    out: Annotated[
        Path, typer.Option("--out", help="where to write the host calibration (YAML)")
    ] = DEFAULT_CALIBRATION,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads")] = 2,
    repeats: Annotated[int, typer.Option(help="interleaved timing rounds")] = 60,
    quick: Annotated[bool, typer.Option("--quick", help="fewer probes and reference models (about a minute)")] = False,
) -> None:
    """Measure this machine: kernel tables (GEMV per weight class from cache to DRAM, other ops),
    matmul throughput, and efficiency factors fitted on a reference ladder."""
    import yaml

    from edgescale.atomic import write_bytes
    from edgescale.bench.host import calibrate_host

    if threads < 1 or repeats < 3:
        raise UserError("--threads must be >= 1 and --repeats >= 3", field="calibrate")
    from edgescale.bench.host import host_profile

    cal, _, _ = calibrate_host(threads, quick, repeats, progress=lambda m: err.print(f"  {m}"))
    write_bytes(out, yaml.safe_dump(cal.to_dict(), sort_keys=False).encode())
    profile = out.with_suffix(".device.yaml")  # a device profile: edgescale predict --device PATH
    write_bytes(profile, yaml.safe_dump(host_profile(cal, threads), sort_keys=False, allow_unicode=True).encode())
    for name in ("tables", "roofline"):
        f = cal.fits[name]
        err.print(f"  {name}: fitted on {f['n_points']} reference models, residual SD {f['residual_rel_sd']:.1%}")
    err.print(f"wrote {out} and the host's device profile {profile}")


def main() -> None:
    try:
        app()
    except UserError as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
