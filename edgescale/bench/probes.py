"""Calibration probes: small ONNX graphs that time the kernels a decode step is made of.

The host predictor prices a decode step node by node (nn-Meter's kernel-level idea,
Zhang et al., MobiSys 2021), so calibration measures the two kinds of node a decode
graph holds, as onnxruntime runs them after its fusions:

- **GEMV chains** per weight precision: ``x (1×d) → [d×4d → 4d×d] × L``. A decode step
  streams every weight once, one layer after the other, so a chain of ``L`` layers with
  ``W`` bytes of weights reproduces the cache regime of a model whose working set is
  ``W``: small chains stay in cache between visits, large ones stream from DRAM. The
  time per GEMV is read against the width ``d`` and the working set ``W``.
- **Op chains**: ``M`` nodes of one non-GEMV op type (LayerNorm, Add, Erf, Softmax,
  Transpose, Concat+Slice, attention MatMul) on tensors of ``E`` elements — per-node
  dispatch plus the op's work, which grows with ``E`` and, past onnxruntime's
  parallel-for threshold, adds a thread synchronisation.

Quantized probes use the very nodes onnxruntime executes after fusion
(``DynamicQuantizeMatMul`` for dynamic int8, ``MatMulNBits`` for 4-bit weights, with its
``accuracy_level``), filled with random bytes: kernel time does not depend on the
values, and building a 160 MB probe takes milliseconds instead of a quantizer pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Weight-kernel classes. A node's class is its executed op and weight precision; 4-bit
# kernels differ by accuracy_level (0: dequantise to fp32; 4: int8 activations).
GEMV_CLASSES = ("fp32", "int8", "int4", "int4_acc4")
# Bytes of weights per (K·N) element, scales included for 4-bit blocks of 32.
BYTES_PER_WEIGHT = {"fp32": 4.0, "int8": 1.0, "int4": 0.5 + 4 / 32, "int4_acc4": 0.5 + 4 / 32}
OP_CLASSES = ("Add", "Erf", "LayerNormalization", "Softmax", "Transpose", "Concat", "AttnMatMul")
OP_CHAIN = 24  # nodes per op probe
GEMM_ROWS, GEMM_WIDTH = 64, 1024  # matmul-throughput probe: (64 × 1024)·(1024 × 4096)·(4096 × 1024)

MB = 2**20


@dataclass(frozen=True)
class ProbeSpec:
    """Which probes a calibration builds; the default spans a decode graph's kernels on
    models from ~0.2 MB (cache) to ~200 MB (DRAM) of weights."""

    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    working_sets_mb: tuple[float, ...] = (0.25, 1, 4, 16, 48, 160)
    fp32_dram_mb: tuple[float, ...] = (512, 1024)  # the streaming sweep's DRAM end (fp32 only)
    max_layers: int = 48
    op_elements: tuple[int, ...] = (16, 128, 1024, 8192, 65536, 262144)
    classes: tuple[str, ...] = GEMV_CLASSES

    def gemv_points(self) -> list[tuple[str, int, int]]:
        """(class, width, layers) for every probe: for each width the layer counts that
        reach the requested working sets (one layer at least, ``max_layers`` at most)."""
        out = []
        for c in self.classes:
            for d in self.widths:
                pair = 8 * d * d * BYTES_PER_WEIGHT[c]
                layers = set()
                extra = self.fp32_dram_mb if c == "fp32" else ()
                for w in (*self.working_sets_mb, *extra):
                    n = round(w * MB / pair)
                    if 1 <= n <= self.max_layers:
                        layers.add(n)
                    elif n < 1 and pair <= 1.5 * w * MB:
                        layers.add(1)
                if not layers:  # a single layer is larger than every requested working set
                    layers.add(1)
                out += [(c, d, n) for n in sorted(layers)]
        return out


def _model(nodes, inits, inputs, outputs) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "probe", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model.SerializeToString()


def _weight_node(cls: str, x: str, k: int, n: int, name: str, rng: np.random.Generator):
    """One GEMV node of class ``cls`` reading ``x`` (1×k), with its initializers."""
    from onnx import helper, numpy_helper

    if cls == "fp32":
        w = numpy_helper.from_array((rng.standard_normal((k, n)) * 0.02).astype(np.float32), f"{name}_w")
        return helper.make_node("MatMul", [x, w.name], [name], name=name), [w]
    if cls == "int8":
        w = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), f"{name}_q")
        scale = numpy_helper.from_array(np.array(0.01, np.float32), f"{name}_s")
        zero = numpy_helper.from_array(np.array(0, np.int8), f"{name}_z")
        node = helper.make_node(
            "DynamicQuantizeMatMul", [x, w.name, scale.name, zero.name], [name], name=name, domain="com.microsoft"
        )
        return node, [w, scale, zero]
    blocks = (k + 31) // 32
    packed = numpy_helper.from_array(rng.integers(0, 256, (n, blocks, 16), dtype=np.uint8), f"{name}_q4")
    scales = numpy_helper.from_array((rng.random((n, blocks)) * 0.01).astype(np.float32), f"{name}_s")
    node = helper.make_node(
        "MatMulNBits",
        [x, packed.name, scales.name],
        [name],
        name=name,
        domain="com.microsoft",
        K=k,
        N=n,
        bits=4,
        block_size=32,
        accuracy_level=4 if cls == "int4_acc4" else 0,
    )
    return node, [packed, scales]


def gemv_chain(cls: str, d: int, layers: int, seed: int = 0, rows: int = 1) -> bytes:
    """``x (rows×d)`` through ``layers`` pairs of GEMVs (d×4d, 4d×d) at weight class ``cls``
    (``rows`` > 1 makes them GEMMs, as in a prefill)."""
    from onnx import TensorProto, helper

    if cls not in GEMV_CLASSES:
        raise ValueError(f"unknown GEMV class {cls!r}; allowed: {', '.join(GEMV_CLASSES)}")
    rng = np.random.default_rng(seed)
    nodes, inits, cur = [], [], "x"
    for i in range(layers):
        for j, (k, n) in enumerate(((d, 4 * d), (4 * d, d))):
            node, ws = _weight_node(cls, cur, k, n, f"g{i}_{j}", rng)
            nodes.append(node)
            inits += ws
            cur = node.output[0]
    io = helper.make_tensor_value_info
    return _model(nodes, inits, [io("x", TensorProto.FLOAT, [rows, d])], [io(cur, TensorProto.FLOAT, [rows, d])])


def op_chain(op: str, elements: int, nodes: int = OP_CHAIN) -> bytes:
    """``nodes`` nodes of op class ``op`` on tensors of about ``elements`` floats."""
    from onnx import TensorProto, helper, numpy_helper

    io = helper.make_tensor_value_info
    E = max(16, elements)
    chain, inits, shape = [], [], [1, E]
    cur = "x"
    if op in ("Add", "Erf", "Softmax", "LayerNormalization"):
        if op == "Add":
            inits = [numpy_helper.from_array(np.full((1, E), 1.0001, np.float32), "c")]
        if op == "LayerNormalization":
            inits = [
                numpy_helper.from_array(np.ones(E, np.float32), "s"),
                numpy_helper.from_array(np.zeros(E, np.float32), "b"),
            ]
        extra = {"Add": ["c"], "LayerNormalization": ["s", "b"]}.get(op, [])
        attrs = {"axis": -1} if op in ("Softmax", "LayerNormalization") else {}
        for i in range(nodes):
            chain.append(helper.make_node(op, [cur, *extra], [f"t{i}"], **attrs))
            cur = f"t{i}"
        out_shape = shape
    elif op == "Transpose":  # (a, b) ↔ (b, a): a copy of the whole tensor per node
        shape = [16, E // 16]
        for i in range(nodes):
            chain.append(helper.make_node("Transpose", [cur], [f"t{i}"], perm=[1, 0]))
            cur = f"t{i}"
        out_shape = shape if nodes % 2 == 0 else shape[::-1]
    elif op == "Concat":  # the KV-cache update: (rows-1, w) + (1, w) → (rows, w), sliced back
        w = 16
        rows = E // w
        shape = out_shape = [rows, w]
        inits = [numpy_helper.from_array(np.ones((1, w), np.float32), "one")] + [
            numpy_helper.from_array(np.array([v], np.int64), name)
            for v, name in ((1, "st"), (rows + 1, "en"), (0, "ax"))
        ]
        for i in range(nodes // 2):
            chain.append(helper.make_node("Concat", [cur, "one"], [f"c{i}"], axis=0))
            chain.append(helper.make_node("Slice", [f"c{i}", "st", "en", "ax"], [f"t{i}"]))
            cur = f"t{i}"
    elif op == "AttnMatMul":  # q·kᵀ and a·v over a cache of E elements: (H,1,hd)·(H,hd,ctx)
        H, hd = 4, 16
        ctx = max(1, E // (H * hd))
        rng = np.random.default_rng(0)
        inits = [
            numpy_helper.from_array(rng.standard_normal((H, hd, ctx)).astype(np.float32), "k"),
            numpy_helper.from_array(rng.standard_normal((H, ctx, hd)).astype(np.float32), "v"),
        ]
        shape = out_shape = [H, 1, hd]
        for i in range(nodes // 2):
            chain.append(helper.make_node("MatMul", [cur, "k"], [f"s{i}"]))
            chain.append(helper.make_node("MatMul", [f"s{i}", "v"], [f"t{i}"]))
            cur = f"t{i}"
    else:
        raise ValueError(f"unknown op class {op!r}; allowed: {', '.join(OP_CLASSES)}")
    return _model(chain, inits, [io("x", TensorProto.FLOAT, shape)], [io(cur, TensorProto.FLOAT, out_shape)])


def run_overhead_graph() -> bytes:
    """One cheap node: the fixed cost of a session.run call."""
    return op_chain("Add", 16, nodes=1)


def write_probes(spec: ProbeSpec, folder: Path) -> dict[str, Path]:
    """Write every probe of ``spec`` into ``folder``; return name → path.

    Names: ``gemv/<class>/d<width>/L<layers>``, ``gemm/<class>`` (64 rows through one
    1024-wide layer: matmul throughput), ``op/<class>/E<elements>``, ``run``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        path = folder / (name.replace("/", "_") + ".onnx")
        path.write_bytes(data)
        out[name] = path

    for cls, d, layers in spec.gemv_points():
        put(f"gemv/{cls}/d{d}/L{layers}", gemv_chain(cls, d, layers))
    for cls in spec.classes:
        put(f"gemm/{cls}", gemv_chain(cls, GEMM_WIDTH, 1, rows=GEMM_ROWS))
    for op in OP_CLASSES:
        for e in spec.op_elements:
            put(f"op/{op}/E{e}", op_chain(op, e))
    put("run", run_overhead_graph())
    return out
