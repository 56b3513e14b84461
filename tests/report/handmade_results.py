"""Hand-made ``results.json`` dicts for the analysis tests: every number chosen, none measured."""

from __future__ import annotations

import copy

from edgescale.results import Results, parse_results

PROTOCOL = {
    "split_sha256": "v" * 64,
    "test_split_sha256": "t" * 64,
    "context_length": 128,
    "stride": 128,
    "max_tokens": 4096,
    "unit": "bits_per_byte",
}
# A law in bits per byte whose E (1.0) lies below every target the tests use but 0.9.
LAW = {"E": 1.0, "A": 50.0, "B": 200.0, "alpha": 0.35, "beta": 0.35}


def variant(
    vid: str,
    *,
    n: int,
    val: float,
    test: float | None = None,
    decode: dict[str, float] | None = None,
    bytes_: float | None = None,
    file_bytes: int | None = None,
    mem: float | None = None,
    energy: dict[str, float] | None = None,
    steps: list | None = None,
    twin: dict | None = None,
    speedup: dict | None = None,
    tokens: int = 1_000_000,
) -> dict:
    """One variant; ``decode`` maps device → ms (host measured, the rest predicted)."""
    size, recipe = vid.split("/")
    latency = {}
    for dev, ms in (decode or {}).items():
        if dev == "host":
            latency[dev] = {"latency_source": "measured", "decode_ms_p50": ms, "decode_ms_p90": 1.2 * ms}
            latency[dev]["prefill_ms_p50"] = 10 * ms
            if speedup:
                latency[dev] |= speedup
        else:
            latency[dev] = {
                "latency_source": "predicted",
                "decode_ms": ms,
                "decode_ms_low": 0.5 * ms,
                "decode_ms_high": 1.5 * ms,
                "prefill_ms": 8 * ms,
                "energy_mj_per_token": (energy or {}).get(dev, 5 * ms),
            }
    return {
        "variant_id": vid,
        "size": size,
        "recipe": recipe,
        "params_total": n,
        "params_non_embedding": n // 2,
        "train_tokens": tokens,
        "file_bytes": file_bytes if file_bytes is not None else 4 * n,
        "onnx_path": f"artifacts/{size}-{recipe}.onnx",
        "onnx_sha256": "0" * 64,
        "steps": steps or [],
        "feasibility": [],
        "flags": [],
        "scratch_twin": twin,
        "loss": {
            "validation": {"bits_per_byte": val},
            **({"test": {"bits_per_byte": test}} if test is not None else {}),
        },
        "cost": {
            "bytes_per_decoded_token": (bytes_ if bytes_ is not None else 4 * n) + 1000,
            "weight_bytes": bytes_ if bytes_ is not None else 4 * n,
            "decode_context": 128,
            "kv_bytes_at_context": 1000,
            "flops_per_token": 2.0 * n,
            "peak_memory_bytes": mem if mem is not None else 4 * n + 5000,
        },
        "latency": latency,
    }


def results(variants: list[dict], *, target: float | None = 2.0, sizes: list[dict] | None = None, law=LAW) -> dict:
    """A results dict around ``variants``; sizes default to one ladder rung per distinct size."""
    if sizes is None:
        seen = {}
        for v in variants:
            seen.setdefault(
                v["size"], {"size": v["size"], "params_total": v["params_total"], "train_tokens": v["train_tokens"]}
            )
        sizes = [{**s, "distilled_from": None} for s in seen.values()]
    scaling = {"status": "not_fitted", "reason": "hand-made: no fit"}
    if law is not None:
        ci = {"E": [0.9, 1.1], "A": [40, 60], "B": [150, 250], "alpha": [0.3, 0.4], "beta": [0.3, 0.4], "a": [0.4, 0.6]}
        scaling = {"status": "fitted", "law": {**law, "ci": ci, "unidentified": {}, "unit": "bits_per_byte"}}
    return copy.deepcopy(
        {
            "study": "handmade",
            "loss_target_bpb": target,
            "protocol": PROTOCOL,
            "measurement": {"decode_context": 128, "prompt_len": 64},
            "sizes": sizes,
            "variants": variants,
            "scaling": scaling,
        }
    )


def law_loss(n: float, d: float, law=LAW) -> float:
    return law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]


def ladder(recipes: dict[str, float], ns=(20_000, 80_000, 320_000), tokens=(1e6, 1.5e6, 4e6)) -> list[dict]:
    """fp32 at the law's loss on every rung, and each recipe with δ = k·(D/N)^0.3 / N^0.25 (so
    γ_D = 0.3, γ_N = 0.55), at a quarter of the bytes; host measured, rpi5-8gb predicted."""
    out = []
    for i, (n, d) in enumerate(zip(ns, tokens, strict=True)):
        base = law_loss(n, d)
        fp32 = {"host": 0.05 + n / 1e6, "rpi5-8gb": 0.1 + n / 5e5}
        out.append(variant(f"s{i}/fp32", n=n, val=base, test=base + 0.01, tokens=int(d), decode=fp32))
        for r, k in recipes.items():
            delta = k * (d / n) ** 0.3 / n**0.25
            quarter = {dev: 0.05 + (ms - 0.05) / 4 for dev, ms in fp32.items()}
            out.append(
                variant(
                    f"s{i}/{r}", n=n, val=base + delta, test=base + delta + 0.01, tokens=int(d), bytes_=n, file_bytes=n,
                    decode=quarter,
                )
            )  # fmt: skip
    return out


def typed(data: dict) -> Results:
    """``data`` parsed with the results schema, as the one reader parses a results.json (a typo fails)."""
    return parse_results(data)
