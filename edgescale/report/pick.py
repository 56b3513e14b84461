"""The answer users came for: the smallest variant that meets a loss target on a device.

A variant qualifies when its **validation** loss meets the target and its latency and
memory meet the limits; the cheapest by the chosen cost wins (ties: lower validation
loss, smaller file, then id), and it is reported with its **test** loss, on which nothing
was selected. When no variant qualifies the answer comes from the run's scaling law
(:mod:`edgescale.report.extrapolate`): the size and tokens a new model needs, after the
recipe that gets it cheapest onto the device. A target the law says no model can reach
is ``status: "infeasible"`` with the reason, as in ``edgescale plan``.

Statuses: ``ok`` (a variant), ``plan`` (a model to train), ``infeasible``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgescale.errors import UserError
from edgescale.progress import loss_text
from edgescale.report.extrapolate import new_model, profile
from edgescale.report.frontier import axes_for, device_axis
from edgescale.results.schema import HostLatency, Results, Variant
from edgescale.results.snapshot import check_artifacts, locked, read_locked
from edgescale.store.read import list_runs, load_run
from edgescale.store.schema import db_path

LOCAL_METRICS = ("decode_ms", "prefill_ms", "energy_mj")  # --cost shorthands for the chosen device
MB = 1e6  # --max-memory-mb counts decimal megabytes


@dataclass(frozen=True)
class Run:
    """One run's results and where they came from (a run directory, or a store entry)."""

    label: str
    results: Results
    root: str | None = None  # the run directory, to resolve ONNX paths
    warnings: tuple[str, ...] = ()  # about the run read (unfinished, no manifest): for the terminal


@dataclass(frozen=True)
class Limits:
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None


def devices_of(runs: Sequence[Run]) -> list[str]:
    """Devices every run has latency for (host first)."""
    per_run = [r.results.devices() for r in runs]
    return [d for d in per_run[0] if all(d in p for p in per_run[1:])] if per_run else []


def resolve_cost(cost: str | None, device: str, variants: Sequence[Variant]) -> str:
    """The cost axis name: ``--cost`` as given (an axis, or a device metric of ``device``), else
    decode latency on the device, else bytes per decoded token where the device has none."""
    axes = axes_for(variants)
    if cost is None:
        name = device_axis(device, "decode_ms")
        return name if name in axes else "bytes_per_decoded_token"
    name = device_axis(device, cost) if cost in LOCAL_METRICS else cost
    if name not in axes:
        allowed = ", ".join([*LOCAL_METRICS, *axes])
        raise UserError(f"unknown cost {cost!r} on {device}; allowed: {allowed}", field="--cost")
    return name


def latency_on(v: Variant, device: str) -> dict | None:
    """Decode and prefill latency of a variant on a device, whatever its source, in one shape."""
    lat = v.latency.get(device)
    if lat is None:
        return None
    if isinstance(lat, HostLatency):
        return {
            "device": device,
            "source": lat.latency_source,
            "decode_ms": lat.decode_ms_p50,
            "decode_ms_low": lat.decode_ms_p50,
            "decode_ms_high": lat.decode_ms_p90,
            "interval": "spread p50..p90 of the measured samples (not a confidence interval)",
            "prefill_ms": lat.prefill_ms_p50,
            "energy_mj_per_token": None,
        }
    return {
        "device": device,
        "source": lat.latency_source,
        "decode_ms": lat.decode_ms,
        "decode_ms_low": lat.decode_ms_low,
        "decode_ms_high": lat.decode_ms_high,
        "interval": lat.interval,
        "prefill_ms": lat.prefill_ms,
        "energy_mj_per_token": lat.energy_mj_per_token,
    }


def device_memory_bytes(device: str) -> float | None:
    """Usable memory of a device profile (None for the host, which has none)."""
    if device == "host":
        return None
    return profile(device).memory.usable_gb.value * 1e9


def memory_of(v: Variant) -> float | None:
    """``cost.peak_memory_bytes``; for results written before it existed, the file plus the KV
    cache at the decode context (a lower bound: no activations)."""
    peak = v.cost.peak_memory_bytes
    return v.file_bytes + v.cost.kv_bytes_at_context if peak is None else peak


def _why_not(v: Variant, target: float, device: str, limits: Limits, memory_cap: float | None) -> str | None:
    """Why a variant does not qualify, or None when it does."""
    val = v.bpb("validation")
    if val is None or not math.isfinite(val):
        return "no validation loss"
    lat = latency_on(v, device)
    mem = memory_of(v)
    if memory_cap is not None:
        if mem is None:
            return "no memory estimate to check the memory limit"
        if mem > memory_cap:
            return f"needs {mem / MB:.3g} MB (estimate) > {memory_cap / MB:.3g} MB"
    if limits.max_latency_ms is not None:
        if lat is None or lat["decode_ms"] is None:
            return f"no decode latency on {device} to check --max-latency-ms"
        if lat["decode_ms"] > limits.max_latency_ms:
            return f"decode {lat['decode_ms']:.3g} ms ({lat['source']}) > {limits.max_latency_ms:g} ms"
    if val > target:
        return f"validation {val:.4f} bits/byte misses the target {target:g}"
    return None


def memory_cap(device: str, limits: Limits) -> tuple[float | None, str]:
    """The memory a variant may use on ``device``: the tighter of --max-memory-mb and the profile's usable RAM."""
    caps = []
    if limits.max_memory_mb is not None:
        caps.append((limits.max_memory_mb * MB, f"--max-memory-mb {limits.max_memory_mb:g}"))
    usable = device_memory_bytes(device)
    if usable is not None:
        caps.append((usable, f"{device} usable memory {usable / 1e9:g} GB (profile)"))
    return min(caps) if caps else (None, "no memory limit")


def describe(run: Run, v: Variant, target: float, device: str, axis: str, label: str) -> dict:
    """A variant as ``pick`` reports it: test loss beside validation, latency with its source."""
    test = v.bpb("test")
    path = v.onnx_path
    return {
        "run": run.label,
        "variant_id": v.variant_id,
        "size": v.size,
        "recipe": v.recipe,
        "params_total": v.params_total,
        "params_non_embedding": v.params_non_embedding,
        "loss": {
            "selected_on": "validation",
            "validation_bpb": v.bpb("validation"),
            "test_bpb": test,
            "test_meets_target": None if test is None else test <= target,
            "validation_se_bpb": v.se("validation"),
            "test_se_bpb": v.se("test"),
        },
        "cost": {"axis": axis, "label": label, "value": axes_for([v])[axis].get(v) if axis in axes_for([v]) else None},
        "latency": latency_on(v, device),
        "peak_memory_bytes": memory_of(v),
        "file_bytes": v.file_bytes,
        "onnx_path": path,
        "onnx_file": os.path.join(run.root, path) if run.root and path else None,
        "onnx_sha256": v.onnx_sha256,
        "flags": list(v.flags),
        "warnings": [f.reason for f in v.feasibility if f.device in (device, "host")],
    }


def check_comparable(runs: Sequence[Run]) -> None:
    """Losses from runs evaluated on different splits or protocols cannot share one answer."""
    # the cap is in text bytes, so candidates in any tokenizer score the same text (a run capped
    # in another tokenizer's tokens has max_bytes None: not comparable with any byte-capped run)
    keys = ("split_sha256", "test_split_sha256", "context_length", "stride", "max_bytes", "unit")
    first = {k: getattr(runs[0].results.protocol, k) for k in keys}
    for r in runs[1:]:
        other = {k: getattr(r.results.protocol, k) for k in keys}
        if other != first:
            diff = [k for k in keys if other[k] != first[k]]
            raise UserError(
                f"its loss protocol differs from {runs[0].label}'s ({', '.join(diff)}): losses are not comparable; "
                "allowed: runs evaluated on the same splits with the same protocol",
                file=r.label,
            )


def pick(
    runs: Sequence[Run],
    target: float,
    device: str,
    *,
    cost: str | None = None,
    limits: Limits = Limits(),
    served_tokens: float = 1e9,
    target_field: str = "--loss-target-bpb",
) -> dict:
    """The cheapest variant meeting ``target`` (bits per byte, validation) within ``limits`` on
    ``device``, or, when none does, what to train (see the module docstring). ``target_field``:
    where the target came from (the flag, or the study's ``loss_target_bpb``), named if it is invalid."""
    if not runs:
        raise UserError("no run to pick from", field="RUN_DIR")
    if not (target > 0 and math.isfinite(target)):
        raise UserError(f"must be a positive number of bits per byte, got {target:g}", field=target_field)
    check_comparable(runs)
    allowed = devices_of(runs)
    if device not in allowed:
        raise UserError(f"no latency for {device!r} in this run; allowed: {', '.join(allowed)}", field="--device")
    pool = [(r, v) for r in runs for v in r.results.variants]
    variants = [v for _, v in pool]
    axis = resolve_cost(cost, device, variants)
    label = axes_for(variants)[axis].label
    cap, cap_why = memory_cap(device, limits)
    reasons, ok = {}, []
    for r, v in pool:
        why = _why_not(v, target, device, limits, cap)
        c = axes_for([v]).get(axis)
        value = c.get(v) if c else None
        if why is None and (value is None or not math.isfinite(value)):
            why = f"no {axis}"
        key = f"{r.label}:{v.variant_id}" if len(runs) > 1 else v.variant_id
        reasons[key] = why or "qualifies"
        if why is None:
            ok.append((value, v.bpb("validation"), v.file_bytes or 0, key, r, v))
    out = {
        "loss_target_bpb": target,
        "device": device,
        "cost_axis": axis,
        "cost_label": label,
        "limits": {"max_latency_ms": limits.max_latency_ms, "memory_bytes": cap, "memory_limit": cap_why},
        "runs": [r.label for r in runs],
        "considered": reasons,
    }
    if ok:
        *_, r, v = min(ok, key=lambda t: t[:4])
        chosen = {"status": "ok", **out, "variant": describe(r, v, target, device, axis, label)}
        return {**chosen, "cheaper_miss": cheaper_miss(pool, axis, _cost(v, axis), target, len(runs) > 1)}
    fits = [k for (r, v), k in zip(pool, reasons, strict=True) if not _memory_excluded(reasons[k])]
    out["any_variant_fits_memory"] = bool(fits)
    if not fits:
        smallest = min(variants, key=lambda v: memory_of(v) or math.inf)
        need = memory_of(smallest)
        out["memory_note"] = (
            f"no variant fits on {device}: the smallest, {smallest.variant_id}, needs "
            f"{(need or math.nan) / MB:.3g} MB (estimate) against {cap_why}"
        )
    out["nearest_miss"] = nearest_miss(pool, target, len(runs) > 1)
    answer = new_model(runs[0].results, target, device, axis, limits, cap, served_tokens)
    answer["law"]["run"] = runs[0].label  # with several runs, the first one's law answers
    return {**out, **answer}


def _cost(v: Variant, axis: str) -> float | None:
    c = axes_for([v]).get(axis)
    return c.get(v) if c else None


def cheaper_miss(pool: list, axis: str, chosen_cost: float | None, target: float, several: bool) -> dict | None:
    """Of the variants cheaper than the pick (by ``axis``) that miss the loss target, the closest:
    what the pick is bought against ("X int8 misses the target by 0.04 bpb"). None when none is cheaper."""
    if chosen_cost is None:
        return None
    cheaper = [(r, v) for r, v in pool if (c := _cost(v, axis)) is not None and c < chosen_cost]
    return nearest_miss(cheaper, target, several)


def nearest_miss(pool: list, target: float, several: bool) -> dict | None:
    """Of the variants that miss the loss target, the closest (validation bits per byte); None when
    every variant meets it and only the limits rule them out."""
    scored = [(v.bpb("validation"), r, v) for r, v in pool if (v.bpb("validation") or -math.inf) > target]
    if not scored:
        return None
    loss, r, v = min(scored, key=lambda t: t[0])
    return {
        "variant_id": v.variant_id,
        "run": r.label if several else None,
        "validation_bpb": loss,
        "miss_bpb": loss - target,
        "validation_se_bpb": v.se("validation"),
    }


def _memory_excluded(reason: str) -> bool:
    return reason.startswith(("needs ", "no memory estimate"))


def load_run_dir(run_dir: Path, *, allow_unfinished: bool = False) -> Run:
    """A finished run directory's ``results.json``, read under its lock with the finished marker
    and every variant's artifact hash checked (:mod:`edgescale.results.snapshot`)."""
    snap = read_locked(run_dir, allow_unfinished=allow_unfinished)
    return Run(str(run_dir), snap.results, str(run_dir), snap.warnings)


def load_store_runs(db: Path | None) -> list[Run]:
    """Every run recorded in the results store (:mod:`edgescale.store`) whose results.json is still there;
    the artifacts of each are checked against the recorded hashes, as for a run directory."""

    path = db_path(db)
    listed = [r for r in list_runs(path) if r.present]
    if not listed:
        raise UserError("no finished runs recorded in the store (edgescale runs --add RUN_DIR)", file=path)
    runs = [Run(r.run_id, load_run(path, r.run_id), r.run_id) for r in listed]
    for run in runs:
        with locked(Path(run.label), exclusive=False):
            check_artifacts(Path(run.label), run.results)
    return runs


def summary_lines(out: Mapping) -> list[str]:
    """The answer in a few lines for a terminal."""
    target, device = out["loss_target_bpb"], out["device"]
    head = f"target {target:g} bits/byte (validation) on {device}, cheapest by {out['cost_label']}"
    if out["status"] == "ok":
        v = out["variant"]
        lat, loss = v["latency"] or {}, v["loss"]
        meets = {True: "meets the target", False: "misses the target", None: "not evaluated"}[loss["test_meets_target"]]
        miss = out.get("cheaper_miss")
        return [
            head,
            f"  pick: {v['variant_id']} ({v['run']})  {v['params_total']:,} params  file {v['file_bytes']:,} bytes",
            *(
                [
                    f"  cheaper but missing: {miss['variant_id']} at {_loss(miss, 'validation')} "
                    f"(misses the target by {miss['miss_bpb']:.4f})"
                ]
                if miss
                else []
            ),
            f"  loss (bits/byte ± SE): validation {_loss(loss, 'validation')} (selected on), "
            f"test {_loss(loss, 'test')} ({meets})",
            f"  decode {_decode_text(lat)}, prefill {_ms(lat.get('prefill_ms'))} ms",
            f"  file: {v['onnx_file'] or v['onnx_path']}",
        ]
    lines = [head, f"  no variant qualifies{': ' + out['memory_note'] if out.get('memory_note') else ''}"]
    if out.get("nearest_miss"):
        m = out["nearest_miss"]
        lines.append(f"  nearest miss: {m['variant_id']} at {_loss(m, 'validation')} (misses by {m['miss_bpb']:.4f})")
    if out["status"] == "plan":
        b, plan = out["best"], out["best"]["plan"]
        dev = b["device"]
        lines += [
            f"  from the law ({out['law']['law']}{'' if out['law']['reliable'] else ', not reliable'}): train "
            f"N = {plan['n_params']:.3g} params on D = {plan['n_tokens']:.3g} tokens "
            f"(C = {plan['compute_flops']:.3g} FLOPs, {plan['cost']['accelerator_hours']:.3g} accelerator-hours), "
            f"then {b['recipe']}",
            f"  predicted loss {b['predicted_loss_bpb']:.4f} [{b['predicted_loss_bpb_interval'][0]:.4f}, "
            f"{b['predicted_loss_bpb_interval'][1]:.4f}] bits/byte; "
            f"decode {_ms(dev['decode_ms'])} ms ({dev['source']})",
        ]
    if out["status"] == "unidentified":  # no numbers from the law: what to train to identify it
        lines.append(f"  {out['reason']}")
    return lines


def _decode_text(lat: Mapping) -> str:
    """Decode latency with its range: a predicted interval in brackets; for a measurement the
    p50..p90 of its samples, named a spread so it is never read as a confidence interval."""
    ms, lo, hi, source = lat.get("decode_ms"), lat.get("decode_ms_low"), lat.get("decode_ms_high"), lat.get("source")
    if source == "measured":
        return f"p50 {_ms(ms)} ms (p50–p90 spread of the samples {_ms(lo)}–{_ms(hi)} ms, measured)"
    return f"{_ms(ms)} ms [{_ms(lo)}, {_ms(hi)}] ({source or '?'})"


def _loss(rec: Mapping, split: str) -> str:
    """``split``'s loss in a pick record with its standard error (:func:`edgescale.progress.loss_text`)."""
    return loss_text(rec.get(f"{split}_bpb"), rec.get(f"{split}_se_bpb"))


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"
