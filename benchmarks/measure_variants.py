"""Host latency of ONNX causal LMs, interleaved, as a table of p50/p90 and speed-ups with CIs.

    .venv/bin/python benchmarks/measure_variants.py                  # fp32 vs int8 of a 4x96 GPT
    .venv/bin/python benchmarks/measure_variants.py a.onnx b.onnx    # your own files (first = baseline)

Speed-ups are ratios measured in the same run (first variant / each variant, p50),
with a paired bootstrap 95% interval; "within noise" when it includes 1.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgescale.bench.measure import MeasureSpec, measure_variants


def _default_variants(tmp: Path, n_layer: int, n_embd: int) -> dict[str, Path]:
    from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
    from edgescale.compress.registry import StepContext
    from edgescale.export.onnx import export_onnx
    from edgescale.models.gpt import GPT, GPTConfig

    fp32 = export_onnx(GPT(GPTConfig(n_layer, 4, n_embd, block_size=256), seed=0).eval(), tmp / "fp32.onnx")
    int8 = int8_dynamic(fp32, Int8DynamicConfig(), StepContext(tmp, log=lambda m: None))
    return {"fp32": fp32, "int8_dynamic": int8}


def _table(report, title: str) -> Table:
    t = Table(title=title)
    for col in ("variant", "prefill p50 ms", "p90", "decode p50 ms", "p90", "tok/s", "prefill ×", "decode ×"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for name, v in report.variants.items():
        cells = []
        for phase in ("prefill", "decode"):
            r = report.ratios.get(name, {}).get(phase)
            flag = "" if r is None else " ~" if r.within_noise else " slower" if r.slower else ""
            cells.append("baseline" if r is None else f"{r.speedup:.2f} [{r.low:.2f}, {r.high:.2f}]{flag}")
        t.add_row(
            name,
            f"{v.prefill_ms_p50:.3f}",
            f"{v.prefill_ms_p90:.3f}",
            f"{v.decode_ms_p50:.3f}",
            f"{v.decode_ms_p90:.3f}",
            f"{v.decode_tokens_per_s:,.0f}",
            *cells,
        )
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", nargs="*", type=Path, help="ONNX causal LMs; the first is the baseline")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--decode-context", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4, help="shape of the generated model when no files are given")
    ap.add_argument("--n-embd", type=int, default=96)
    args = ap.parse_args()
    spec = MeasureSpec(
        prompt_len=args.prompt_len, decode_context=args.decode_context, repeats=args.repeats, threads=args.threads
    )
    with tempfile.TemporaryDirectory() as d:
        paths = {p.stem: p for p in args.onnx} or _default_variants(Path(d), args.n_layer, args.n_embd)
        report = measure_variants(paths, spec, baseline=next(iter(paths)))
    m = report.machine
    title = (
        f"{m['cpu_model']} · {spec.threads} threads · prefill {spec.prompt_len} tok · decode at context "
        f"{spec.decode_context} · {spec.repeats} interleaved repeats · load {m['load_avg_start'][0]:.2f}"
    )
    Console(width=160).print(_table(report, title))
    print("× = baseline p50 / variant p50 with a paired bootstrap 95% CI; ~ = within noise")


if __name__ == "__main__":
    main()
