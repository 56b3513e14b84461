"""Assemble ``results.json`` from a finished pipeline and write the report files."""

from __future__ import annotations

import math
from pathlib import Path

from edgescale.atomic import write_json
from edgescale.models.shape import GPTConfig, ModelAccounting, accounting
from edgescale.scaling.study import fit_study

# Bytes per element of ONNX tensor types (float, uint8, int8, float16, int32, int64, bfloat16, uint4, int4).
_ELEM_BYTES = {1: 4, 2: 1, 3: 1, 10: 2, 6: 4, 7: 8, 16: 2, 21: 0.5, 22: 0.5}


def read_results(run_dir: Path) -> dict:
    """A finished run directory's ``results.json``; a missing or corrupt one is a UserError."""
    import json

    from edgescale.errors import UserError

    path = Path(run_dir) / "results.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("no results.json: not a finished edgescale run directory", file=run_dir) from None
    except json.JSONDecodeError as e:
        raise UserError(f"corrupt results.json: {e}", file=path) from None


def onnx_weight_bytes(path: Path) -> int:
    """Weight bytes one decode step streams from memory.

    Every initializer counts in full, except tables only ever read by ``Gather``
    (token and position embeddings), of which a decoded token reads one row.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    total = 0
    for t in model.graph.initializer:
        nbytes = numpy_helper.to_array(t).nbytes
        if consumers.get(t.name) == {"Gather"} and len(t.dims) == 2:
            nbytes //= t.dims[0]
        total += nbytes
    return int(total)


def peak_memory_bytes(path: Path, kv_bytes_per_token: int, activation_width: int | None, context: int) -> int | None:
    """An estimate of the memory a batch-1 session needs: every initializer resident (embedding
    tables in full), the fp32 KV cache at ``context`` and the largest single activation of a
    prefill over ``context`` tokens (``activation_width`` elements per token: logits, attention
    scores, q/k/v or the FFN hidden layer). Runtime arenas, the onnxruntime library and the
    graph itself are not counted. None without an activation width (a user's module)."""
    if activation_width is None:
        return None
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    resident = sum(math.prod(t.dims) * _ELEM_BYTES.get(t.data_type, 4) for t in model.graph.initializer)
    return int(resident + kv_bytes_per_token * context + 4 * context * activation_width)


def widest_activation(spec: GPTConfig, context: int) -> int:
    """:func:`peak_memory_bytes`'s activation width for an edgescale GPT (per-layer shapes after pruning)."""
    attn = [h * spec.head_dim for h in spec.heads_per_layer]
    return max(spec.vocab_size, max(spec.heads_per_layer) * context, 3 * max(attn), max(spec.ffn_per_layer))


def _variant_shape(v: dict, plan, context: int) -> tuple:
    """(shape, accounting, widest activation) of a variant as it ships: after pruning, at ``context``."""
    if v.get("accounting"):  # a Hugging Face model, counted from its last checkpoint (edgescale.hf.study)
        shape = _shape(plan.cfg) | {"config": v["hf_config"]}
        return shape, ModelAccounting(**v["accounting"]), v["widest_activation"]
    spec = GPTConfig(**v["spec"]) if v.get("spec") else plan.cfg
    if not isinstance(spec, GPTConfig):  # a user's module (model.factory): counted once, shape unknown
        return _shape(spec), plan.acct, None
    return _shape(spec), accounting(spec, context), widest_activation(spec, context)


def _equal_token_losses(trained: dict) -> tuple[int, dict[str, float]]:
    """Validation loss of every size at the largest token count all curves share (stable
    phase: with WSD every size is then at the same learning rate)."""
    trained = {k: t for k, t in trained.items() if not t.get("teacher")}
    common = set.intersection(*({c["tokens"] for c in t["curve"] if not c.get("cooled")} for t in trained.values()))
    if not common:
        return 0, {}
    tokens = max(common)
    return tokens, {
        name: next(c["val_bpb"] for c in t["curve"] if c["tokens"] == tokens and not c.get("cooled"))
        for name, t in trained.items()
    }


def _host_latency(latency: dict, vid: str, baseline: str | None, measurement) -> dict:
    from dataclasses import asdict

    from edgescale.bench.measure import ratio

    v = latency["variants"][vid]
    host = {
        "kind": "measured",
        "latency_source": "measured",
        **{k: v[k] for k in ("prefill_ms_p50", "prefill_ms_p90", "decode_ms_p50", "decode_ms_p90")},
        "decode": v.get("decode", "kv-cache"),
        "prompt_len": measurement.prompt_len,
        "decode_context": measurement.decode_context,
        "threads": measurement.threads,
    }
    if baseline and baseline != vid:
        base, recipe = latency["variants"][baseline], baseline.split("/")[1]
        for phase in ("prefill", "decode"):
            r = ratio(base[f"{phase}_samples_ms"], v[f"{phase}_samples_ms"], latency["spec"]["seed"])
            host[f"{phase}_speedup_vs_{recipe}"] = asdict(r)
    return host


def _falls_with_size(sizes: list[dict], variants: list[dict], base_recipe: str) -> dict:
    """Whether held-out loss falls strictly along the ladder (ordered by N), two ways."""
    sizes = [s for s in sizes if not s.get("distilled_from")]
    order = [s["size"] for s in sorted(sizes, key=lambda s: s["params_non_embedding"])]
    own = {v["size"]: v["loss"]["validation"]["bits_per_byte"] for v in variants if v["recipe"] == base_recipe}
    equal = {s["size"]: s["val_bpb_at_equal_tokens"] for s in sizes}

    def strictly_falls(losses: dict) -> bool | None:
        seq = [losses.get(n) for n in order]
        return None if None in seq else all(a > b for a, b in zip(seq, seq[1:], strict=False))

    return {
        "at_own_budget": strictly_falls(own),
        "at_equal_tokens": strictly_falls(equal),
        "equal_tokens": sizes[0]["equal_tokens"] if sizes else 0,
    }


def _device_latency(path: Path, devices: list[str], m) -> dict:
    """Predicted latency on every study device except the host (which is measured)."""
    from edgescale.bench.graph_predict import predict_on_device
    from edgescale.bench.nodes import decode_graph
    from edgescale.profiles import get_device

    targets = [d for d in devices if d != "host"]
    if not targets:
        return {}
    graph = decode_graph(path, m.decode_context)
    return {d: predict_on_device(path, get_device(d), m.decode_context, m.prompt_len, graph) for d in targets}


def _recovery_tokens(v: dict) -> int:
    return sum(st.get("metrics", {}).get("tokens", 0) for st in v.get("steps", []) if st["op"] == "distill.recover")


SPARSE_SHOWN_FASTER = 1.1


def _flags(variant: dict) -> list[str]:
    """What a reader must know before trusting a variant's speed: sparsity that dense kernels
    ignore (unless the host measured it faster), results slower than the baseline."""
    flags = []
    host = variant["latency"]["host"]
    decode = next((v for k, v in host.items() if k.startswith("decode_speedup_vs_")), None)
    # "shows otherwise" means clearly faster: the CI's low end at least SPARSE_SHOWN_FASTER
    # (the exported graph is dense, so a smaller lead is noise between identical graphs)
    faster = decode is not None and decode["low"] >= SPARSE_SHOWN_FASTER
    if any(st["metrics"].get("dense_kernel_speedup") is False for st in variant["steps"]) and not faster:
        flags.append("no dense-kernel speedup on this runtime")
    for phase in ("prefill", "decode"):
        r = next((v for k, v in host.items() if k.startswith(f"{phase}_speedup_vs_")), None)
        if r and r["slower"]:
            flags.append(f"{phase} slower than the baseline (measured)")
    return flags


def _shape(cfg) -> dict:
    if isinstance(cfg, GPTConfig):
        out = {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "model": "gpt"}
        if not cfg.is_uniform:
            out |= {"layer_heads": list(cfg.heads_per_layer), "layer_ffn": list(cfg.ffn_per_layer)}
        return out
    return {"n_layer": None, "n_head": None, "n_embd": None, "model": cfg.model.factory}


def _distillation(sizes: list[dict], variants: list[dict], base_recipe: str, kd) -> dict | None:
    """Each distilled student next to the same shape trained from scratch for the same tokens."""
    if kd is None:
        return None
    loss = {v["size"]: v["loss"] for v in variants if v["recipe"] == base_recipe}
    rows = []
    for s in sizes:
        if s.get("distilled_from"):
            twin = s["size"].removesuffix("-kd")
            rows.append(
                {
                    "student": s["size"],
                    "scratch": twin,
                    "teacher": s["distilled_from"],
                    "tokens": s["train_tokens"],
                    "val_bpb_distilled": loss[s["size"]]["validation"]["bits_per_byte"],
                    "val_bpb_scratch": loss[twin]["validation"]["bits_per_byte"],
                    "test_bpb_distilled": loss[s["size"]]["test"]["bits_per_byte"],
                    "test_bpb_scratch": loss[twin]["test"]["bits_per_byte"],
                }
            )
    return {
        "alpha": kd.alpha,
        "temperature": kd.temperature,
        "teacher": kd.teacher,
        "teacher_val_bpb": loss[kd.teacher]["validation"]["bits_per_byte"],
        "pairs": rows,
    }


def assemble_results(pipe, trained: dict, variants: dict, losses: dict, latency: dict, twins: dict) -> dict:
    from edgescale.report.frontier import pareto_front

    s = pipe.study
    m = s.measurement
    equal_tokens, at_equal = _equal_token_losses(trained)
    plans = {p.name: p for p in pipe.plans}
    names = [c.name for c in pipe.chains]
    base_recipe = "fp32" if "fp32" in names else names[0]  # what speed-ups and loss changes are measured against
    sizes, out = [], []
    for p in pipe.plans:
        sizes.append(
            {
                "size": p.name,
                **_shape(p.cfg),
                "params_non_embedding": p.acct.params_non_embedding,
                "params_total": p.acct.params_total,
                "train_tokens": trained[p.name]["tokens"],
                "tokens_rule": p.capped_by,
                "train_seconds": round(trained[p.name]["seconds"], 1),
                "curve": trained[p.name]["curve"],
                "val_bpb_at_equal_tokens": at_equal.get(p.name),
                "distilled_from": p.teacher,
                "equal_tokens": equal_tokens,
            }
        )
    for vid, v in variants.items():
        size, recipe = vid.split("/")
        p = plans[size]
        path = pipe.rd.root / v["artifact"]
        shape, acct, widest = _variant_shape(v, p, m.decode_context)
        weight = onnx_weight_bytes(path)
        kv = acct.kv_bytes_per_token_fp32
        out.append(
            {
                "variant_id": vid,
                "size": size,
                "recipe": recipe,
                "onnx_path": v["artifact"],
                "onnx_sha256": v["sha256"],
                "file_bytes": path.stat().st_size,
                "shape": shape,
                "params_non_embedding": acct.params_non_embedding,
                "params_total": acct.params_total,
                "train_tokens": trained[size]["tokens"] + _recovery_tokens(v),
                "steps": [{"op": st["op"], "metrics": st.get("metrics", {})} for st in v.get("steps", [])],
                "feasibility": v.get("feasibility", []),
                "scratch_twin": twins.get(vid),
                "loss": {
                    split: {k: r[k] for k in ("bits_per_byte", "nats_per_token", "tokens")}
                    for split, r in losses[vid].items()
                },
                "cost": {
                    "weight_bytes": weight,
                    "kv_bytes_per_token": kv,
                    "decode_context": m.decode_context,
                    "kv_bytes_at_context": kv * m.decode_context,
                    "bytes_per_decoded_token": weight + kv * m.decode_context,
                    "flops_per_token": acct.flops_per_token_exact,
                    "flops_context": m.decode_context,
                    "kv_precision": "fp32",  # the exported graphs keep the KV cache float32 for every recipe
                    "peak_memory_bytes": peak_memory_bytes(path, kv, widest, m.decode_context),
                    "peak_memory_source": "estimate: initializers + fp32 KV at decode_context + largest "
                    "prefill activation at decode_context (no runtime arenas)",
                },
                "latency": {
                    "host": _host_latency(latency, vid, f"{size}/{base_recipe}", m),
                    **_device_latency(path, s.devices, m),
                },
                "causality": {"max_future_logit_change": losses[vid]["validation"]["future_influence"]},
            }
        )
        out[-1]["flags"] = _flags(out[-1])
    front = set(
        pareto_front([(v["cost"]["bytes_per_decoded_token"], v["loss"]["validation"]["bits_per_byte"]) for v in out])
    )
    for i, v in enumerate(out):
        v["on_frontier"] = i in front
    e = s.evaluation
    val = pipe.corpus["validation"]
    return {
        "study": s.name,
        "schema_version": 1,
        "loss_target_bpb": s.loss_target_bpb,
        "protocol": {
            "split": "validation",
            "final_split": "test",
            "context_length": e.context_length,
            "stride": e.stride,
            "max_tokens": e.max_tokens,
            "batch_size": e.batch_size,
            "split_sha256": val.sha256,
            "test_split_sha256": pipe.corpus["test"].sha256,
            "unit": "bits_per_byte",
            "tokenizer": "bytes",
            "runtime": "onnxruntime CPUExecutionProvider",
        },
        "measurement": {**m.model_dump(), "ort_version": latency.get("machine", {}).get("onnxruntime")},
        "machine": latency.get("machine", {}),
        "sizes": sizes,
        "variants": out,
        "loss_falls_with_size": _falls_with_size(sizes, out, base_recipe),
        "scaling": fit_study([z for z in sizes if not z["distilled_from"]], s.loss_target_bpb, seed=s.seed),
        "distillation": _distillation(sizes, out, base_recipe, s.distillation),
    }


def write_outputs(rd, results: dict) -> bool:
    """Write results.json and the report; False when the report of these very results was
    already there (a rerun that changed nothing), verified by hash, and is reused."""
    from edgescale import __version__
    from edgescale.export.canonical import file_sha256
    from edgescale.report.analysis import analyse
    from edgescale.report.build import build_report
    from edgescale.rundir import key_of

    # Frontiers, degradation laws, picks, comparison, routes: stored so pick/compare and the report agree.
    results["analysis"] = analyse(results)
    path = write_json(rd.path("results.json"), results)
    key = key_of("report", results=file_sha256(path), v=__version__)
    if rd.cached(key):
        return False
    files = build_report(results, rd.root)  # the PNGs, report.html and summary.md: what `edgescale report` writes
    written = [files.html, files.summary, *files.figures.values()]
    rd.record(key, {"files": [f.name for f in written]}, {f.name: file_sha256(f) for f in written})
    return True
