"""Calibrate this host end to end, and predict the decode latency of a graph on it.

``calibrate_host`` times the probes (:mod:`edgescale.bench.probes`) together with a
reference ladder of random-weight GPTs (widths × weight classes), interleaved in one run,
and fits the efficiency factors of both host models on the reference ladder: the kernel
tables (what ``edgescale predict MODEL --device host`` uses) and the per-node roofline
(whose structure device profiles reuse). Extra models passed in are measured in the same
run but not fitted on — that is how ``benchmarks/latency.py`` holds sizes out.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgescale.bench.calibrate import HostCalibration, calibrate
from edgescale.bench.graph_predict import (
    EfficiencyFit,
    RooflineParams,
    fit_efficiency,
    host_components,
    roofline_components,
)
from edgescale.bench.measure import MeasureSpec
from edgescale.bench.nodes import decode_graph
from edgescale.bench.ort_model import OrtCausalLM
from edgescale.bench.probes import ProbeSpec
from edgescale.compress.feasibility import host_target
from edgescale.errors import UserError
from edgescale.export.fused import export_fused
from edgescale.export.onnx import export_onnx
from edgescale.models.gpt import GPT, GPTConfig

REFERENCE_WIDTHS = (64, 192, 512, 1024)
QUICK_WIDTHS = (64, 256)
WEIGHT_CLASSES = ("fp32", "int8", "int4", "int4_acc4")
CONTEXT = 128


def host_llc_bytes() -> float:
    """Last-level cache of this machine (sysfs), 32 MiB when it cannot be read."""
    for index in (3, 2):
        p = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size")
        try:
            text = p.read_text().strip().upper()
        except OSError:
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1], 1)
        return float(int(text.rstrip("KMG")) * mult)
    return 32.0 * 2**20


def quantize_as(fp32: Path, weight_class: str, out: Path) -> Path:
    """``fp32`` with its MatMul weights in ``weight_class`` (onnxruntime's quantizers)."""
    import onnx

    if weight_class == "fp32":
        out.write_bytes(fp32.read_bytes())
        return out
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's chatter
    if weight_class == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
        return out
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(
        onnx.load(str(fp32)),
        bits=4,
        block_size=32,
        is_symmetric=True,
        accuracy_level=4 if weight_class == "int4_acc4" else 0,
    )
    q.process()
    buf = io.BytesIO()
    onnx.save(q.model.model, buf)
    out.write_bytes(buf.getvalue())
    return out


def reference_models(
    folder: Path, widths: tuple[int, ...], classes: tuple[str, ...] = WEIGHT_CLASSES, graph: str = "fused"
) -> dict:
    """4-layer random-weight GPTs at ``widths`` in every weight class: name → path. ``graph``:
    ``fused`` (what a study exports for a CPU target, :mod:`edgescale.export.fused`) or ``traced``."""
    paths = {}
    for d in widths:
        model = GPT(GPTConfig(4, max(1, d // 64), d, block_size=256), seed=0).eval()
        write = export_fused if graph == "fused" else export_onnx
        fp32 = write(model, folder / f"d{d}.onnx")
        for cls in classes:
            paths[f"d{d}/{cls}"] = quantize_as(fp32, cls, folder / f"d{d}-{cls}.onnx")
        fp32.unlink()
    return paths


def calibrate_host(
    threads: int = 2,
    quick: bool = False,
    repeats: int = 60,
    extra: dict[str, Path] | None = None,
    progress: Callable[[str], None] | None = None,
):
    """Probes + reference ladder (+ ``extra`` models) in one interleaved run.

    Returns ``(calibration with fitted factors, measurement report, decode graphs)``.
    """
    say = progress or (lambda m: None)
    spec = ProbeSpec(widths=(64, 256, 1024), working_sets_mb=(1, 16, 64), fp32_dram_mb=()) if quick else ProbeSpec()
    widths = QUICK_WIDTHS if quick else REFERENCE_WIDTHS
    mspec = MeasureSpec(
        prompt_len=16, decode_context=CONTEXT, repeats=repeats, warmup=2, threads=threads, timeout_s=3 * 3600
    )
    with tempfile.TemporaryDirectory(prefix="edgescale-reference-") as d:
        say(f"building the reference ladder: widths {list(widths)} x {', '.join(WEIGHT_CLASSES)}")
        reference = reference_models(Path(d), widths)
        variants = {**reference, **(extra or {})}
        graphs = {k: decode_graph(p, CONTEXT) for k, p in variants.items()}
        cal, report = calibrate(threads, spec, variants=variants, measure_spec=mspec, progress=say)
    measured = {k: v.decode_ms_p50 for k, v in report.variants.items()}
    llc = host_llc_bytes()
    tables = {k: host_components(graphs[k], cal) for k in reference}
    roof = RooflineParams.from_calibration(cal, llc)
    roofs = {k: roofline_components(graphs[k], roof) for k in reference}
    fits = {
        "tables": fit_efficiency(list(tables.values()), [measured[k] for k in reference]).to_dict(),
        "roofline": fit_efficiency(list(roofs.values()), [measured[k] for k in reference]).to_dict(),
    }
    cal = dataclasses.replace(
        cal, llc_bytes=llc, fits=fits, reference={k: measured[k] for k in reference}, context=CONTEXT
    )
    return cal, report, graphs


def predict_host(path: Path, cal: HostCalibration, context: int = CONTEXT) -> dict:
    """Decode latency of ``path`` on this host: node times looked up in the host's kernel tables,
    times the efficiency factors fitted on the reference ladder (held in their plausible ranges);
    the interval is the 90% quantile of the fit's leave-one-out errors."""
    if not cal.fits:
        raise UserError(
            "this calibration has no fitted efficiency factors; rerun edgescale calibrate", field="--calibration"
        )
    OrtCausalLM(path)  # refuses a file that is not a causal LM, naming it
    graph = decode_graph(path, context)
    # The kernel tables: on this host they carry over (benchmarks/latency.py: 19/20 held-out points
    # within ±10% on the fused graphs, the roofline 9/20); the roofline's structure is the devices'.
    fit = EfficiencyFit(**cal.fits["tables"])
    out = fit.predict(host_components(graph, cal))
    return {
        "kind": "predicted",
        "latency_source": "predicted",
        "device": "host",
        "model": "node times from the host's kernel tables x fitted efficiency factors (edgescale.bench.host)",
        "decode_ms": out["ms"],
        "decode_ms_low": out["low_ms"],
        "decode_ms_high": out["high_ms"],
        "decode_tokens_per_s": 1000 / out["ms"],
        "components_ms": out["components_ms"],
        "decode_context": context,
        "calibration": {"cpu_model": cal.cpu_model, "threads": cal.threads, "measured_at": cal.measured_at},
    }


def host_profile(cal: HostCalibration, threads: int) -> dict:
    """This host as a device profile (edgescale/profiles.py schema): what the calibration
    measured, read from /proc and sysfs, or assumed with its formula."""
    src = f"edgescale calibrate ({cal.measured_at}, onnxruntime {cal.onnxruntime}, {cal.threads} threads)"
    stream = cal.streaming_gbps("fp32")
    mem_kb = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        mem_kb[key] = int(rest.split()[0])
    dram = stream[-1][1]
    isa = sorted(host_target().isa)

    def measured(value: float, what: str) -> dict:
        return {"value": round(value, 3), "kind": "measured", "source": f"{src}: {what}"}

    def assumed(value: float, formula: str) -> dict:
        return {"value": value, "kind": "assumed", "formula": formula, "source": "edgescale assumption"}

    return {
        "schema_version": 1,
        "id": "host",
        "name": f"this host ({cal.cpu_model})",
        "class": "host",
        "soc": cal.cpu_model,
        "cpu": {
            "clusters": [{"core": "host", "count": os.cpu_count() or 1, "freq_ghz": 1.0}],
            "isa": isa,
            "last_level_cache_mb": {
                "value": round(cal.llc_bytes / 2**20, 1),
                "kind": "measured",
                "source": "/sys/devices/system/cpu/cpu0/cache (size of the last level)",
            },
        },
        "peak_gops": {
            "fp32": measured(cal.matmul_gops["fp32"], "(64 x 1024) fp32 GEMM probe"),
            "int8": measured(cal.matmul_gops["int8"], "(64 x 1024) dynamic-int8 GEMM probe"),
        },
        "memory": {
            "type": "host DRAM",
            "capacity_gb": measured(mem_kb["MemTotal"] / 1e6, "/proc/meminfo MemTotal"),
            "usable_gb": measured(mem_kb.get("MemAvailable", mem_kb["MemTotal"]) / 1e6, "/proc/meminfo MemAvailable"),
            "peak_gbps": measured(max(r for _, r in stream), "fastest fp32 GEMV streaming (cache regime)"),
            "effective_gbps": measured(dram, f"fp32 GEMV streaming of a {stream[-1][0] / 2**20:.0f} MiB working set"),
        },
        "power_w": assumed(65.0, "a desktop CPU package under all-core load; set it from your host's data sheet"),
        "runtimes": [{"runtime": "onnxruntime", "execution_providers": ["CPUExecutionProvider"]}],
        "efficiency": {
            "bw": {
                "value": round(min(1.0, dram / max(r for _, r in stream)), 3),
                "kind": "derived",
                "formula": "DRAM streaming rate / fastest (cache) streaming rate, both measured",
                "source": src,
            },
            "compute": assumed(0.5, "share of the GEMM probe's rate a prefill reaches; the analytic predictor's prior"),
        },
        "notes": f"written by edgescale calibrate with {threads} onnxruntime threads; clock frequency not measured",
    }
