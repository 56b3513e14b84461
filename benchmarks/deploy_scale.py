"""A family of deployment-sized checkpoints through ``edgescale run``: time, memory and speed.

    .venv/bin/python benchmarks/deploy_scale.py [--dir /tmp/edgescale-deploy]
        [--models smollm2-135m,qwen2.5-0.5b,tinyllama-1.1b]
        [--recipes fp32,int8_dynamic,int4_weight_only] [--max-bytes 8192] [--repeats 10]

Builds (once, then reuses) random-weight checkpoints with the published layouts of
SmolLM2-135M, Qwen2.5-0.5B and TinyLlama-1.1B (sources beside each config below), writes
one study whose ``models:`` lists them, runs it with ``edgescale run`` in a child process
and prints, from its ``results.json``: wall time and peak RSS per stage (source copy, each
recipe step, loss scoring), file sizes, prefill and decode latency on this host and the
speed-ups against fp32 with their paired-bootstrap 95% intervals; then the child's peak
RSS and the run's wall time.

**Random weights: the losses are meaningless and are not printed.** This benchmark is for
time, memory and speed only. Byte tokens (``tokenizer: bytes``) stand in for each model's
own tokenizer, which cannot be downloaded here; vocabulary sizes are the published ones, so
embedding and LM-head sizes, and the time they take, are real.

Ratios move with machine load: run it on a quiet machine (the table names the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from large_export import build_checkpoint  # noqa: E402  (sibling scripts)
from published_configs import QWEN25_05B, SMOLLM2_135M, TINYLLAMA_1_1B  # noqa: E402

CONFIGS = {"smollm2-135m": SMOLLM2_135M, "qwen2.5-0.5b": QWEN25_05B, "tinyllama-1.1b": TINYLLAMA_1_1B}
GB = 1e9


def write_study(root: Path, names: list[str], recipes: list[str], max_bytes: int, repeats: int) -> Path:
    study = {
        "schema_version": 1,
        "name": "deploy-scale",
        "models": [{"hf": str(root / n), "name": n, "tokenizer": "bytes", "block_size": 256} for n in names],
        "evaluation": {"context_length": 128, "stride": 128, "max_bytes": max_bytes, "batch_size": 4},
        "measurement": {"prompt_len": 64, "decode_context": 128, "repeats": repeats, "warmup": 2, "threads": 2},
        "recipes": recipes,
        "devices": ["host"],
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def run(study: Path, out: Path) -> tuple[float, int]:
    """``edgescale run`` in a child process: (wall seconds, the child's peak RSS in bytes)."""
    t0 = time.perf_counter()
    cmd = [str(Path(sys.executable).with_name("edgescale")), "run", str(study), "--out", str(out)]
    subprocess.run(cmd, check=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return time.perf_counter() - t0, peak_kib * 1024


def _gb(n) -> str:
    return "–" if n is None else f"{n / GB:.2f}"


def _speedup(host: dict, phase: str) -> str:
    s = host.get(f"{phase}_speedup_vs_fp32")
    return "–" if not s else f"{s['speedup']:.2f}× [{s['low']:.2f}, {s['high']:.2f}]"


def print_tables(results: dict, wall: float, peak: int) -> None:
    m = results["machine"]
    print(f"host: {m.get('cpu_model', '?')} ({' '.join(m.get('isa') or ['?'])}), {m.get('logical_cpus', '?')} CPUs")
    print("random weights: losses are meaningless and not shown (time, memory and speed only)\n")
    print("| variant | stage | wall s | peak RSS GB |")
    print("|---|---|---|---|")
    for v in results["variants"]:
        for stage, r in (v.get("resources") or {}).items():
            print(f"| {v['variant_id']} | {stage} | {r['wall_s']:.1f} | {_gb(r.get('peak_rss_bytes'))} |")
    print("\n| variant | params | file MB | prefill ms p50 | decode ms p50 | prefill vs fp32 | decode vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    for v in results["variants"]:
        h = v["latency"]["host"]
        print(
            f"| {v['variant_id']} | {v['params_total'] / 1e6:.0f}M | {v['file_bytes'] / 1e6:.0f} | "
            f"{h['prefill_ms_p50']:.1f} | {h['decode_ms_p50']:.2f} | {_speedup(h, 'prefill')} | "
            f"{_speedup(h, 'decode')} |"
        )
    meas = results["measurement"].get("resources") or {}
    peak_meas = _gb(meas.get("peak_rss_bytes"))
    print(f"\nmeasurement (all variants interleaved): {meas.get('wall_s', 0):.0f} s, peak RSS {peak_meas} GB")
    failed = results.get("failed_variants") or []
    for f in failed:
        print(f"FAILED {f['variant_id']} at {f['failed_stage']}: {f['reason']}")
    print(f"edgescale run: {wall / 60:.1f} min wall, peak RSS of the process {peak / GB:.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/edgescale-deploy"))
    ap.add_argument("--models", default=",".join(CONFIGS))
    ap.add_argument("--recipes", default="fp32,int8_dynamic,int4_weight_only")
    ap.add_argument("--max-bytes", type=int, default=8192, help="text bytes scored per split (byte tokens: tokens)")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    names = args.models.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown model {unknown}; allowed: {', '.join(CONFIGS)}")
    args.dir.mkdir(parents=True, exist_ok=True)
    for n in names:
        t0 = time.perf_counter()
        build_checkpoint(args.dir / n, CONFIGS[n])
        print(f"checkpoint {n}: {args.dir / n} ({time.perf_counter() - t0:.0f} s)", flush=True)
    study = write_study(args.dir, names, args.recipes.split(","), args.max_bytes, args.repeats)
    os.environ.setdefault("EDGESCALE_DB", str(args.dir / "edgescale.db"))  # not the user's store
    wall, peak = run(study, args.dir / "run")
    print_tables(json.loads((args.dir / "run" / "results.json").read_text()), wall, peak)


if __name__ == "__main__":
    main()
