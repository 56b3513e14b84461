"""Builder peer: edgescale's export + recipes next to onnxruntime-genai's model builder, same checkpoint.

    .venv/bin/python benchmarks/builder_peer.py [--config config.json] [--layers N] [--repeats 20]
        [--prompt-len 64] [--decode-context 128] [--threads 2] [--tokens 32] [--json out.json]

One random-weight Llama checkpoint is built locally (``save_pretrained``, no download) with a
stand-in word-level tokenizer (the builder reads a tokenizer only for genai_config.json's
special tokens). Default shape: SmolLM2-135M's, from huggingface.co/HuggingFaceTB/SmolLM2-135M
config.json: hidden 576, 30 layers, 9 heads, 3 KV heads (head size 64), intermediate 1536,
vocabulary 49152, tied embeddings, rope_theta 100000, rms_norm_eps 1e-5, 8192 positions.
``--config`` takes any Llama-style config.json for a larger run.

Then five graphs of that one checkpoint:

- ``es fp32``: edgescale's ``export.onnx`` for Hugging Face models (optimum's exporter);
- ``es int8_dynamic`` and ``es int4_weight_only``: the shipped recipes' steps on that graph;
- ``genai fp32`` and ``genai int4``: the ``export.genai`` step's builder runs
  (``edgescale.export.genai_builder``; int4 with the same block 32, symmetric, accuracy level 4);
  these are edgescale's graphs too (recipes ``genai_fp32`` and ``genai_int4``), the builder's
  output with its data folded in (below 1.8 GB) and its KV head size written into the graph;
- ``builder fp32`` and ``builder int4``: the builder run alone (``run_builder``), its output as
  it wrote it, read through its own genai_config.json: the peer edgescale's best is held against.

"edgescale best" is, per precision, the faster by decode p50 of edgescale's own export (+ recipe)
and its ``export.genai`` graph; its ratio to the builder's is the issue's check (<= 1.05).

and for each: file size (graph + external data), nodes per decoder layer in the file, greedy
tokens from one prompt through ``OrtCausalLM.generate`` (the two fp32 graphs must agree), and
prefill and decode latency measured interleaved in one worker by
``edgescale.bench.measure.measure_variants`` (the path edgescale reports), with paired
bootstrap 95% intervals of edgescale/builder p50 ratios (<= 1.05: edgescale no slower).

Weights are random and rescaled (linear weights of std 1/sqrt(fan_in), embeddings of std 1) so
that greedy tokens change every step and the token check means something; no loss is shown:
random-weight losses mean nothing. Needs the builder's environment (``python3 dev.py setup``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from published_configs import SMOLLM2_135M  # noqa: E402  (a sibling module)

ES = ("es fp32", "es int8_dynamic", "es int4_weight_only")
GENAI = ("genai fp32", "genai int4")
BUILDER = ("builder fp32", "builder int4")
EDGESCALE_BY_PRECISION = {"fp32": ("es fp32", "genai fp32"), "int4": ("es int4_weight_only", "genai int4")}
# the op types that show what a layer is made of (abbreviated in the table)
_SHOWN_OPS = {
    "MatMul": "MatMul",
    "MatMulNBits": "MatMulNBits",
    "MatMulInteger": "MatMulInteger",
    "GroupQueryAttention": "GQA",
    "SkipSimplifiedLayerNormalization": "SkipSLN",
    "SimplifiedLayerNormalization": "SLN",
    "Softmax": "Softmax",
}
PAIRS = (("es fp32", "genai fp32"), ("es int4_weight_only", "genai int4"), ("es int8_dynamic", "genai int4"))


def build_checkpoint(folder: Path, config: dict, seed: int = 0) -> Path:
    """A random-weight causal LM saved with ``save_pretrained``, plus a stand-in tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgescale.export.genai_builder import write_standin_tokenizer

    cfg = AutoConfig.for_model(**config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 if "embed" in name else p.shape[-1] ** -0.5)
    model.save_pretrained(folder)
    write_standin_tokenizer(folder, cfg.vocab_size, cfg.eos_token_id)
    return folder


def export_edgescale(folder: Path, out: Path, log) -> tuple[dict[str, Path], dict[str, float]]:
    """optimum's export (edgescale's export.onnx for hf), then the int8 and int4 recipes' steps."""
    from edgescale.compress.recipe import load_recipe
    from edgescale.compress.registry import StepContext
    from edgescale.hf.export import export_hf
    from edgescale.hf.source import load_hf_model

    t0 = time.perf_counter()
    model, _ = load_hf_model(folder)
    (out / "es-fp32").mkdir(parents=True)
    paths = {"es fp32": export_hf(model, out / "es-fp32" / "model.onnx")}
    del model
    seconds = {"es fp32": time.perf_counter() - t0}
    for recipe in ("int8_dynamic", "int4_weight_only"):
        step = next(s for s in load_recipe(recipe).steps if not s.inserted)
        work = out / f"es-{recipe}"
        work.mkdir()
        t0 = time.perf_counter()
        paths[f"es {recipe}"] = step.definition.fn(paths["es fp32"], step.config, StepContext(work, log=log))
        seconds[f"es {recipe}"] = time.perf_counter() - t0
    return paths, seconds


def export_builder(folder: Path, out: Path, log) -> tuple[dict[str, Path], dict[str, float]]:
    from edgescale.export.genai_builder import GenaiExportConfig, build_from_folder, run_builder

    paths, seconds = {}, {}
    for precision in ("fp32", "int4"):
        t0 = time.perf_counter()
        cfg = GenaiExportConfig(precision=precision, block_size=32, accuracy_level=4)
        paths[f"genai {precision}"] = build_from_folder(folder, out / f"genai-{precision}", cfg, log)
        seconds[f"genai {precision}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        paths[f"builder {precision}"] = run_builder(folder, out / f"builder-{precision}", cfg, log)
        seconds[f"builder {precision}"] = time.perf_counter() - t0
    return paths, seconds


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def nodes_per_layer(path: Path, n_layer: int) -> tuple[float, dict[str, int]]:
    """Nodes named after a decoder layer, per layer, and the op types of layer 0."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    layer = re.compile(r"layers\.(\d+)/")
    per = [i for n in graph.node if (m := layer.search(n.name)) and (i := int(m.group(1))) < n_layer]
    ops: dict[str, int] = {}
    for n in graph.node:
        if re.search(r"layers\.0/", n.name) and n.op_type in _SHOWN_OPS:
            ops[_SHOWN_OPS[n.op_type]] = ops.get(_SHOWN_OPS[n.op_type], 0) + 1
    return len(per) / n_layer, ops


def greedy(paths: dict[str, Path], vocab: int, prompt_len: int, tokens: int, seed: int) -> dict[str, list[int]]:
    from edgescale.bench.ort_model import OrtCausalLM

    prompt = np.random.default_rng(seed).integers(0, vocab, size=(1, prompt_len))
    return {name: OrtCausalLM(p, threads=2).generate(prompt, tokens) for name, p in paths.items()}


def peak_rss_gb() -> dict[str, float]:
    return {
        "this process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "largest child (builder, worker)": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
    }


def run(args: argparse.Namespace) -> dict:
    from edgescale.bench.measure import MeasureSpec, measure_variants

    config = json.loads(args.config.read_text()) if args.config else dict(SMOLLM2_135M)
    if args.layers:
        config["num_hidden_layers"] = args.layers
    log = print if args.verbose else (lambda m: None)
    with tempfile.TemporaryDirectory(prefix="edgescale-builder-peer-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        folder = build_checkpoint(tmp / "hf", config, args.seed)
        print(f"checkpoint built in {time.perf_counter() - t0:.0f}s", flush=True)
        es, es_s = export_edgescale(folder, tmp, log)
        print(f"edgescale exports: { {k: round(v, 1) for k, v in es_s.items()} } s", flush=True)
        genai, genai_s = export_builder(folder, tmp, log)
        print(f"builder exports: { {k: round(v, 1) for k, v in genai_s.items()} } s", flush=True)
        paths = {**es, **genai}
        n_layer = config["num_hidden_layers"]
        files = {k: {"bytes": file_bytes(p), "nodes": nodes_per_layer(p, n_layer)} for k, p in paths.items()}
        tokens = greedy(paths, config["vocab_size"], args.prompt_len, args.tokens, args.seed)
        spec = MeasureSpec(prompt_len=args.prompt_len, decode_context=args.decode_context, repeats=args.repeats,
                           warmup=3, threads=args.threads, seed=args.seed)  # fmt: skip
        # two interleaved groups, float and quantized: every ratio below is within one group, and
        # one worker holding three float copies of a 1.1B model (13 GB) and the rest would not fit
        groups = [[k for k in paths if "fp32" in k], [k for k in paths if "fp32" not in k]]
        reports = [measure_variants({k: paths[k] for k in g}, spec) for g in groups]
        variants = {k: v for r in reports for k, v in r.variants.items()}
    return {
        "config": config,
        "machine": reports[0].machine | {"load_avg_end": reports[-1].machine["load_avg_end"]},
        "export_s": es_s | genai_s,
        "files": files,
        "tokens": tokens,
        "latency": {k: dataclasses.asdict(v) for k, v in variants.items()},
        "peak_rss_gb": peak_rss_gb(),
        "spec": spec.model_dump(),
    }


def _ratio(lat: dict, a: str, b: str, key: str) -> str:
    from edgescale.bench.measure import bootstrap_ratio_ci

    r, lo, hi = bootstrap_ratio_ci(lat[a][f"{key}_samples_ms"], lat[b][f"{key}_samples_ms"])
    return f"{r:.2f} [{lo:.2f}, {hi:.2f}]"


def report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console, m, c = Console(width=160), result["machine"], result["config"]
    console.print(
        f"host: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, ISA {' '.join(m['isa'])}; "
        f"onnxruntime {m['onnxruntime']}; "
        f"{m['threads']} threads; load avg {m['load_avg_start']} -> {m['load_avg_end']}\n"
        f"checkpoint: random-weight {c['model_type']} {c['num_hidden_layers']} layers x {c['hidden_size']}, "
        f"{c['num_attention_heads']} heads / {c['num_key_value_heads']} KV heads, FFN {c['intermediate_size']}, "
        f"vocab {c['vocab_size']}; prompt {result['spec']['prompt_len']}, decode at context "
        f"{result['spec']['decode_context']}, {result['spec']['repeats']} interleaved repeats; peak RSS GB "
        f"{ {k: round(v, 2) for k, v in result['peak_rss_gb'].items()} }"
    )
    lat, tokens = result["latency"], result["tokens"]
    ref = tokens["es fp32"]
    table = Table(title="builder peer: p50 ms (p90); greedy tokens vs es fp32 (identical prefix / total)")
    for col in (
        "graph",
        "export s",
        "file MB",
        "nodes/layer",
        "layer-0 key ops",
        "greedy =",
        "prefill ms",
        "decode ms",
    ):
        table.add_column(col, justify="left" if col in ("graph", "layer-0 key ops") else "right")
    for name, f in result["files"].items():
        same = next((i for i, (a, b) in enumerate(zip(tokens[name], ref, strict=True)) if a != b), len(ref))
        per, ops = f["nodes"]
        v = lat[name]
        table.add_row(name, f"{result['export_s'][name]:.0f}", f"{f['bytes'] / 1e6:.1f}", f"{per:.1f}",
                      " ".join(f"{k}x{n}" for k, n in sorted(ops.items())), f"{same}/{len(ref)}",
                      f"{v['prefill_ms_p50']:.2f} ({v['prefill_ms_p90']:.2f})",
                      f"{v['decode_ms_p50']:.2f} ({v['decode_ms_p90']:.2f})")  # fmt: skip
    console.print(table)
    ratios = Table(
        title="edgescale / builder, ratio of p50s with paired bootstrap 95% CI (<= 1.05: edgescale no slower)"
    )
    for col in ("edgescale", "builder", "prefill", "decode"):
        ratios.add_column(col)
    for a, b in PAIRS:
        ratios.add_row(a, b, _ratio(lat, a, b, "prefill"), _ratio(lat, a, b, "decode"))
    for precision, names in EDGESCALE_BY_PRECISION.items():
        best = min(names, key=lambda n: lat[n]["decode_ms_p50"])
        b = f"builder {precision}"
        ratios.add_row(
            f"edgescale best {precision}: {best}", b, _ratio(lat, best, b, "prefill"), _ratio(lat, best, b, "decode")
        )
    console.print(ratios)
    same = tokens["es fp32"] == tokens["genai fp32"]
    console.print(f"fp32 greedy tokens identical (es fp32 vs genai fp32, {len(ref)} tokens): {'yes' if same else 'NO'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, help="a Llama-style config.json (default: SmolLM2-135M's shape)")
    ap.add_argument("--layers", type=int, help="override num_hidden_layers (a quicker run)")
    ap.add_argument("--repeats", type=int, default=20, help="interleaved timed repeats per graph")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--decode-context", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32, help="greedy tokens compared")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="show the export steps' progress lines")
    ap.add_argument("--json", type=Path, help="also write the raw result here")
    args = ap.parse_args()
    from edgescale.errors import UserError
    from edgescale.export.genai_builder import genai_python

    try:
        genai_python()
    except UserError as e:
        print(f"builder_peer: {e.detail}", file=sys.stderr)
        return 2
    result = run(args)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0 if result["tokens"]["es fp32"] == result["tokens"]["genai fp32"] else 1


if __name__ == "__main__":
    sys.exit(main())
