"""Measure this machine with onnxruntime: matmul throughput per precision and GEMV streaming.

- Matmul throughput: one (64 × K) · (K × N) MatMul at fp32, as dynamic int8
  (``MatMulInteger``) and as 4-bit weight-only (``MatMulNBits``, block 32), in GOP/s.
- GEMV weight streaming: (1 × K) · (K × N) fp32 over weight sizes from a few MB (in
  cache) to about 1 GB (DRAM), in GB/s: decode streams weights exactly like this, so the
  predictor learns both the cache and the DRAM regime from it.

Everything is timed with the same session settings as the measurement harness
(intra-op threads set, inter-op 1), p50 over repeats after warm-up.
"""

from __future__ import annotations

import io
import platform
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class HostCalibration:
    cpu_model: str
    threads: int
    onnxruntime: str
    matmul_gops: dict[str, float]  # fp32 / int8 / int4
    gemv: dict[str, list[dict]]  # precision -> [{"weight_bytes": ..., "gbps": ...}], ascending
    measured_at: str

    def to_dict(self) -> dict:
        return asdict(self)

    def bandwidth(self, working_set_bytes: float, precision: str = "fp32") -> float:
        """GEMV weight-streaming rate (weight bytes/s) at a working-set size, log-log interpolated.

        For int8 and int4 the rate includes their kernels' dequantisation work, which is
        what decode pays per weight byte on this machine.
        """
        curve = self.gemv.get(precision) or self.gemv["fp32"]
        sizes = np.log([g["weight_bytes"] for g in curve])
        rates = np.log([g["gbps"] * 1e9 for g in curve])
        return float(np.exp(np.interp(np.log(max(working_set_bytes, 1.0)), sizes, rates)))


def _session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def _matmul_model(m: int, k: int, n: int, seed: int = 0) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model.SerializeToString()


def _quantized(model_bytes: bytes, precision: str) -> bytes:
    import onnx

    if precision == "fp32":
        return model_bytes
    model = onnx.load_from_string(model_bytes)
    if precision == "int8":
        import tempfile
        from pathlib import Path

        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as d:
            src, dst = Path(d) / "a.onnx", Path(d) / "b.onnx"
            onnx.save(model, str(src))
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
            return dst.read_bytes()
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True)
    q.process()
    buf = io.BytesIO()
    onnx.save(q.model.model, buf)
    return buf.getvalue()


def _time_ms(sess, feeds: dict, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        sess.run(None, feeds)
    samples = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        sess.run(None, feeds)
        samples.append((time.perf_counter_ns() - t) / 1e6)
    return statistics.median(samples)


def matmul_gops(precision: str, threads: int, m: int = 64, k: int = 1024, n: int = 1024, repeats: int = 20) -> float:
    sess = _session(_quantized(_matmul_model(m, k, n), precision), threads)
    x = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    return 2 * m * k * n / (_time_ms(sess, {"x": x}, repeats) / 1000) / 1e9


def gemv_gbps(fp32_bytes: int, threads: int, precision: str = "fp32", repeats: int = 15) -> tuple[int, float]:
    """Time (1 × K)·(K × N) with the weights at ``precision``; returns (weight bytes, GB/s)."""
    import onnx

    k = 1024
    n = max(16, fp32_bytes // (4 * k))
    model = _quantized(_matmul_model(1, k, n), precision)
    weight = sum(t.ByteSize() for t in onnx.load_from_string(model).graph.initializer)
    sess = _session(model, threads)
    x = np.random.default_rng(1).standard_normal((1, k), dtype=np.float32)
    ms = _time_ms(sess, {"x": x}, repeats)
    return weight, weight / (ms / 1000) / 1e9


def calibrate(threads: int = 2, max_mb: int = 1024, progress=None) -> HostCalibration:
    import onnxruntime as ort

    from edgescale.bench.measure import machine_info

    gops = {}
    for p in ("fp32", "int8", "int4"):
        gops[p] = matmul_gops(p, threads)
        if progress:
            progress(f"matmul {p}: {gops[p]:.1f} GOP/s")
    gemv: dict[str, list[dict]] = {}
    for p in ("fp32", "int8", "int4"):
        gemv[p] = []
        mb = 1
        while mb <= max_mb:
            size, rate = gemv_gbps(mb * 2**20, threads, p)
            gemv[p].append({"weight_bytes": size, "gbps": rate})
            if progress:
                progress(f"GEMV {p} {size / 2**20:,.1f} MiB of weights: {rate:.1f} GB/s")
            mb *= 4
    info = machine_info(threads)
    return HostCalibration(
        cpu_model=info["cpu_model"] or platform.processor(),
        threads=threads,
        onnxruntime=ort.__version__,
        matmul_gops=gops,
        gemv=gemv,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


GRID_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class KernelTable:
    """Measured time of one (1 × K)·(K × N) kernel per precision on a K, N grid (nn-Meter's
    kernel-level idea, reduced to the GEMVs decode runs); other shapes are interpolated
    bilinearly in log K, log N, log time."""

    sizes: tuple[int, ...]
    ms: dict[str, list[list[float]]]  # precision -> [i_K][j_N]

    def kernel_ms(self, k: int, n: int, precision: str) -> float:
        table = np.log(np.asarray(self.ms.get(precision) or self.ms["fp32"]))
        logs = np.log(self.sizes)
        x, y = np.clip(np.log(k), logs[0], logs[-1]), np.clip(np.log(n), logs[0], logs[-1])
        i = min(int(np.searchsorted(logs, x, side="right")) - 1, len(logs) - 2)
        j = min(int(np.searchsorted(logs, y, side="right")) - 1, len(logs) - 2)
        tx, ty = (x - logs[i]) / (logs[i + 1] - logs[i]), (y - logs[j]) / (logs[j + 1] - logs[j])
        v = (
            table[i, j] * (1 - tx) * (1 - ty)
            + table[i + 1, j] * tx * (1 - ty)
            + table[i, j + 1] * (1 - tx) * ty
            + table[i + 1, j + 1] * tx * ty
        )
        return float(np.exp(v))


def kernel_table(threads: int, sizes: tuple[int, ...] = GRID_SIZES, repeats: int = 9, progress=None) -> KernelTable:
    ms: dict[str, list[list[float]]] = {}
    for p in ("fp32", "int8", "int4"):
        rows = []
        for k in sizes:
            row = []
            for n in sizes:
                sess = _session(_quantized(_matmul_model(1, k, n), p), threads)
                x = np.random.default_rng(1).standard_normal((1, k), dtype=np.float32)
                row.append(_time_ms(sess, {"x": x}, repeats))
            rows.append(row)
        ms[p] = rows
        if progress:
            progress(f"kernel grid {p}: {len(sizes)}x{len(sizes)} shapes")
    return KernelTable(tuple(sizes), ms)
