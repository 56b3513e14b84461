"""Graph cost accounting, host calibration and the fitted roofline."""

import numpy as np
import pytest

from edgescale.bench.calibrate import calibrate
from edgescale.bench.cost import graph_cost
from edgescale.bench.predict import decode_features, fit_host
from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
from edgescale.compress.registry import StepContext
from edgescale.models.shape import accounting


def test_graph_cost_matches_the_family_accounting(tiny_onnx, tiny_cfg):
    c = graph_cost(tiny_onnx)
    acct = accounting(tiny_cfg, 64)
    d, L = tiny_cfg.n_embd, tiny_cfg.n_layer
    assert c.kv_bytes_per_token == acct.kv_bytes_per_token_fp32 == 4 * 2 * L * d
    assert c.attention_flops_per_context_token == 2 * 2 * L * d
    # every block matrix plus the (tied, transposed) LM head: 2 FLOPs per weight per token
    assert c.flops_per_token == 2 * (L * 12 * d * d + 256 * d)
    assert c.has_kv_cache and c.weight_bytes_by_precision["fp32"] > 4 * L * 12 * d * d


def test_graph_cost_sees_int8_weights(tiny_onnx, tmp_path):
    q = int8_dynamic(tiny_onnx, Int8DynamicConfig(), StepContext(tmp_path, log=lambda m: None))
    c, f = graph_cost(q), graph_cost(tiny_onnx)
    assert c.weight_bytes_by_precision["int8"] > 0 and c.weight_bytes < f.weight_bytes
    assert c.n_nodes > f.n_nodes  # dynamic quantisation adds nodes: the per-node term sees them


def test_calibration_measures_every_precision():
    cal = calibrate(threads=1, max_mb=4)
    assert set(cal.matmul_gops) == {"fp32", "int8", "int4"} and all(v > 0 for v in cal.matmul_gops.values())
    assert all(len(cal.gemv[p]) == 2 for p in ("fp32", "int8", "int4"))
    assert cal.gemv["int8"][0]["weight_bytes"] < cal.gemv["fp32"][0]["weight_bytes"]
    assert cal.bandwidth(2e6) > 0 and cal.bandwidth(2e6, "int4") > 0


def test_fit_host_recovers_known_coefficients(tiny_onnx):
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0001, 0.01, size=(12, 5))
    X[:, 2] = rng.integers(50, 300, 12)
    X[:, 3] = rng.integers(0, 60, 12)
    X[:, 4] = 1.0
    true = np.array([1.3, 0.7, 2e-6, 5e-6, 1e-4])
    fit = fit_host(X.tolist(), (X @ true * 1000).tolist())
    assert list(fit.coef.values()) == pytest.approx(true.tolist(), rel=1e-6)
    assert fit.residual_rel_sd < 1e-9 and fit.predict_ms(X[0].tolist()) == pytest.approx(X[0] @ true * 1000)


def test_decode_features_grow_with_context(tiny_onnx):
    cal = calibrate(threads=1, max_mb=1)
    c = graph_cost(tiny_onnx)
    short, long = decode_features(c, cal, 8), decode_features(c, cal, 64)
    assert long[1] > short[1] and long[2] == short[2] and short[3] == 0  # no quantised nodes in fp32


def test_kernel_table_interpolates_in_log_space(tiny_onnx):
    from edgescale.bench.calibrate import KernelTable
    from edgescale.bench.predict import kernel_features

    sizes = (64, 256, 1024)
    grid = [[0.01 * (k / 64) * (n / 64) for n in sizes] for k in sizes]  # time ∝ K·N
    table = KernelTable(sizes, {"fp32": grid})
    assert table.kernel_ms(256, 256, "fp32") == pytest.approx(0.16)
    assert table.kernel_ms(128, 64, "fp32") == pytest.approx(0.02, rel=1e-6)  # exact for a power law
    assert table.kernel_ms(4096, 4096, "int8") == pytest.approx(table.kernel_ms(1024, 1024, "fp32"))  # clamped
    cal = calibrate(threads=1, max_mb=1)
    f = kernel_features(graph_cost(tiny_onnx), cal, table, 32)
    assert f[0] > 0 and f[2] > 0 and f[3] == 1.0
