"""Time and memory of edgescale's Hugging Face path on a TinyLlama-1.1B-shaped checkpoint.

    .venv/bin/python benchmarks/large_export.py                       # every stage, cached under /tmp/edgescale-large
    .venv/bin/python benchmarks/large_export.py --dir D --stages export,int4

Builds (once, then reuses) a random-weight checkpoint with TinyLlama-1.1B's published
layout, then runs each stage of the path a study takes in a fresh subprocess: source
(load the folder, copy it into the run with ``save_hf``), export (``export.onnx`` through
optimum, fp32 with ONNX external data, verified against torch), quantize.int8_dynamic,
quantize.int4_weight_only, loss scoring and decode latency through onnxruntime. Each
stage reports its wall time and its peak RSS (``VmHWM`` of its own process).

Random weights: the losses are meaningless and are never printed; this benchmark is for
time, memory and file sizes only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from published_configs import TINYLLAMA_1_1B  # noqa: E402  (a sibling module)

STAGES = ("checkpoint", "source", "export", "int8", "int4", "score", "latency")
GB = 1e9


def peak_rss() -> int:
    """This process's peak resident set (VmHWM), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def build_checkpoint(folder: Path, config: dict, seed: int = 0) -> Path:
    """A random-weight checkpoint (normal, std 0.02, as the published init) in float32 safetensors."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    if (folder / "model.safetensors").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, p in model.state_dict().items():
        t = torch.empty(p.shape, dtype=torch.float32)
        t.fill_(1.0) if name.endswith("norm.weight") else t.normal_(0.0, 0.02, generator=gen)
        tensors[name] = t
    tmp = folder / ".model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    cfg.save_pretrained(str(folder))
    os.replace(tmp, folder / "model.safetensors")
    return folder


# ------------------------------------------------------------------ stages (each in its own process)


def _state(d: Path) -> dict:
    p = d / "state.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _save_state(d: Path, **kv) -> None:
    (d / "state.json").write_text(json.dumps({**_state(d), **kv}, indent=1))


def _store(rd, out: Path) -> dict:
    rel, sha = rd.store(out)
    return {"artifact": str(rel), "sha256": sha}


def stage_source(d: Path, rd, args) -> dict:
    from edgescale.hf.source import load_hf_model, save_hf

    model, _ = load_hf_model(d / "checkpoint")
    out = save_hf(model, rd.work_dir("source") / "model.safetensors")
    del model
    return {"source": _store(rd, out)}


def stage_export(d: Path, rd, args) -> dict:
    from edgescale.hf.export import HFCausalLM, export_and_verify
    from edgescale.hf.source import load_hf

    model = HFCausalLM(load_hf(rd.root / _state(d)["source"]["artifact"]), block_size=args.block)
    out = rd.work_dir("export") / "model.onnx"
    check = export_and_verify(model.hf, out, args.block, 18, 1e-4, 8, 0)
    return {"fp32": _store(rd, out), "verify": check}


def _quantize(d: Path, rd, fn, cfg, name: str) -> dict:
    from edgescale.compress.registry import StepContext

    ctx = StepContext(rd.work_dir(name), log=lambda m: None)
    out = fn(rd.root / _state(d)["fp32"]["artifact"], cfg, ctx)
    return {name: _store(rd, out)}


def stage_int8(d: Path, rd, args) -> dict:
    from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic

    return _quantize(d, rd, int8_dynamic, Int8DynamicConfig(), "int8")


def stage_int4(d: Path, rd, args) -> dict:
    from edgescale.compress.int4 import Int4WeightOnlyConfig, int4_weight_only

    return _quantize(d, rd, int4_weight_only, Int4WeightOnlyConfig(), "int4")


def _variant(d: Path, rd, name: str) -> Path:
    return rd.root / _state(d)[name]["artifact"]


def stage_score(d: Path, rd, args) -> dict:
    """Loss of each variant on random token ids: run to measure time and memory, the value discarded."""
    import numpy as np

    from edgescale.bench.loss import onnx_loss
    from edgescale.data.corpus import Split

    ids = np.random.default_rng(0).integers(0, TINYLLAMA_1_1B["vocab_size"], args.score_tokens + 1, dtype=np.int64)
    split = Split("random", (), ids, "random")
    out = {}
    for name in args.variants:
        t0 = time.perf_counter()
        res = onnx_loss(_variant(d, rd, name), split, args.block, args.block, args.score_tokens, batch_size=1)
        out[f"score_{name}_s"] = round(time.perf_counter() - t0, 1)
        out[f"score_{name}_tokens"] = res.tokens  # the loss itself is meaningless (random weights)
    return out


def stage_latency(d: Path, rd, args) -> dict:
    """Greedy decode through the KV cache: prefill 32 tokens, then median ms per decoded token."""
    import numpy as np

    from edgescale.bench.ort_model import OrtCausalLM

    out = {}
    for name in args.variants:
        lm = OrtCausalLM(_variant(d, rd, name), threads=os.cpu_count() or 1)
        ids = np.arange(1, 33, dtype=np.int64)[None]
        _, past = lm.run(ids)
        times, tok = [], np.array([[5]], np.int64)
        for _ in range(args.decode_tokens):
            t0 = time.perf_counter()
            _, past = lm.run(tok, past)
            times.append(time.perf_counter() - t0)
        out[f"decode_{name}_ms"] = round(1000 * float(np.median(times)), 1)
        del lm, past
    return out


def run_stage(stage: str, d: Path, args) -> dict:
    from edgescale.rundir import RunDir

    t0 = time.perf_counter()
    if stage == "checkpoint":
        build_checkpoint(d / "checkpoint", TINYLLAMA_1_1B)
        res = {}
    else:
        with RunDir(d / "run") as rd:
            res = globals()[f"stage_{stage}"](d, rd, args)
        _save_state(d, **res)
    return {"stage": stage, "wall_s": round(time.perf_counter() - t0, 1), "peak_rss": peak_rss(), **res}


def _sizes(d: Path) -> dict[str, int]:
    """Bytes on disk of each stored artifact, its external data included."""
    out = {}
    for name in ("source", "fp32", "int8", "int4"):
        if name in (st := _state(d)):
            p = d / "run" / st[name]["artifact"]
            data = p.with_name(p.name + ".data")
            out[name] = p.stat().st_size + (data.stat().st_size if data.exists() else 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/edgescale-large"), help="checkpoint and run folder")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {', '.join(STAGES)}")
    ap.add_argument("--block", type=int, default=256, help="context of verification and scoring windows")
    ap.add_argument("--score-tokens", type=int, default=1024, help="tokens scored per variant")
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--variants", default="fp32,int8,int4")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.variants = args.variants.split(",")
    if args.child:
        print("RESULT " + json.dumps(run_stage(args.child, args.dir, args)), flush=True)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for stage in args.stages.split(","):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", stage]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.exit(f"stage {stage} failed (exit {proc.returncode})")
        rows.append(json.loads(lines[-1][7:]))
        print(f"{stage:<10} {rows[-1]['wall_s']:>8.1f} s {rows[-1]['peak_rss'] / GB:>7.2f} GB", flush=True)
    print("\nstage        wall s   peak RSS GB   (random weights: losses not shown)")
    for r in rows:
        extra = {k: v for k, v in r.items() if k.endswith(("_ms", "_s")) and k != "wall_s"}
        print(f"{r['stage']:<10} {r['wall_s']:>8.1f} {r['peak_rss'] / GB:>12.2f}   {extra or ''}")
    sizes = _sizes(args.dir)
    print("\nfile sizes: " + ", ".join(f"{k} {v / GB:.2f} GB" for k, v in sizes.items()))
    if "fp32" in sizes and "int4" in sizes:
        print(f"int4 / fp32 size: {sizes['int4'] / sizes['fp32']:.3f}")


if __name__ == "__main__":
    main()
