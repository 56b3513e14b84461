"""The ISA-dependent quantization options, timed interleaved on this host: is ``auto`` ever slower?

    .venv/bin/python benchmarks/isa_defaults.py                          # 6x384 random GPT, both groups
    .venv/bin/python benchmarks/isa_defaults.py --n-layer 12 --n-embd 768 --group int4

Two interleaved runs (one per group), each against today's default of its step:

- int8_dynamic: weight_type qint8 (U8S8), per_channel off, reduce_range off (the baseline), against
  per_channel on, reduce_range on, and quint8 weights (U8U8);
- int4_weight_only: accuracy_level 4, block 32 (the baseline), against accuracy_level 0/1/4 x block 32/64/128.

Speed-ups are baseline p50 / variant p50 with a paired bootstrap 95% interval ("~" within noise).
The host's ISA and what ``auto`` resolves to on it are printed first. Only the host's ISA can
be measured: the rules for other ISAs (edgescale.compress.isa) come from onnxruntime's docs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from edgescale.bench.measure import MeasureSpec, measure_variants

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure_variants import _table  # noqa: E402  (the same latency table, one copy)

INT8 = {  # variant -> Int8DynamicConfig fields; the first is today's default
    "int8 default (s8, per-tensor)": {},
    "int8 per_channel": {"per_channel": True},
    "int8 reduce_range": {"reduce_range": True},
    "int8 u8 weights (U8U8)": {"weight_type": "quint8"},
}
INT4 = {  # variant -> Int4WeightOnlyConfig fields; the first is today's default
    f"int4 acc{acc} b{block}": {"accuracy_level": acc, "block_size": block}
    for acc, block in [(4, 32), (4, 64), (4, 128), (0, 32), (0, 64), (0, 128), (1, 32)]
}


def _fp32(tmp: Path, n_layer: int, n_embd: int) -> Path:
    from edgescale.export.onnx import export_onnx
    from edgescale.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(n_layer, max(1, n_embd // 64), n_embd, block_size=256), seed=0).eval()
    return export_onnx(model, tmp / "fp32.onnx")


def _variants(fp32: Path, tmp: Path, group: str) -> dict[str, Path]:
    from edgescale.compress.int4 import Int4WeightOnlyConfig, int4_weight_only
    from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
    from edgescale.compress.registry import StepContext

    step, cfg_type, table = (
        (int8_dynamic, Int8DynamicConfig, INT8) if group == "int8" else (int4_weight_only, Int4WeightOnlyConfig, INT4)
    )
    out = {}
    for i, (name, fields) in enumerate(table.items()):
        work = tmp / f"{group}-{i}"
        work.mkdir()
        out[name] = step(fp32, cfg_type(**fields), StepContext(work, log=lambda m: None))
    return out


def main() -> None:
    from edgescale.compress.feasibility import host_target
    from edgescale.compress.isa import resolve_int4, resolve_int8

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", type=Path, help="an exported fp32 causal LM (default: a fresh random GPT)")
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-embd", type=int, default=384)
    ap.add_argument("--group", choices=["int8", "int4", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    host = host_target()
    print(f"host ISA: {' '.join(sorted(host.isa))}")
    print(f"auto on this host: int8_dynamic {resolve_int8(host.isa, 'dynamic').as_metrics()}")
    print(f"auto on this host: int4 {resolve_int4(host.isa).as_metrics()}")
    spec = MeasureSpec(prompt_len=64, decode_context=128, repeats=args.repeats, threads=args.threads)
    groups = ["int8", "int4"] if args.group == "both" else [args.group]
    with tempfile.TemporaryDirectory(prefix="edgescale-isa-") as d:
        tmp = Path(d)
        fp32 = args.fp32 or _fp32(tmp, args.n_layer, args.n_embd)
        for group in groups:
            paths = _variants(fp32, tmp, group)
            report = measure_variants(paths, spec, baseline=next(iter(paths)))
            m = report.machine
            title = (
                f"{fp32} · {m['cpu_model']} · {spec.threads} threads · prefill {spec.prompt_len} · decode at "
                f"{spec.decode_context} · {spec.repeats} interleaved repeats · load {m['load_avg_start'][0]:.2f}"
            )
            Console(width=170).print(_table(report, title))
    print("× = today's default p50 / variant p50 (> 1: faster than today), paired bootstrap 95% CI; ~ = within noise")


if __name__ == "__main__":
    main()
