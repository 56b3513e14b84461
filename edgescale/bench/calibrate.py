"""Measure this machine with onnxruntime: kernel tables for the host latency predictor.

``calibrate`` writes the probes of :mod:`edgescale.bench.probes` and times them all in one
interleaved run of the measurement harness (same worker, thread pool and session
settings as the models it will predict). From the samples it builds:

- ``gemv``: per weight class (fp32, dynamic int8, 4-bit at accuracy level 0 and 4),
  the time of one GEMV against the layer width and the working set of its chain — the
  cache regime (a few MB) through DRAM (up to ~1 GB for fp32);
- ``ops``: per op class, the time of one node against the elements it touches;
- ``run_ms``: the fixed cost of a ``session.run``;
- ``matmul_gops``: matmul throughput per class, from (64 × 1024) GEMM probes;
- ``streaming_gbps()``: weight-streaming rate against the working set (the widest
  GEMV chains: weight bytes / time), the numbers a roofline needs.

Medians are taken over interleaved repeats, so slow drift of the machine affects every
probe alike; ``noise`` is the median half-interquartile range of the probes' samples.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from edgescale.bench.measure import MeasureSpec, machine_info, measure_variants
from edgescale.bench.probes import (
    BYTES_PER_WEIGHT,
    GEMM_ROWS,
    GEMM_WIDTH,
    OP_CHAIN,
    ProbeSpec,
    write_probes,
)
from edgescale.errors import UserError
from edgescale.ortenv import import_onnxruntime
from edgescale.yamlfile import read_yaml

# Op types → the probe class that prices them. View ops copy nothing (half an Add's
# dispatch); an op type not listed is priced as an element-wise Add of its size.
_ELEMENTWISE = (
    "Add Sub Mul Div Pow Where IsNaN IsInf Cast And Or Not Equal Less LessOrEqual Greater GreaterOrEqual Neg "
    "Sqrt Abs Max Min Clip Relu DequantizeLinear QuantizeLinear DynamicQuantizeLinear Trilu"
)
_TRANSCENDENTAL = "Erf Tanh Sigmoid Exp Log Gelu FastGelu BiasGelu QuickGelu SiLU"
_NORMS = "LayerNormalization SkipLayerNormalization SimplifiedLayerNormalization SkipSimplifiedLayerNormalization"
OP_CLASS = {
    **dict.fromkeys(_ELEMENTWISE.split(), "Add"),
    **dict.fromkeys(_TRANSCENDENTAL.split(), "Erf"),
    **dict.fromkeys((_NORMS + " RMSNormalization").split(), "LayerNormalization"),
    **dict.fromkeys(["Concat", "Split", "Slice", "Gather", "Expand", "Tile", "ScatterND"], "Concat"),
    **dict.fromkeys(["MatMul", "FusedMatMul", "Gemm"], "AttnMatMul"),
    "Softmax": "Softmax",
    "Transpose": "Transpose",
}
# Fused attention nodes: a decode step's whole attention (q·kᵀ over the cache's K, a·v over its V) in one node.
ATTENTION_OPS = {"GroupQueryAttention", "MultiHeadAttention", "Attention", "PackedAttention"}
VIEW_OPS = set(["Reshape", "Squeeze", "Unsqueeze", "Shape", "Identity", "Flatten", "Range", "ConstantOfShape", "Size"])


@dataclass(frozen=True)
class HostCalibration:
    cpu_model: str
    threads: int
    onnxruntime: str
    measured_at: str
    repeats: int
    noise: float  # median half-IQR of the probes' samples, relative
    run_ms: float
    gemv: dict[str, dict[str, list[list[float]]]]  # class -> width -> [[working set bytes, ms/GEMV]]
    ops: dict[str, list[list[float]]]  # op class -> [[elements, ms/node]]
    matmul_gops: dict[str, float]  # class -> GOP/s of a (64 × 1024) GEMM
    # Filled by edgescale.bench.host.calibrate_host: efficiency factors fitted on a
    # reference ladder measured in the same run, and what they were fitted to.
    llc_bytes: float = 0.0
    fits: dict = field(default_factory=dict)  # "tables" | "roofline" -> EfficiencyFit fields
    reference: dict[str, float] = field(default_factory=dict)  # reference model -> measured decode ms
    context: int = 128

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, file: Path | str = "calibration") -> HostCalibration:
        try:
            return cls(**data)
        except TypeError as e:
            raise UserError(f"not an edgescale host calibration: {e}", file=file) from None

    # -- lookups ---------------------------------------------------------------
    def gemv_ms(self, weight_class: str, k: int, n: int, working_set_bytes: float) -> float:
        """One (1 × K)·(K × N) kernel in a step whose working set is ``working_set_bytes``.

        The probes hold d × 4d kernels; a K × N kernel is read at the width with the same
        MACs (d = √(K·N/4)), interpolated in log width and log working set. Below the
        smallest probed width the kernel costs what the smallest probe does (overhead
        bound); above the largest it scales with its MACs (streaming bound).
        """
        rows = self.gemv.get(weight_class) or self.gemv["fp32"]
        widths = sorted(int(w) for w in rows)
        d = math.sqrt(k * n / 4)

        def log_time(width: int) -> float:
            pts = sorted(rows[str(width)])
            lw = np.log([p[0] for p in pts])
            lt = np.log([p[1] for p in pts])
            return float(np.interp(math.log(max(working_set_bytes, 1.0)), lw, lt))

        if d <= widths[0]:
            return math.exp(log_time(widths[0]))
        if d >= widths[-1]:
            return math.exp(log_time(widths[-1])) * (k * n) / (4 * widths[-1] ** 2)
        i = int(np.searchsorted(widths, d)) - 1
        f = (math.log(d) - math.log(widths[i])) / (math.log(widths[i + 1]) - math.log(widths[i]))
        return math.exp(log_time(widths[i]) * (1 - f) + log_time(widths[i + 1]) * f)

    def op_ms(self, op: str, elements: int) -> float:
        """One node of op type ``op`` touching ``elements`` floats (a fused attention node: its cache's K)."""
        small = min(p[1] for p in self.ops["Add"])
        if op in VIEW_OPS:
            return 0.5 * small
        if op in ATTENTION_OPS:  # q·kᵀ over K and a·v over V: the two MatMuls of the AttnMatMul probe
            return 2 * self._table_ms("AttnMatMul", elements)
        return self._table_ms(OP_CLASS.get(op, "Add"), elements)

    def _table_ms(self, op_class: str, elements: int) -> float:
        pts = sorted(self.ops[op_class])
        le, lt = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        x = math.log(max(elements, 1))
        if x > le[-1]:  # beyond the probes: linear in the elements
            return math.exp(lt[-1]) * elements / pts[-1][0]
        return float(math.exp(np.interp(x, le, lt)))

    def streaming_gbps(self, weight_class: str = "fp32") -> list[tuple[float, float]]:
        """(working set bytes, GB/s of weights streamed), from a few MB to the largest probe:
        at each working-set level, the fastest (widest) GEMV chain probed there."""
        cls = weight_class if weight_class in self.gemv else "fp32"
        best: dict[float, float] = {}
        for width, pts in self.gemv[cls].items():
            per_gemv = 4 * int(width) ** 2 * BYTES_PER_WEIGHT[cls]
            for ws, ms in pts:
                level = round(math.log2(ws))  # probes aim at the same levels from every width
                best[level] = max(best.get(level, (0, 0)), (per_gemv / (ms / 1000) / 1e9, ws))
        return sorted((ws, rate) for rate, ws in best.values())


def _median(samples: list[float]) -> float:
    return float(np.median(samples))


def tables_from_samples(probe_samples: dict[str, list[float]], spec: ProbeSpec) -> dict:
    """Per-kernel times from the probes' run samples (ms), as HostCalibration fields."""
    run = _median(probe_samples["run"])
    gemv: dict[str, dict[str, list[list[float]]]] = {}
    for cls, d, layers in spec.gemv_points():
        ms = max(1e-6, (_median(probe_samples[f"gemv/{cls}/d{d}/L{layers}"]) - run) / (2 * layers))
        ws = 8 * d * d * BYTES_PER_WEIGHT[cls] * layers
        gemv.setdefault(cls, {}).setdefault(str(d), []).append([ws, ms])
    ops: dict[str, list[list[float]]] = {}
    for name, samples in probe_samples.items():
        if name.startswith("op/"):
            _, op, e = name.split("/")
            ops.setdefault(op, []).append([int(e[1:]), max(1e-6, (_median(samples) - run) / OP_CHAIN)])
    gops = {}
    for cls in spec.classes:
        macs = 2 * GEMM_ROWS * GEMM_WIDTH * 4 * GEMM_WIDTH
        gops[cls] = 2 * macs / ((_median(probe_samples[f"gemm/{cls}"]) - run) / 1000) / 1e9
    noise = [(np.percentile(s, 75) - np.percentile(s, 25)) / 2 / np.median(s) for s in probe_samples.values()]
    return {"run_ms": run, "gemv": gemv, "ops": ops, "matmul_gops": gops, "noise": float(np.median(noise))}


def calibrate(
    threads: int = 2,
    spec: ProbeSpec | None = None,
    repeats: int = 40,
    progress: Callable[[str], None] | None = None,
    variants: dict[str, Path] | None = None,
    measure_spec=None,
):
    """Time the probes (and optionally ``variants``, interleaved with them) on this host.

    Returns the calibration, or ``(calibration, report)`` when ``variants`` are given, the
    report holding the variants' latencies from the same run.
    """
    ort = import_onnxruntime()  # telemetry off (edgescale.ortenv)

    spec = spec or ProbeSpec()
    mspec = measure_spec or MeasureSpec(threads=threads, repeats=repeats, warmup=2, prompt_len=16, timeout_s=3600)
    with tempfile.TemporaryDirectory(prefix="edgescale-probes-") as d:
        probes = write_probes(spec, Path(d))
        if progress:
            progress(f"{len(probes)} probes written; timing them {mspec.repeats}x interleaved")
        report = measure_variants(variants or {}, mspec, probes=probes)
    info = machine_info(threads)
    cal = HostCalibration(
        cpu_model=info["cpu_model"],
        threads=mspec.threads,
        onnxruntime=ort.__version__,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        repeats=mspec.repeats,
        **tables_from_samples(report.probes, spec),
    )
    return (cal, report) if variants else cal


def load_calibration(path: Path) -> HostCalibration:
    data = read_yaml(Path(path))
    try:
        return HostCalibration.from_dict(data, path)
    except (KeyError, ValueError, yaml.YAMLError) as e:
        raise UserError(f"not an edgescale host calibration: {e}", file=path) from None
