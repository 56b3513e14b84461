"""benchmarks/decode_limit.py: a --quick smoke run has every row and column, and its byte count is right.

No speed-up is asserted (timings belong to the benchmark's table, never to a test): only the table's
structure, the graphs' node counts and KV binding, and that the profile filled the top-ops column.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode_limit.py"
RECIPES = ("fp32", "int8_dynamic", "int8_static", "int4_weight_only")


def _module():
    spec = importlib.util.spec_from_file_location("decode_limit", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("decode_limit", mod)  # its dataclasses look their module up there
    spec.loader.exec_module(sys.modules["decode_limit"])
    return sys.modules["decode_limit"]


@pytest.mark.slow
def test_quick_run_has_every_row(tmp_path):
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--no-peer", "--shapes", "2x64", "--repeats", "3", "--json", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (shape,) = json.loads(out.read_text())["shapes"]
    expected = [f"{g} {r}" for g in ("traced", "fused") for r in RECIPES]
    assert list(shape["rows"]) == expected
    assert shape["baseline"] == "traced fp32" and shape["pairs"]["int4_weight_only"] == expected[3::4]
    for name, row in shape["rows"].items():
        assert name in proc.stdout
        assert row["decode_ms_p50"] > 0 and row["prefill_ms_p50"] > 0 and row["efficiency"] > 0
        assert row["non_weight_us_per_layer"] is not None and row["optimized_nodes"] > 0
        assert row["kv_buffer"] == ("concat" if name.startswith("traced") else "shared")
        assert len(row["top_ops"]) == 3 and sum(share for _, share in row["top_ops"]) <= 1 + 1e-9
        assert (row["speedup"] == {}) == (name == "traced fp32")  # every other row has its ratios
    rows = shape["rows"]
    assert rows["fused fp32"]["file_nodes"] < rows["traced fp32"]["file_nodes"] / 3  # the fused graph's point
    assert "non-weight µs per layer" in proc.stdout and "machine load:" in proc.stdout


def test_rotary_tables_count_one_row(tmp_path):
    """The builder's cos/sin caches feed GroupQueryAttention in full; a decode step reads one row."""
    mod = _module()
    w = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    cos = numpy_helper.from_array(np.ones((256, 4), np.float32), "cos_cache")
    sin = numpy_helper.from_array(np.ones((256, 4), np.float32), "sin_cache")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["q"]),
        helper.make_node(
            "GroupQueryAttention",
            ["q", "q", "q", "", "", "s", "t", "cos_cache", "sin_cache"],
            ["y"],
            domain="com.microsoft",
        ),  # fmt: skip
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, cos, sin]))
    onnx.save(model, tmp_path / "m.onnx")
    assert mod.step_weight_bytes(tmp_path / "m.onnx") == 8 * 8 * 4 + 2 * 4 * 4
