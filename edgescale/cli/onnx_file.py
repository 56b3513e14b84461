"""Commands on a user's ONNX causal LM: measure it, apply a recipe's ONNX-stage steps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgescale.cli.common import app, emit, err, renamed_flags
from edgescale.errors import UserError


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
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Measure a user's ONNX causal LM: prefill and decode latency here, and held-out loss in bits per byte."""
    from edgescale.bench.lm_file import check_lm_file, within_context
    from edgescale.hf.onnx_file import bench as run_bench

    for name, value in (("--prompt-len", 1 if prompt_len is None else prompt_len), ("--repeats", repeats - 2),
                        ("--threads", threads)):  # fmt: skip
        if not value > 0:
            raise UserError(f"must be positive (repeats >= 3), got {value:g}", field=name)
    if decode_context is not None and decode_context < 2:
        raise UserError("must be >= 2", field="--decode-context")
    lm = check_lm_file(model)  # an untrusted file: opened in a child process first
    prompt_len = within_context(lm, "--prompt-len", prompt_len, 64)
    decode_context = within_context(lm, "--decode-context", decode_context, 128)
    result = run_bench(model, study, tokenizer, prompt_len=prompt_len, decode_context=decode_context, repeats=repeats,
                       threads=threads, max_tokens=max_tokens, loss=not no_loss,
                       max_context=lm.max_context)  # fmt: skip
    emit(result, as_json)


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
