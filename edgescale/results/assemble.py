"""Assemble a run's typed :class:`~edgescale.results.schema.Results`, section by section, and
write ``results.json`` with the report.

Each ``_section`` function builds one part of the file from the pipeline's records; the
byte and memory counts come from :mod:`edgescale.bench.bytes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from edgescale.bench.bytes import onnx_weight_bytes, peak_memory_bytes
from edgescale.bench.devices import get_device
from edgescale.bench.graph_predict import predict_on_device
from edgescale.bench.measure import per_process_p50, ratio
from edgescale.bench.nodes import decode_graph
from edgescale.bench.profile import host_profile_fields
from edgescale.data.corpus import eval_segments, works_covered
from edgescale.export.canonical import artifact_bytes
from edgescale.models.shape import ModelAccounting
from edgescale.results.pareto import pareto_front
from edgescale.results.schema import SCHEMA_VERSION, FailedVariant, Results
from edgescale.scaling.study import fit_study
from edgescale.train.seed_stats import welch_delta


def _variant_shape(v: dict) -> tuple:
    """(shape, accounting, widest activation) of a variant as it ships: after pruning, at the
    decode context, as every backend's chain record carries them (edgescale.models.backend.Shipped)."""
    return v["shape"], ModelAccounting(**v["accounting"]), v["widest_activation"]


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


def _noise_floor(latency: dict) -> dict[str, float]:
    """Phase → the A/A noise floor of this measurement; 0 for a record timed without the control
    (then a tie is "the interval holds 1", as before)."""
    aa = latency.get("aa")
    return {p: aa["noise_floor"][p] if aa else 0.0 for p in ("prefill", "decode")}


def _host_latency(latency: dict, vid: str, baseline: str | None, measurement) -> dict:
    v = latency["variants"][vid]
    host = {
        "kind": "measured",
        "latency_source": "measured",
        **{k: v[k] for k in ("prefill_ms_p50", "prefill_ms_p90", "decode_ms_p50", "decode_ms_p90")},
        "decode": v.get("decode", "kv-cache"),
        **({"kv_buffer": v["kv_buffer"]} if v.get("kv_buffer") else {}),
        "prompt_len": measurement.prompt_len,
        "decode_context": measurement.decode_context,
        "threads": measurement.threads,
        **_per_process(v),
        **({"noise_floor": _noise_floor(latency)} if latency.get("aa") else {}),
    }
    if baseline and baseline != vid and baseline in latency["variants"]:  # absent: the baseline failed
        base, recipe = latency["variants"][baseline], baseline.split("/")[1]
        # one floor for every size's baseline: it is relative, and the A/A copy is of one of them
        floor = _noise_floor(latency)
        for phase in ("prefill", "decode"):
            b_ms, v_ms, seed = base[f"{phase}_samples_ms"], v[f"{phase}_samples_ms"], latency["spec"]["seed"]
            r = ratio(b_ms, v_ms, seed, floor[phase], groups=base.get("sample_process") or None)  # two-level
            host[f"{phase}_speedup_vs_{recipe}"] = asdict(r)
    return host


def _per_process(v: dict) -> dict:
    """How many worker processes timed a variant and its p50 in each (absent in older records)."""
    procs = v.get("sample_process")
    if not procs:
        return {}
    return {
        "processes": len(set(procs)),
        **{f"{p}_ms_p50_by_process": per_process_p50(v[f"{p}_samples_ms"], procs) for p in ("decode", "prefill")},
    }


def _measurement_checks(latency: dict) -> dict:
    """The A/A control and the machine's load, where the latency record has them."""
    out = {}
    if aa := latency.get("aa"):
        out["aa"] = {
            "variant": aa["variant"],
            **{p: aa[p] for p in ("prefill", "decode")},
            "noise_floor": aa["noise_floor"],
        }
    if load := latency.get("load"):
        out["loaded"] = load["loaded"]
        out["load"] = {k: v for k, v in load.items() if k != "loaded"}
    if latency.get("processes"):
        out["processes"] = latency["processes"]
    return out


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

    targets = [d for d in devices if d != "host"]
    if not targets:
        return {}
    graph = decode_graph(path, m.decode_context)
    return {d: predict_on_device(path, get_device(d), m.decode_context, m.prompt_len, graph) for d in targets}


def _recovery_tokens(v: dict) -> int:
    return sum(st.get("metrics", {}).get("tokens", 0) for st in v.get("steps", []) if st["op"] == "distill.recover")


SPARSE_SHOWN_FASTER = 1.1


def variant_flags(variant: dict) -> list[str]:
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
    leak = variant.get("loss", {}).get("validation", {}).get("causal_leak")
    if leak and leak["flagged"]:
        lo, hi = leak["leak_bits_per_byte_ci95"]
        flags.append(
            f"loss moved by later tokens (dynamic activation scales): {leak['leak_bits_per_byte']:+.4f} bpb "
            f"[{lo:+.4f}, {hi:+.4f}] at {leak['positions']} positions"
        )
    for phase in ("prefill", "decode"):
        r = next((v for k, v in host.items() if k.startswith(f"{phase}_speedup_vs_")), None)
        if r and r["slower"]:
            flags.append(f"{phase} slower than the baseline (measured)")
    return flags


def _seed_deltas(runs: dict | None) -> dict:
    """A student's seed replicates (:meth:`edgescale.pipeline.Pipeline.train_all`): the losses
    per arm and seed, and distilled − scratch with a 95% interval for each twin and split."""
    if not runs:
        return {}
    arms = runs["arms"]
    deltas = [
        welch_delta(twin, split, arms["distilled"][split], arms[twin][split]).to_dict()
        for twin in ("equal_tokens", "equal_compute")
        if twin in arms
        for split in ("validation", "test")
    ]
    return {
        "seeds": runs["seeds"],
        "scorer": runs["scorer"],
        "equal_compute_tokens": runs.get("equal_compute_tokens"),
        "equal_compute_note": runs.get("equal_compute_note"),
        "seed_bpb": arms,
        "deltas": deltas,
    }


def _distillation(
    sizes: list[dict], variants: list[dict], base_recipe: str, kd, runs: dict | None = None
) -> dict | None:
    """Each distilled student next to the same shape trained from scratch for the same tokens (and,
    with seeds, for the same compute), the difference with an interval over seeds."""
    if kd is None:
        return None
    loss = {v["size"]: v["loss"] for v in variants if v["recipe"] == base_recipe}
    if kd.teacher not in loss:  # the teacher's baseline variant failed (listed in failed_variants)
        return None
    rows = []
    for s in sizes:
        if s.get("distilled_from") and {s["size"], s["size"].removesuffix("-kd")} <= loss.keys():
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
                    **_seed_deltas((runs or {}).get(twin)),
                }
            )
    return {
        "alpha": kd.alpha,
        "temperature": kd.temperature,
        "teacher": kd.teacher,
        "teacher_val_bpb": loss[kd.teacher]["validation"]["bits_per_byte"],
        "pairs": rows,
    }


def _pretrained_points(sizes: list[dict], variants: list[dict], base_recipe: str) -> list[dict]:
    """A point (N total, D, validation bits per byte of the baseline variant) for every candidate
    not trained here whose training tokens the study gives."""
    base = {v["size"]: v["loss"]["validation"]["bits_per_byte"] for v in variants if v["recipe"] == base_recipe}
    return [
        {"size": z["size"], "N": z["params_total"], "D": z["train_tokens"], "bits_per_byte": base[z["size"]]}
        for z in sizes
        if not z["curve"] and z["train_tokens"] > 0 and z["size"] in base
    ]


def _seed_run(rec: dict) -> dict:
    seconds = round(rec["seconds"], 1)
    return {"seed": rec["seed"], "train_tokens": rec["tokens"], "train_seconds": seconds, "curve": rec["curve"]}


def _fit_runs(sizes: list[dict]) -> list[dict]:
    """The ladder's runs for the fit: each size's exported run and every other seed of it, each a run
    of its own (named ``size@seedK``) so a bootstrap over runs resamples seeds too."""
    ladder = [z for z in sizes if not z["distilled_from"]]
    extra = [{**z, "size": f"{z['size']}@seed{r['seed']}", "curve": r["curve"]} for z in ladder for r in z["seed_runs"]]
    return ladder + extra


def _size(p, trained: dict, at_equal: dict, equal_tokens: int, replicates: list[dict] = ()) -> dict:
    """One ladder rung: its shape, parameter counts, training curve, settings and other seeds."""
    return {
        "size": p.name,
        **p.shape,
        "params_non_embedding": p.acct.params_non_embedding,
        "params_total": p.acct.params_total,
        "train_tokens": trained[p.name]["tokens"],
        "tokens_rule": p.capped_by,
        "train_seconds": round(trained[p.name]["seconds"], 1),
        "curve": trained[p.name]["curve"],
        "val_bpb_at_equal_tokens": at_equal.get(p.name),
        "distilled_from": p.teacher,
        "equal_tokens": equal_tokens,
        "seed": trained[p.name].get("seed"),
        "hparams": trained[p.name].get("hparams"),
        "seed_runs": [_seed_run(r) for r in replicates],
    }


def _loss(losses: dict, context_length: int) -> dict:
    """Per split: bits per byte, nats per token, tokens and text bytes scored, and the bytes one window spans."""
    return {
        split: {
            **{k: r[k] for k in ("bits_per_byte", "nats_per_token", "tokens", "bytes")},
            "context_bytes": round(context_length * r["bytes"] / r["tokens"], 1),
            **({"causal_leak": r["causal_leak"]} if r.get("causal_leak") else {}),
            **{k: r[k] for k in ("se_bpb", "nll_file") if r.get(k) is not None},  # absent in older runs
        }
        for split, r in losses.items()
    }


def _cost(path: Path, acct: ModelAccounting, widest: int | None, decode_context: int) -> dict:
    """Bytes and FLOPs of one decoded token at ``decode_context``, file size aside, and peak memory."""
    weight = onnx_weight_bytes(path)
    kv = acct.kv_bytes_per_token_fp32
    return {
        "weight_bytes": weight,
        "kv_bytes_per_token": kv,
        "decode_context": decode_context,
        "kv_bytes_at_context": kv * decode_context,
        "bytes_per_decoded_token": weight + kv * decode_context,
        "flops_per_token": acct.flops_per_token_exact,
        "kv_precision": "fp32",  # the exported graphs keep the KV cache float32 for every recipe
        "peak_memory_bytes": peak_memory_bytes(path, kv, widest, decode_context),
        "peak_memory_source": "estimate: initializers + fp32 KV at decode_context + largest "
        "prefill activation at decode_context (no runtime arenas)",
    }


def _resources(trained: dict, v: dict, losses: dict) -> dict:
    """Wall time and peak RSS per stage of one variant, where the run that did the work recorded them."""
    stages = {"source": trained.get("resources")}
    stages |= {st["op"]: st.get("resources") for st in v.get("steps", [])}
    stages |= {f"loss:{split}": r.get("resources") for split, r in losses.items()}
    return {k: r for k, r in stages.items() if r}


def _variant(pipe, vid: str, v: dict, ctx: dict) -> dict:
    """One variant: identity, artifact, shape, loss, cost, latency (host measured, devices predicted)."""
    size, recipe = vid.split("/")
    m = pipe.study.measurement
    path = pipe.rd.root / v["artifact"]
    shape, acct, widest = _variant_shape(v)
    losses = ctx["losses"][vid]
    out = {
        "variant_id": vid,
        "size": size,
        "recipe": recipe,
        "onnx_path": v["artifact"],
        "onnx_sha256": v["sha256"],
        "file_bytes": artifact_bytes(path),  # the graph and its external data
        "shape": shape,
        "params_non_embedding": acct.params_non_embedding,
        "params_total": acct.params_total,
        "train_tokens": ctx["trained"][size]["tokens"] + _recovery_tokens(v),
        "steps": [{"op": st["op"], "metrics": st.get("metrics", {})} for st in v.get("steps", [])],
        "feasibility": v.get("feasibility", []),
        "scratch_twin": ctx["twins"].get(vid),
        "loss": _loss(losses, pipe.study.evaluation.context_length),
        "cost": _cost(path, acct, widest, m.decode_context),
        "latency": {
            "host": _host_latency(ctx["latency"], vid, f"{size}/{ctx['base_recipe']}", m),
            **_device_latency(path, pipe.study.devices, m),
        },
        "causality": {"max_future_logit_change": losses["validation"]["future_influence"]},
        "tokenizer": losses["validation"]["tokenizer"],
        "resources": _resources(ctx["trained"][size], v, losses),
    }
    cost = out["cost"]  # where the time goes, and the decode step against the bandwidth limit
    kv, n_layer = cost["kv_bytes_at_context"], shape.get("n_layer")
    out["latency"]["host"] |= host_profile_fields(ctx["latency"], vid, cost["weight_bytes"], kv, n_layer)
    out["flags"] = variant_flags(out)
    return out


def _mark_frontier(variants: list[dict]) -> None:
    """``on_frontier``: on the (bytes per decoded token, validation loss) Pareto front."""
    pts = [(v["cost"]["bytes_per_decoded_token"], v["loss"]["validation"]["bits_per_byte"]) for v in variants]
    front = set(pareto_front(pts))
    for i, v in enumerate(variants):
        v["on_frontier"] = i in front


def _protocol(pipe) -> dict:
    """How loss was measured: the splits (by hash), the evaluation window and the runtime."""
    e = pipe.study.evaluation
    return {
        "split": "validation",
        "final_split": "test",
        "context_length": e.context_length,
        "stride": e.stride,
        "max_bytes": e.max_bytes,
        "batch_size": e.batch_size,
        "split_sha256": pipe.corpus["validation"].sha256,
        "test_split_sha256": pipe.corpus["test"].sha256,
        "unit": "bits_per_byte",
        "tokenizer": tokenizers.pop()
        if len(tokenizers := {b.tokenizer for b in pipe.backends.values()}) == 1
        else None,
        "runtime": "onnxruntime CPUExecutionProvider",
        "sampling": sampling(pipe.corpus, e),
    }


def sampling(corpus, e) -> dict:
    """The protocol's record of which text each split's loss scores (segments in byte space)."""
    out = {}
    for name in ("validation", "test"):
        segs = eval_segments(corpus[name], corpus[name].n_bytes, e.max_bytes, e.segments, e.sampling)
        works = list(works_covered(corpus[name], segs))
        out[name] = {"segments": len(segs), "bytes": sum(s.length for s in segs), "works": works}
    return {"scheme": e.sampling, "segments": e.segments if e.sampling == "spread" else None, "splits": out}


def assemble_results(
    pipe,
    trained: dict,
    variants: dict,
    losses: dict,
    latency: dict,
    twins: dict,
    failed: Sequence[FailedVariant] = (),
    grid: Sequence[dict] = (),
) -> Results:
    """The typed results of a finished pipeline (without ``analysis``: :func:`edgescale.run.write_outputs` adds it).

    ``variants`` holds the variants that succeeded; ``failed`` those that did not, written as
    ``failed_variants`` only when there are any (a run without failures writes the same bytes)."""
    s = pipe.study
    m = s.measurement
    equal_tokens, at_equal = _equal_token_losses(trained)
    names = [c.name for c in pipe.chains]
    base_recipe = "fp32" if "fp32" in names else names[0]  # what speed-ups and loss changes are measured against
    reps = getattr(pipe, "replicates", {})
    sizes = [_size(p, trained, at_equal, equal_tokens, reps.get(p.name, [])) for p in pipe.plans]
    ctx = {"trained": trained, "losses": losses, "latency": latency, "twins": twins, "base_recipe": base_recipe}
    out = [_variant(pipe, vid, v, ctx) for vid, v in variants.items()]
    _mark_frontier(out)
    data = {
        "study": s.name,
        "schema_version": SCHEMA_VERSION,
        "loss_target_bpb": s.loss_target_bpb,
        "protocol": _protocol(pipe),
        "measurement": {
            **m.model_dump(),
            "ort_version": latency.get("machine", {}).get("onnxruntime"),
            **({"resources": latency["resources"]} if latency.get("resources") else {}),
            **_measurement_checks(latency),
        },
        "machine": latency.get("machine", {}),
        "sizes": sizes,
        "variants": out,
        "loss_falls_with_size": _falls_with_size(sizes, out, base_recipe),
        "scaling": fit_study(
            _fit_runs(sizes),
            s.loss_target_bpb,
            seed=s.seed,
            pretrained=_pretrained_points(sizes, out, base_recipe),
            train_tokens=pipe.corpus["train"].n_tokens,  # the unique tokens that exist
        ),
        "distillation": _distillation(sizes, out, base_recipe, s.distillation, getattr(pipe, "distill_runs", {})),
    }
    if failed:
        data["failed_variants"] = [f.data() for f in failed]
    if grid:  # edgescale.degradation_grid: absent when off or when no size has a recipe to grid
        data["degradation_grid"] = list(grid)
    return Results.model_validate(data)
