"""edgescale's ONNX exporter vs optimum's, on the same GPT-2-architecture model.

    .venv/bin/python benchmarks/optimum_parity.py                    # 6x384 GPT (10.6M N), briefly trained
    .venv/bin/python benchmarks/optimum_parity.py --train-steps 0    # random weights
    .venv/bin/python benchmarks/optimum_parity.py --json out.json

One edgescale GPT is converted weight for weight into a transformers ``GPT2LMHeadModel``
(:func:`edgescale.hf.convert.gpt_to_hf`; torch logits identical), then exported twice:
by edgescale's own exporter (``edgescale.export.onnx``, torch.export/dynamo) and by
optimum's ``text-generation-with-past`` exporter as an optimum user gets it. Both are
fp32, opset 18, and timed by the same harness at the same onnxruntime optimisation
level (``all``), threads and shapes — prefill of ``--prompt-len`` tokens and one KV-cache
decode step at ``--context`` — with the variants interleaved in every repeat
(:func:`edgescale.bench.measure.measure_variants`). Then the same for int8: edgescale's
``quantize.int8_dynamic`` on its export vs optimum's ``ORTQuantizer`` ``avx2`` preset on
optimum's. Printed: max |Δlogit| between the two graphs (and against torch), greedy
generations through the KV cache (identical or not), latency ratios edgescale/optimum
(p50, paired bootstrap 95% interval; ≤ 1 means edgescale's graph is no slower), file
sizes and the weight-op counts that explain them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgescale.bench.measure import MeasureSpec, measure_variants
from edgescale.bench.ort_model import OrtCausalLM
from edgescale.compress.onnx_graph import op_counts
from edgescale.models.gpt import GPT, GPTConfig


def _train(model: GPT, steps: int, seed: int) -> None:
    """A short AdamW run on the default corpus, so greedy generations are not noise."""
    from edgescale.config import CorpusConfig
    from edgescale.data.corpus import load_corpus, train_batch

    tokens = load_corpus(CorpusConfig())["train"].tokens
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    for step in range(steps):
        batch = torch.from_numpy(train_batch(tokens, step, 16, 128, seed))
        logits = model.logits(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  train step {step}: {loss.item() / np.log(2):.3f} bits/byte", flush=True)
    model.eval()


def _export_optimum_stock(hf_model, out: Path) -> Path:
    """optimum's export exactly as its users get it (no edgescale changes to the trace)."""
    from optimum.exporters.onnx import onnx_export_from_model

    with tempfile.TemporaryDirectory() as tmp:
        onnx_export_from_model(hf_model, tmp, task="text-generation-with-past", opset=18, do_validation=False)
        (Path(tmp) / "model.onnx").replace(out)
    return out


def _ratio(report, name: str, phase: str) -> dict:
    """edgescale / optimum latency (p50) with its interval, from the speed-up vs optimum."""
    r = report.ratios[name][phase]
    return {"ratio": 1 / r.speedup, "low": 1 / r.high, "high": 1 / r.low}


def _weight_ops(path: Path) -> str:
    counts = op_counts(path)
    keys = ("MatMul", "Gemm", "MatMulInteger", "com.microsoft:DynamicQuantizeMatMul", "com.microsoft:MatMulNBits")
    return ", ".join(f"{k.split(':')[-1]} {counts[k]}" for k in keys if counts.get(k))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    import edgescale.hf  # noqa: F401  (offline: nothing is downloaded)
    from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
    from edgescale.compress.registry import StepContext
    from edgescale.export.onnx import export_onnx
    from edgescale.hf.convert import gpt_to_hf, max_logit_difference
    from edgescale.hf.quantize import OptimumPresetConfig, optimum_preset

    torch.manual_seed(args.seed)
    cfg = GPTConfig(args.layers, args.heads, args.width, vocab_size=256, block_size=256)
    model = GPT(cfg, seed=args.seed)
    from edgescale.models.gpt import accounting

    acct = accounting(cfg, args.context)
    print(f"model: {args.layers}x{args.width}, {args.heads} heads, N = {acct.params_non_embedding:,} non-embedding, "
          f"{acct.params_total:,} total")  # fmt: skip
    if args.train_steps:
        _train(model, args.train_steps, args.seed)
    hf = gpt_to_hf(model)
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(args.seed))
    torch_diff = max_logit_difference(model, hf, ids)

    model_info = {
        "n_layer": args.layers,
        "n_embd": args.width,
        "n_head": args.heads,
        "params_non_embedding": acct.params_non_embedding,
        "params_total": acct.params_total,
        "train_steps": args.train_steps,
        "torch_logit_diff_edgescale_vs_transformers": torch_diff,
    }
    out: dict = {"model": model_info}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        paths = {"edgescale": export_onnx(model, tmp / "edgescale.onnx", opset=18)}
        t_es = time.perf_counter() - t0
        t0 = time.perf_counter()
        paths["optimum"] = _export_optimum_stock(hf, tmp / "optimum.onnx")
        t_opt = time.perf_counter() - t0
        ctx = StepContext(tmp, log=lambda m: None)
        paths["edgescale_int8"] = int8_dynamic(paths["edgescale"], Int8DynamicConfig(), ctx)
        (tmp / "q").mkdir()
        paths["optimum_int8"] = optimum_preset(
            paths["optimum"], OptimumPresetConfig(preset="avx2"), StepContext(tmp / "q", log=lambda m: None)
        )
        out["export_seconds"] = {"edgescale": t_es, "optimum": t_opt}

        prompt = np.asarray(bytearray(b"ROMEO:\nBut soft, what light through yonder window breaks?\n"))[None].astype(
            np.int64
        )
        lms = {k: OrtCausalLM(p) for k, p in paths.items()}
        logits = {k: lm.logits(ids.numpy()) for k, lm in lms.items()}
        with torch.no_grad():
            ref = model.logits(ids).numpy()
        gens = {k: lm.generate(prompt, args.gen_tokens) for k, lm in lms.items()}
        ref_gen = model.generate(torch.from_numpy(prompt), args.gen_tokens).tolist()

        spec = MeasureSpec(prompt_len=args.prompt_len, decode_context=args.context, repeats=args.repeats,
                           warmup=5, threads=args.threads, seed=args.seed)  # fmt: skip
        print(
            f"timing {len(paths)} graphs interleaved ({args.repeats} repeats, {args.threads} threads) ...", flush=True
        )
        fp = measure_variants({k: paths[k] for k in ("optimum", "edgescale")}, spec, baseline="optimum")
        q8 = measure_variants({k: paths[k] for k in ("optimum_int8", "edgescale_int8")}, spec, baseline="optimum_int8")
        for label, rep, ours, theirs in (("fp32", fp, "edgescale", "optimum"),
                                         ("int8", q8, "edgescale_int8", "optimum_int8")):  # fmt: skip
            out[label] = {
                "logit_max_abs_diff": float(np.abs(logits[ours] - logits[theirs]).max()),
                "logit_max_abs_diff_vs_torch": {k: float(np.abs(logits[k] - ref).max()) for k in (ours, theirs)},
                "greedy_identical": gens[ours] == gens[theirs],
                "greedy_identical_to_torch": {k: gens[k] == ref_gen for k in (ours, theirs)},
                "prefill_ms_p50": {k: rep.variants[k].prefill_ms_p50 for k in (ours, theirs)},
                "decode_ms_p50": {k: rep.variants[k].decode_ms_p50 for k in (ours, theirs)},
                "prefill_latency_ratio": _ratio(rep, ours, "prefill"),
                "decode_latency_ratio": _ratio(rep, ours, "decode"),
                "file_bytes": {k: paths[k].stat().st_size for k in (ours, theirs)},
                "weight_ops": {k: _weight_ops(paths[k]) for k in (ours, theirs)},
            }
        out["generation"] = {k: bytes(v).decode("utf-8", "replace") for k, v in gens.items() if max(v) < 256}
        out["spec"] = spec.model_dump()
        out["machine"] = fp.machine
    _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


def _print(out: dict) -> None:
    m = out["model"]
    diff, secs = m["torch_logit_diff_edgescale_vs_transformers"], out["export_seconds"]
    print(f"\ntorch: edgescale GPT vs transformers GPT2LMHeadModel, max |Δlogit| {diff:.2e}")
    print(f"export time: edgescale {secs['edgescale']:.1f}s, optimum {secs['optimum']:.1f}s")
    for label in ("fp32", "int8"):
        r = out[label]
        ours, theirs = list(r["file_bytes"])
        print(f"\n{label}: {ours} vs {theirs}")
        print(
            f"  max |Δlogit| between the graphs {r['logit_max_abs_diff']:.2e}; vs torch "
            + ", ".join(f"{k} {v:.2e}" for k, v in r["logit_max_abs_diff_vs_torch"].items())
        )
        print(f"  greedy generations identical: {r['greedy_identical']} (vs torch: {r['greedy_identical_to_torch']})")
        for phase in ("prefill", "decode"):
            x = r[f"{phase}_latency_ratio"]
            ms = r[f"{phase}_ms_p50"]
            print(
                f"  {phase}: {ours} {ms[ours]:.3f} ms, {theirs} {ms[theirs]:.3f} ms (p50); "
                f"latency ratio {x['ratio']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"
            )
        fb = r["file_bytes"]
        print(f"  file: {ours} {fb[ours] / 1e6:.2f} MB, {theirs} {fb[theirs] / 1e6:.2f} MB")
        print(f"  weight ops: {ours}: {r['weight_ops'][ours]}; {theirs}: {r['weight_ops'][theirs]}")
    print("\ngreedy continuations:")
    for k, v in out["generation"].items():
        print(f"  {k:15s} {v!r}")


if __name__ == "__main__":
    main()
