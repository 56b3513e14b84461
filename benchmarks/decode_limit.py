"""Decode at the memory-bandwidth limit: where a decode step's time goes, before and after the fusions.

    .venv/bin/python benchmarks/decode_limit.py [--shapes 6x384,12x768,24x1024,smollm2] [--repeats 20]
        [--threads 2] [--json out.json] [--no-peer] [--quick] [--calibration CALIBRATION.json]

Shapes (random weights: time and bytes only, never loss):

- ``6x384``, ``12x768``, ``24x1024``: edgescale's GPT (heads = width/64, block_size 256, vocab 256),
  from cache-resident to DRAM-bound. Each recipe (fp32, int8_dynamic, int8_static, int4_weight_only:
  the shipped recipes' quantize steps) on two graphs of the same weights: ``traced`` (before: torch's
  dynamo export, ``export.onnx`` graph=traced, ~40 nodes per layer) and ``fused`` (after:
  ``edgescale.export.fused``, SkipLayerNormalization + GroupQueryAttention + BiasGelu, ~9 per layer).
  The peer: onnxruntime-genai's model builder (``run_builder``, fp32 and int4) on a random Llama of the
  same layers, width and heads with FFN 8·width/3 (rounded to 64: the same FFN bytes as the GPT's 4·width
  two-matrix MLP in a three-matrix SwiGLU). int8_static calibrates on 16 random windows of 64 tokens.
- ``smollm2``: SmolLM2-135M's published shape (huggingface.co/HuggingFaceTB/SmolLM2-135M config.json,
  via ``benchmarks/published_configs.py``: 30 layers, hidden 576, 9 heads, 3 KV heads, FFN 1536, vocab
  49152). Before: optimum's export (``export.onnx`` for Hugging Face models) + the int8_dynamic and
  int4_weight_only recipes; after: ``export.genai`` fp32 and int4; peer: the builder alone
  (``benchmarks/builder_peer.py``'s functions). Needs the builder's environment (``python3 dev.py setup``).

All variants of one shape are timed in ONE interleaved ``measure_variants`` run (baseline: the shape's
traced / optimum fp32; an A/A copy of it sets the noise floor), which also profiles one prefill and one
decode step of each variant and probes the memory bandwidth. Columns: decode and prefill p50, speed-ups
vs the baseline with paired bootstrap 95% intervals, decode efficiency = ((weight + KV bytes at the decode
context) / bandwidth) / decode p50, non-weight time per layer = (decode p50 - bytes / bandwidth) / layers,
nodes in the file and in onnxruntime's optimized graph, the KV binding (``shared``: past and present one
preallocated buffer written in place; ``concat``: a new present each step) and the top three op types by
share of the profiled decode step's kernel time. Bandwidth: the worker's streaming probe (a 512 MB GEMV: DRAM), or with
``--calibration`` an ``edgescale calibrate`` file's weight-streaming rate at the working set nearest the
step's bytes. Ratios move with machine load: run it on a quiet machine (the header says whether it was).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from published_configs import SMOLLM2_135M  # noqa: E402  (a sibling module)

RECIPES = ("int8_dynamic", "int8_static", "int4_weight_only")
HEAD = 64  # head size of every shape here
# op types shortened in the "top ops" column
SHORT = {"GroupQueryAttention": "GQA", "SkipLayerNormalization": "SkipLN",
         "SkipSimplifiedLayerNormalization": "SkipSLN", "SimplifiedLayerNormalization": "SLN",
         "DynamicQuantizeMatMul": "DynQMatMul", "DequantizeLinear": "DQ", "QuantizeLinear": "Q",
         "MultiHeadAttention": "MHA", "RotaryEmbedding": "Rotary"}  # fmt: skip
# rotary cos/sin tables (inputs of these ops) are read at one position per decode step, not in full
ROTARY_INPUTS = {"GroupQueryAttention": (7, 8), "RotaryEmbedding": (2, 3)}
STATIC_CALIBRATION = {"calibration_windows": 16, "calibration_window_tokens": 64}  # a benchmark, not a study


@dataclass(frozen=True)
class Shape:
    name: str
    n_layer: int
    width: int
    kind: str  # "gpt": edgescale's GPT; "llama": a Hugging Face checkpoint (optimum + builder)
    kv_heads: int
    hf: dict = field(default_factory=dict, repr=False)  # the Llama config (kind llama)


def gpt(n_layer: int, width: int) -> Shape:
    return Shape(f"{n_layer}x{width}", n_layer, width, "gpt", width // HEAD)


def llama(name: str, config: dict) -> Shape:
    return Shape(name, config["num_hidden_layers"], config["hidden_size"], "llama", config["num_key_value_heads"],
                 config)  # fmt: skip


def peer_config(s: Shape) -> dict:
    """A Llama of the GPT's layers, width and heads; FFN 8·width/3 (rounded to 64) holds the GPT's FFN bytes."""
    heads = s.width // HEAD
    ffn = round(8 * s.width / 3 / 64) * 64
    return SMOLLM2_135M | {"hidden_size": s.width, "num_hidden_layers": s.n_layer, "num_attention_heads": heads,
                           "num_key_value_heads": heads, "intermediate_size": ffn, "vocab_size": 256,
                           "max_position_embeddings": 256}  # fmt: skip


TINY_LLAMA = SMOLLM2_135M | {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                             "num_key_value_heads": 1, "intermediate_size": 256, "vocab_size": 256,
                             "max_position_embeddings": 256}  # fmt: skip
SHAPES = {s.name: s for s in (gpt(6, 384), gpt(12, 768), gpt(24, 1024), llama("smollm2", SMOLLM2_135M))}
QUICK = {s.name: s for s in (gpt(2, 64), llama("smollm2-tiny", TINY_LLAMA))}


# ---------------------------------------------------------------- the graphs


def quantize(src: Path, recipe: str, work: Path, seed: int, log) -> Path:
    """The shipped recipe's quantize step on ``src`` (int8_static calibrates on random token windows)."""
    import numpy as np

    from edgescale.compress.recipe import load_recipe
    from edgescale.compress.registry import StepContext

    step = next(s for s in load_recipe(recipe).steps if not s.inserted)
    cfg, windows = step.config, None
    if recipe == "int8_static":
        cfg = cfg.model_copy(update=STATIC_CALIBRATION)
        windows = np.random.default_rng(seed).integers(0, 256, size=(16, 64))
    work.mkdir(parents=True)
    return step.definition.fn(src, cfg, StepContext(work, seed=seed, calibration=windows, log=log))


def gpt_variants(s: Shape, tmp: Path, peer: bool, log) -> dict[str, Path]:
    """traced and fused fp32 of one random GPT, each with every recipe; the builder's peer of its shape."""
    from edgescale.export.fused import export_fused
    from edgescale.export.onnx import export_onnx
    from edgescale.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(s.n_layer, s.width // HEAD, s.width, vocab_size=256, block_size=256), seed=0).eval()
    paths: dict[str, Path] = {}
    for graph, export in (("traced", export_onnx), ("fused", export_fused)):
        t0 = time.perf_counter()
        (tmp / graph).mkdir()
        paths[f"{graph} fp32"] = export(model, tmp / graph / "model.onnx")
        log(f"{s.name}: {graph} export {time.perf_counter() - t0:.0f}s")
        for recipe in RECIPES:
            paths[f"{graph} {recipe}"] = quantize(paths[f"{graph} fp32"], recipe, tmp / f"{graph}-{recipe}", 0, log)
    del model
    if peer:
        paths |= builder_peer_graphs(peer_config(s), tmp, log)
    return paths


def builder_peer_graphs(config: dict, tmp: Path, log) -> dict[str, Path]:
    from builder_peer import build_checkpoint

    from edgescale.export.genai_builder import GenaiExportConfig, run_builder

    folder = build_checkpoint(tmp / "peer-hf", config)
    out = {}
    for precision in ("fp32", "int4"):
        cfg = GenaiExportConfig(precision=precision, block_size=32, accuracy_level=4)
        out[f"peer {precision}"] = run_builder(folder, tmp / f"peer-{precision}", cfg, log)
    return out


def llama_variants(s: Shape, tmp: Path, peer: bool, log) -> dict[str, Path]:
    """builder_peer's graphs of one checkpoint: optimum + recipes (before), export.genai (after), the builder."""
    from builder_peer import build_checkpoint, export_builder, export_edgescale

    folder = build_checkpoint(tmp / "hf", s.hf)
    es, _ = export_edgescale(folder, tmp, log)
    genai, _ = export_builder(folder, tmp, log)
    names = {"es fp32": "optimum fp32", "es int8_dynamic": "optimum int8_dynamic",
             "es int4_weight_only": "optimum int4_weight_only", "genai fp32": "genai fp32", "genai int4": "genai int4",
             "builder fp32": "peer fp32", "builder int4": "peer int4"}  # fmt: skip
    return {names[k]: p for k, p in (es | genai).items() if peer or not k.startswith("builder")}


def pairs(s: Shape) -> dict[str, tuple[str, str | None]]:
    """recipe -> (before, after) variant names, for the summary."""
    if s.kind == "gpt":
        return {r: (f"traced {r}", f"fused {r}") for r in ("fp32", *RECIPES)}
    return {"fp32": ("optimum fp32", "genai fp32"), "int8_dynamic": ("optimum int8_dynamic", None),
            "int4_weight_only": ("optimum int4_weight_only", "genai int4")}  # fmt: skip


# ---------------------------------------------------------------- measuring and the rows


def file_nodes(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def step_weight_bytes(path: Path) -> float:
    """``onnx_weight_bytes`` less all but one row of each rotary cos/sin table (the builder's graphs
    carry them as initializers of max_position_embeddings rows; a decode step reads one)."""
    import onnx

    from edgescale.bench.bytes import onnx_weight_bytes, tensor_bytes

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name: t for t in graph.initializer}
    tables = {n.input[i] for n in graph.node for i in ROTARY_INPUTS.get(n.op_type, ()) if i < len(n.input)}
    rows_read = sum(tensor_bytes(inits[t]) * (1 - 1 / inits[t].dims[0]) for t in tables & inits.keys())
    return onnx_weight_bytes(path) - rows_read


def _profile(report, name: str):
    """A variant's VariantProfile (the report holds the object or its dict, by edgescale version)."""
    from edgescale.bench.profile import VariantProfile

    raw = report.profiles.get(name)
    return VariantProfile.from_dict(raw) if isinstance(raw, dict) else raw


def bandwidth_for(report, calibration, working_set: float):
    """The calibration's streaming rate at ``working_set`` bytes, else the worker's streaming probe."""
    from edgescale.bench.profile import Bandwidth, calibrated_bandwidth

    if calibration:
        return calibrated_bandwidth(calibration, working_set)
    probe = report.bandwidth_probe
    return Bandwidth(**probe) if isinstance(probe, dict) else probe


def rows(s: Shape, paths: dict[str, Path], report, calibration, context: int) -> dict:
    """Per variant, the table's cells as numbers (also the JSON)."""
    from edgescale.bench.profile import decode_limit

    kv_bytes = 2 * s.n_layer * s.kv_heads * HEAD * context * 4  # fp32 K and V at the decode context
    out = {}
    for name, path in paths.items():
        v, prof, r = report.variants[name], _profile(report, name), report.ratios.get(name, {})
        weight = step_weight_bytes(path)
        bw = bandwidth_for(report, calibration, weight + kv_bytes)
        lim = decode_limit(weight, kv_bytes, bw, v.decode_ms_p50, s.n_layer) if bw else None
        out[name] = {
            "decode_ms_p50": v.decode_ms_p50,
            "prefill_ms_p50": v.prefill_ms_p50,
            "weight_bytes": weight,
            "kv_bytes": kv_bytes,
            "efficiency": lim.efficiency if lim else None,
            "non_weight_us_per_layer": lim.non_weight_us_per_layer if lim else None,
            "bandwidth_gbps": bw.gbps if bw else None,
            "speedup": {p: [r[p].speedup, r[p].low, r[p].high, r[p].within_noise] for p in r},
            "file_nodes": file_nodes(path),
            "optimized_nodes": prof.graph_nodes if prof else None,
            "kv_buffer": getattr(v, "kv_buffer", "") or None,
            "top_ops": prof.decode.top(3) if prof else [],
        }
    return out


def measure_shape(s: Shape, args, spec, calibration, log) -> dict:
    from edgescale.bench.measure import measure_variants

    with tempfile.TemporaryDirectory(prefix=f"edgescale-decode-limit-{s.name}-") as tmp:
        t0 = time.perf_counter()
        build = gpt_variants if s.kind == "gpt" else llama_variants
        paths = build(s, Path(tmp), not args.no_peer, log)
        built_s = time.perf_counter() - t0
        log(f"{s.name}: {len(paths)} graphs built in {built_s:.0f}s; timing them interleaved")
        baseline = "traced fp32" if s.kind == "gpt" else "optimum fp32"
        report = measure_variants(paths, spec, baseline=baseline)
        table = rows(s, paths, report, calibration, spec.decode_context)
    bw = bandwidth_for(report, None, 0.0)
    return {"shape": s.name, "n_layer": s.n_layer, "width": s.width, "kind": s.kind, "baseline": baseline,
            "build_s": built_s, "machine": report.machine, "load": report.load,
            "bandwidth_probe": {"gbps": bw.gbps, "source": bw.source} if bw else None,
            "aa_noise_floor": report.aa.noise_floor if report.aa else None, "rows": table,
            "pairs": {k: list(v) for k, v in pairs(s).items()}}  # fmt: skip


# ---------------------------------------------------------------- printing


def _ci(x: list | None) -> str:
    if not x:
        return "baseline"
    speedup, low, high, tie = x
    return f"{speedup:.2f} [{low:.2f}, {high:.2f}]{' ~' if tie else ''}"


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def shape_table(res: dict) -> Table:
    load = res["load"] or {}
    quiet = {True: "LOADED", False: "quiet", None: "load unknown"}[load.get("loaded")]
    bw = res["rows"][res["baseline"]]["bandwidth_gbps"]
    t = Table(title=f"{res['shape']} ({res['kind']}, {res['n_layer']} layers × {res['width']}): bandwidth "
                    f"{_num(bw, '.1f')} GB/s · {quiet} · × vs {res['baseline']}, 95% CI, ~ = within noise")  # fmt: skip
    cols = ("variant", "decode ms", "eff.", "prefill ms", "decode ×", "prefill ×", "nodes file/opt",
            "non-weight µs/layer", "KV", "top ops (decode)")  # fmt: skip
    for c in cols:
        t.add_column(c, justify="left" if c in ("variant", "KV", "top ops (decode)") else "right")
    for name, r in res["rows"].items():
        ops = ", ".join(f"{SHORT.get(op, op)} {share:.0%}" for op, share in r["top_ops"])
        t.add_row(name, f"{r['decode_ms_p50']:.3f}", _num(r["efficiency"], ".2f"), f"{r['prefill_ms_p50']:.2f}",
                  _ci(r["speedup"].get("decode")), _ci(r["speedup"].get("prefill")),
                  f"{r['file_nodes']}/{_num(r['optimized_nodes'], 'd')}", _num(r["non_weight_us_per_layer"], ".0f"),
                  r["kv_buffer"] or "—", ops)  # fmt: skip
    return t


def summary_table(results: list[dict]) -> Table:
    t = Table(title="non-weight µs per layer of a decode step, before → after (after/before; ≤ 0.5 is halved)")
    for c in ("shape", "recipe", "before", "after", "µs/layer before → after", "after/before", "peer"):
        t.add_column(c, justify="left" if c in ("shape", "recipe", "before", "after") else "right")
    for res in results:
        rows_ = res["rows"]
        peer = " / ".join(f"{k.split()[1]} {_num(rows_[k]['non_weight_us_per_layer'], '.0f')}"
                          for k in ("peer fp32", "peer int4") if k in rows_)  # fmt: skip
        for recipe, (before, after) in res["pairs"].items():
            b = rows_[before]["non_weight_us_per_layer"]
            a = rows_[after]["non_weight_us_per_layer"] if after else None
            change = f"{_num(b, '.0f')} → {_num(a, '.0f')}"
            t.add_row(res["shape"], recipe, before, after or "—", change, _share(b, a), peer)
    return t


def _share(before: float | None, after: float | None) -> str:
    """after/before of two non-weight times; a time at or below 0 is a step at the bandwidth limit."""
    if before is None or after is None:
        return "—"
    return f"{after / before:.2f}" if before > 0 and after > 0 else "at limit"


def header(machine: dict, results: list[dict]) -> str:
    loads = {r["load"].get("loaded") if r["load"] else None for r in results}
    state = "LOADED (ratios unreliable)" if True in loads else "quiet" if loads == {False} else "unknown"
    others = [r["load"] and r["load"].get("other_runnable_mean") for r in results]
    probes = {r["bandwidth_probe"]["source"] for r in results if r["bandwidth_probe"]}
    rates = ", ".join(f"{r['shape']} {r['bandwidth_probe']['gbps']:.1f}" for r in results if r["bandwidth_probe"])
    return (f"host: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, ISA {' '.join(machine['isa'])}; "
            f"onnxruntime {machine.get('onnxruntime', '?')}; {machine['threads']} threads\n"
            f"bandwidth probe GB/s: {rates or '—'} ({'; '.join(sorted(probes)) or 'none'})\n"
            f"machine load: {state} (other runnable tasks on average, per shape: {others})")  # fmt: skip


# ---------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", help=f"comma-separated (default: all of {', '.join(SHAPES)}; --quick: "
                                     f"{', '.join(QUICK)})")  # fmt: skip
    ap.add_argument("--repeats", type=int, help="interleaved timed repeats per variant (default 20; --quick 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write every number here")
    ap.add_argument("--no-peer", action="store_true", help="skip onnxruntime-genai's builder graphs (the peer rows)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few repeats: a smoke run")
    ap.add_argument("--calibration", type=Path, help="an `edgescale calibrate` file: its streaming rate as bandwidth")
    ap.add_argument("--verbose", action="store_true", help="show the export and quantize steps' progress lines")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from edgescale.bench.calibrate import load_calibration
    from edgescale.bench.measure import MeasureSpec, machine_info

    args = parse(argv)
    known = QUICK if args.quick else SHAPES
    names = args.shapes.split(",") if args.shapes else list(known)
    if unknown := [n for n in names if n not in {**SHAPES, **QUICK}]:
        print(f"decode_limit: unknown shapes {unknown}; choose from {list(SHAPES) + list(QUICK)}", file=sys.stderr)
        return 2
    shapes = [{**SHAPES, **QUICK}[n] for n in names]
    if any(s.kind == "llama" for s in shapes) or not args.no_peer:
        shapes = _needs_builder(shapes, args)
    repeats = args.repeats or (3 if args.quick else 20)
    spec = MeasureSpec(prompt_len=16 if args.quick else 64, decode_context=32 if args.quick else 128,
                       repeats=repeats, processes=1 if args.quick else 3, warmup=1 if args.quick else 3,
                       threads=args.threads, timeout_s=3600)  # fmt: skip
    calibration = load_calibration(args.calibration) if args.calibration else None
    log = print if args.verbose else (lambda m: None)
    console, results, t0 = Console(width=200), [], time.perf_counter()
    m = machine_info(args.threads)
    console.print(f"{m['cpu_model']} · ISA {' '.join(m['isa'])} · onnxruntime {version('onnxruntime')} · "
                  f"{args.threads} threads · shapes {[s.name for s in shapes]} · "
                  f"peer {'off' if args.no_peer else 'on'}")  # fmt: skip
    for s in shapes:
        print(f"{s.name}: exporting, quantizing, timing ...", flush=True)
        results.append(measure_shape(s, args, spec, calibration, log))
        console.print(shape_table(results[-1]))
    console.print(header(results[0]["machine"], results) if results else "no shapes measured")
    if results:
        console.print(summary_table(results))
    print(f"prefill {spec.prompt_len} tokens, decode at context {spec.decode_context}, {spec.repeats} interleaved "
          f"repeats in {spec.processes} processes; eff. = (weight + KV bytes)/bandwidth ÷ decode p50; "
          f"{time.perf_counter() - t0:.0f} s in all")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"spec": spec.model_dump(), "shapes": results}, indent=1, default=str))
    return 0


def _needs_builder(shapes: list[Shape], args) -> list[Shape]:
    """The shapes this host can run: without the builder's environment, no peer rows and no Llama shapes."""
    from edgescale.errors import UserError
    from edgescale.export.genai_builder import genai_python

    try:
        genai_python()
        return shapes
    except UserError as e:
        print(f"decode_limit: no builder environment ({e.detail}); skipping the peer rows and Llama shapes",
              file=sys.stderr)  # fmt: skip
        args.no_peer = True
        return [s for s in shapes if s.kind == "gpt"]


if __name__ == "__main__":
    sys.exit(main())
