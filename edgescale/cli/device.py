"""Device commands: list the profiles, predict latency, calibrate this host."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from edgescale.cli.common import app, check_range, emit, err, renamed_flags, table_console
from edgescale.errors import UserError


@app.command()
def devices(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    anchors: Annotated[
        bool, typer.Option("--anchors", help="every published anchor: measured, predicted, ratio, source")
    ] = False,
) -> None:
    """List the device profiles (peak compute, bandwidth, RAM, with sources)."""
    from edgescale.bench import devices as fitted  # one late import: the CLI starts without the predictor

    profiles = fitted.load_devices()
    if anchors:
        _print_anchors(fitted.anchor_table(profiles), as_json)
        return
    if as_json:
        emit({k: v.model_dump(mode="json", by_alias=True) for k, v in profiles.items()}, True)
        return
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
    table_console(160).print(table)


def _print_anchors(rows: list[dict], as_json: bool) -> None:
    if as_json:
        emit(rows, True)
        return
    title = "anchors: calibration fits the efficiencies, validation only checks (ratio = predicted / measured)"
    table = Table(title=title)
    for col in ("device", "class", "split", "workload", "model", "measured tok/s", "predicted", "ratio", "source"):
        table.add_column(col, overflow="fold")
    for r in rows:
        cells = (r["device"], r["class"], r["split"], r["workload"], r["model"])
        nums = (f"{r['measured_tokens_per_s']:.3g}", f"{r['predicted_tokens_per_s']:.3g}", f"{r['ratio']:.2f}")
        table.add_row(*cells, *nums, r["source"])
    table_console(200).print(table)


DEFAULT_CALIBRATION = Path("runs/host-calibration.yaml")
# Interleaved rounds of calibrate. --quick takes 25: at 60 its 64 probes and 8 reference models took
# 5.8 min on this project's loaded 2-core host (135 s of CPU; 25 rounds: 62 s), for a 3-minute budget on a board.
FULL_REPEATS, QUICK_REPEATS = 60, 25
MAX_TOKENS = 1 << 20  # a context or prompt longer than any edge model's, before a model's own maximum applies


@app.command(cls=renamed_flags({"--context": "--decode-context", "--prompt-tokens": "--prompt-len"}))
def predict(
    model: Annotated[Path | None, typer.Argument(help="an ONNX causal LM (omit for the analytic mode)")] = None,
    device: Annotated[str, typer.Option("--device", help="device profile id (edgescale devices), or host")] = "host",
    params: Annotated[float | None, typer.Option("--params", help="analytic mode: parameters of the model")] = None,
    bits: Annotated[
        float | None, typer.Option("--bits", help="analytic mode: stored bits per weight (4.5 = Q4_0)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="analytic mode: a Hugging Face config.json (the real layout)")
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="analytic mode: a shipped published config, e.g. llama-3.2-1b")
    ] = None,
    embed_bits: Annotated[
        float | None, typer.Option("--embed-bits", help="with --config/--arch: embedding table bits (default --bits)")
    ] = None,
    head_bits: Annotated[
        float | None, typer.Option("--head-bits", help="with --config/--arch: LM head bits (default --bits)")
    ] = None,
    decode_context: Annotated[
        int | None,
        typer.Option("--decode-context", help="tokens in context when decoding (default 512, or the model's maximum)"),
    ] = None,
    kv_bits: Annotated[float, typer.Option("--kv-bits", help="analytic mode: bits per KV-cache element")] = 16,
    prompt_len: Annotated[
        int | None,
        typer.Option("--prompt-len", help="prefill prompt length (tokens; default 128, or the model's maximum)"),
    ] = None,
    calibration: Annotated[
        Path, typer.Option("--calibration", help="host calibration (edgescale calibrate) for --device host")
    ] = DEFAULT_CALIBRATION,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Predict decode (and prefill) latency: of an ONNX model node by node, or analytically
    from a parameter count and bits per weight."""
    for name, value in (("--decode-context", decode_context), ("--prompt-len", prompt_len)):
        check_range(name, value, 1, MAX_TOKENS, " tokens")
    check_range("--kv-bits", kv_bits, 0, 64, above=True)
    if config is None and arch is None and (embed_bits, head_bits) != (None, None):
        raise UserError("--embed-bits and --head-bits need a real layout: --config or --arch", field="predict")
    if config is not None or arch is not None:
        layout = (model, config, arch, params)
        table_bits = (bits, embed_bits, head_bits)
        emit(_predict_layout(device, layout, table_bits, decode_context or 512, kv_bits, prompt_len or 128), as_json)
        return
    if model is not None:
        emit(_predict_graph(model, device, decode_context, prompt_len, calibration), as_json)
        return
    from edgescale.bench.devices import get_device
    from edgescale.bench.predict import MAX_PARAMS
    from edgescale.bench.predict import predict as run_predict

    if params is None or bits is None:
        raise UserError("give MODEL.onnx, or --params and --bits for the analytic mode", field="predict")
    for name, value, high in (("--params", params, MAX_PARAMS), ("--bits", bits, 64)):
        check_range(name, value, 0, high, above=True)
    if device == "host":
        raise UserError("the analytic mode needs a device profile; allowed: edgescale devices", field="--device")
    result = run_predict(get_device(device), params, bits, decode_context or 512, kv_bits, prompt_len or 128)
    emit(result.to_dict(), as_json)


def _predict_layout(
    device: str, layout: tuple, table_bits: tuple, context: int, kv_bits: float, prompt_len: int
) -> dict:
    """The analytic mode on a real layout: --config FILE or --arch NAME, bits per tensor class."""
    from edgescale.bench.layout_predict import predict_layout

    model, config, arch, params = layout
    named = {"MODEL.onnx": model, "--config": config, "--arch": arch, "--params": params}
    given = [flag for flag, value in named.items() if value is not None]
    if len(given) > 1:
        raise UserError(f"give one of MODEL.onnx, --config, --arch, --params, not {' + '.join(given)}", field="predict")
    bits, embed_bits, head_bits = table_bits
    if bits is None:
        raise UserError("--config and --arch need --bits (stored bits per weight of the matrices)", field="--bits")
    for name, value in (("--bits", bits), ("--embed-bits", embed_bits), ("--head-bits", head_bits)):
        check_range(name, value, 0, 64, above=True)
    if device == "host":
        raise UserError("the analytic mode needs a device profile; allowed: edgescale devices", field="--device")
    return predict_layout(device, config, arch, bits, embed_bits, head_bits, context, kv_bits, prompt_len).to_dict()


def _predict_graph(
    model: Path, device: str, decode_context: int | None, prompt_len: int | None, calibration: Path
) -> dict:
    from edgescale.bench.lm_file import check_lm_file, within_context

    lm = check_lm_file(model)  # in a child first; one message naming the file when it is not a causal LM
    decode_context = within_context(lm, "--decode-context", decode_context, 512)
    prompt_len = within_context(lm, "--prompt-len", prompt_len, 128)
    if device == "host":
        from edgescale.bench.calibrate import load_calibration
        from edgescale.bench.host import predict_host

        if not calibration.is_file():
            raise UserError("no host calibration here; run edgescale calibrate first", file=calibration)
        return predict_host(model, load_calibration(calibration), decode_context)
    from edgescale.bench.devices import get_device
    from edgescale.bench.graph_predict import predict_on_device

    return {"device": device, **predict_on_device(model, get_device(device), decode_context, prompt_len)}


@app.command()
def calibrate(
    out: Annotated[
        Path, typer.Option("--out", help="where to write the host calibration (YAML)")
    ] = DEFAULT_CALIBRATION,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads")] = 2,
    repeats: Annotated[
        int | None,
        typer.Option(help=f"interleaved timing rounds (default {FULL_REPEATS}; {QUICK_REPEATS} with --quick)"),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="fewer probes, reference models and rounds (~1 CPU-minute on 2 x86 cores)")
    ] = False,
    device_name: Annotated[
        str | None, typer.Option("--device-name", help="id of the device profile written (default host)")
    ] = None,
    profile_out: Annotated[
        Path | None, typer.Option("--profile-out", help="where to write it (default NAME.yaml beside --out)")
    ] = None,
    device_class: Annotated[
        str | None, typer.Option("--device-class", help="sbc | phone | laptop | desktop | host (default: sbc on Arm)")
    ] = None,
) -> None:
    """Measure this machine: kernel tables (GEMV per weight class from cache to DRAM, other ops),
    matmul throughput, and efficiency factors fitted on a reference ladder; and write it as a
    device profile (--device PATH anywhere a device name is)."""
    from edgescale.atomic import write_bytes
    from edgescale.bench.host import calibrate_host
    from edgescale.bench.own_profile import own_profile, profile_target, write_profile

    repeats = repeats if repeats is not None else (QUICK_REPEATS if quick else FULL_REPEATS)
    if threads < 1 or repeats < 3:
        raise UserError("--threads must be >= 1 and --repeats >= 3", field="calibrate")
    _check_writable(out)  # before minutes of measuring, not after
    name, profile = profile_target(device_name, profile_out, out, device_class)
    if profile_out is not None:
        _check_writable(profile, "--profile-out")
    cal, _, _ = calibrate_host(threads, quick, repeats, progress=lambda m: err.print(f"  {m}"))
    write_bytes(out, yaml.safe_dump(cal.to_dict(), sort_keys=False).encode())
    write_profile(profile, own_profile(cal, name, device_class))
    for fit in ("tables", "roofline"):
        f = cal.fits[fit]
        err.print(f"  {fit}: fitted on {f['n_points']} reference models, residual SD {f['residual_rel_sd']:.1%}")
    err.print(f"wrote {out} and the device profile {profile} (edgescale predict --device {profile})")


def _check_writable(out: Path, flag: str = "--out") -> None:
    """Refuse an --out whose folder is missing or read-only, or that is a folder itself."""
    folder = out.parent
    if out.is_dir():
        raise UserError("is a folder; give a file path such as host-calibration.yaml", file=out, field=flag)
    if out == DEFAULT_CALIBRATION and not folder.exists():
        return  # the default's folder (runs/) is made on writing
    if not folder.is_dir():
        raise UserError(f"folder {folder} does not exist; create it or give another path", file=out, field=flag)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"folder {folder} is not writable; give another path", file=out, field=flag)
