"""Commands on a user's ONNX causal LM: measure it, apply a recipe's ONNX-stage steps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from edgescale.cli.common import app, check_range, emit, err, renamed_flags
from edgescale.config_models import MAX_EVAL_TOKENS

MAX_LENGTH = 1 << 20  # a prompt or context longer than any model's, before the model's own maximum applies
MAX_REPEATS = 10_000  # timed repeats: at 30 (the default) the median's CI is already tight; 1e11 hung for hours
# onnxruntime intra-op threads: past a few per core they only contend (100,000 hung creating them)
MAX_THREADS = max(256, 8 * (os.cpu_count() or 1))


@app.command(cls=renamed_flags({"--context": "--decode-context"}))
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
    prompt_len: Annotated[
        int | None,
        typer.Option("--prompt-len", help="prefill prompt length (tokens; default 64, or the model's maximum context)"),
    ] = None,
    decode_context: Annotated[
        int | None,
        typer.Option(
            "--decode-context",
            help="context at which one decode step is timed (default 128, or the model's maximum context)",
        ),
    ] = None,
    repeats: Annotated[int, typer.Option(help="timed repeats")] = 30,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads")] = 2,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="scored tokens (default: the study's)")] = None,
    no_loss: Annotated[bool, typer.Option("--no-loss", help="latency only")] = False,
    device_name: Annotated[
        str | None,
        typer.Option("--device-name", help="add the timings as calibration anchors to this device's profile"),
    ] = None,
    profile: Annotated[
        Path | None, typer.Option("--profile", help="that profile's file (default runs/NAME.yaml)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Measure a user's ONNX causal LM: prefill and decode latency here, and held-out loss in bits per byte.
    With --device-name or --profile, the timings become calibration anchors of that device profile."""
    from edgescale.bench.lm_file import check_lm_file, within_context
    from edgescale.hf.onnx_file import bench as run_bench

    _check_bench_numbers(prompt_len, decode_context, repeats, threads, max_tokens)
    target = None
    if device_name is not None or profile is not None:
        from edgescale.bench.own_profile import open_profile

        target = open_profile(device_name, profile)  # a missing or wrong profile: refused before measuring
    lm = check_lm_file(model)  # an untrusted file: opened in a child process first
    prompt_len = within_context(lm, "--prompt-len", prompt_len, 64)
    decode_context = within_context(lm, "--decode-context", decode_context, 128)
    result = run_bench(model, study, tokenizer, prompt_len=prompt_len, decode_context=decode_context, repeats=repeats,
                       threads=threads, max_tokens=max_tokens, loss=not no_loss,
                       max_context=lm.max_context)  # fmt: skip
    if target is not None:
        from edgescale.bench.own_profile import add_anchors, bench_anchors

        result["profile"] = add_anchors(target, bench_anchors(model, result))
    emit(result, as_json)


def _check_bench_numbers(prompt_len, decode_context, repeats, threads, max_tokens) -> None:
    """Every number of ``bench`` in its range, one line naming the flag before any model is opened (the
    model's own maximum context bounds the lengths further, in ``within_context``)."""
    check_range("--prompt-len", prompt_len, 1, MAX_LENGTH, " tokens")
    check_range("--decode-context", decode_context, 2, MAX_LENGTH, " tokens")
    check_range("--repeats", repeats, 3, MAX_REPEATS, " timed repeats")
    check_range("--threads", threads, 1, MAX_THREADS, " threads")
    check_range("--max-tokens", max_tokens, 1, MAX_EVAL_TOKENS, " scored tokens")


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
    from edgescale.bench.lm_file import check_lm_file
    from edgescale.hf.onnx_file import quantize as run_quantize

    check_lm_file(model)  # an untrusted file: opened in a child process first; the causal-LM signature bench needs

    path, records = run_quantize(model, recipe, out, study, tokenizer)
    for r in records:
        counts = r["metrics"].get("op_counts", {})
        quantized = {k: v for k, v in counts.items() if "Integer" in k or "NBits" in k or "QLinear" in k}
        err.print(f"  {r['op']}: {quantized or 'done'}", markup=False)
    err.print(f"wrote {path}")
