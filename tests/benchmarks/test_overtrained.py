"""benchmarks/overtrained.py end to end on synthetic runs: per-run numbers from a results.json-shaped
dict, the tables across seeds, verdicts that follow their intervals, the markdown, and the report
section the run directory's ``overtrained.json`` adds. No training here (the benchmark's own run is
the long part, and its numbers belong to its note, never to a test)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from edgescale.report import overtrained as section

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "overtrained.py"
SIZES = {"p16": 12_736, "p32": 37_760}


def _module():
    spec = importlib.util.spec_from_file_location("overtrained_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("overtrained_bench", mod)
    spec.loader.exec_module(sys.modules["overtrained_bench"])
    return sys.modules["overtrained_bench"]


ot = _module()


def _loss(bpb: float) -> dict:
    return {"test": {"bits_per_byte": bpb, "nll_file": None}, "validation": {"bits_per_byte": bpb + 0.01}}


def _results(ratio: int, pruned: float, twin: float, quant: float, prune: bool = True) -> dict:
    """A results.json as far as collect reads it: sizes, fp32/int8/int4 and (prune) pruned variants with twins."""
    sizes, variants = [], []
    for name, n in SIZES.items():
        sizes.append({"size": name, "params_total": n, "params_non_embedding": n // 2, "train_tokens": ratio * n})
        variants.append({"variant_id": f"{name}/fp32", "loss": _loss(3.0)})
        for i, r in enumerate(ot.QUANT):
            variants.append({"variant_id": f"{name}/{r}", "loss": _loss(3.0 + quant * (i + 1))})
        for r in ot.PRUNE if prune else ():
            twin_loss = {"size": f"{name}-{r}-scratch", "train_tokens": int(1.03 * ratio * n), "loss": _loss(twin)}
            variants.append(
                {"variant_id": f"{name}/{r}", "params_total": n // 2, "loss": _loss(pruned), "scratch_twin": twin_loss}
            )
    return {"sizes": sizes, "variants": variants}


def _curves(ratio: int, twin: float) -> dict:
    out = {}
    for name, n in SIZES.items():
        parent = ratio * n
        pts = [(parent // 4, twin + 0.3), (parent // 2, twin + 0.1), (parent, twin + 0.004), (int(1.03 * parent), twin)]
        out.update(
            {
                f"{name}/{r}": {
                    "parent_tokens": parent,
                    "recovery_tokens": int(0.03 * parent),
                    "per_step": 1,
                    "warmup_steps_twin": 10,
                    "warmup_steps_parent_length_run": 10,
                    "points": [{"tokens": d, "bpb": b, "nll_file": None} for d, b in pts],
                }
                for r in ot.PRUNE
            }
        )
    return out


def _table(pruned: tuple[float, float], twin: tuple[float, float], quant_hi: tuple[float, float]) -> dict:
    """Two seeds of both arms: pruned/twin losses per seed, and the quantized Δ per seed at 200 (20: 0.01, 0.012)."""
    runs = {
        "overtrained": [
            ot.collect(_results(200, p, t, q), _curves(200, t), "test", None, 4_000_000)
            for p, t, q in zip(pruned, twin, quant_hi, strict=True)
        ],
        "chinchilla": [ot.collect(_results(20, 0, 0, q, prune=False), {}, "test") for q in (0.01, 0.012)],
    }
    return ot.summarize(runs, "test")


def test_verdict_follows_the_interval():
    assert ot.verdict({"mean": -0.05, "lo": -0.08, "hi": -0.02}, "A wins", "B wins").startswith("A wins by 0.0500")
    assert ot.verdict({"mean": 0.05, "lo": 0.02, "hi": 0.08}, "A wins", "B wins").startswith("B wins by 0.0500")
    for lo, hi in ((-0.01, 0.03), (-0.03, 0.0), (0.0, 0.02)):  # touching or straddling 0 names no winner
        said = ot.verdict({"mean": (lo + hi) / 2, "lo": lo, "hi": hi}, "A wins", "B wins")
        assert said.startswith("no resolvable difference") and "wins" not in said
    assert "unresolved" in ot.verdict({"mean": -1.0, "lo": None, "hi": None}, "A wins", "B wins")


def test_tokens_to_match_interpolates_in_log_tokens_and_bounds_outside():
    pts = [(100, 4.0), (400, 3.0)]
    got = ot.tokens_to_match(3.5, pts)
    assert got["bound"] == "=" and got["tokens"] == pytest.approx(200.0)  # halfway in log: sqrt(100·400)
    assert ot.tokens_to_match(2.0, pts) == {"tokens": 400, "bound": ">"}  # scratch never got there
    assert ot.tokens_to_match(5.0, pts) == {"tokens": 100, "bound": "<"}


def test_collect_reads_one_run():
    run = ot.collect(_results(200, 3.2, 3.1, 0.02), _curves(200, 3.1), "test", None, 4_000_000)
    row = run["p16"]
    assert row["tokens_per_param"] == 200 and row["epochs"] == pytest.approx(200 * 12_736 / 4_000_000)
    assert row["quant"]["int8_dynamic"]["delta"] == pytest.approx(0.02)
    p = row["prune"]["heads_ffn50_recover3"]
    assert p["scratch_a"]["bpb"] == 3.1 and p["scratch_b"]["bpb"] == pytest.approx(3.104)  # the parent-step branch
    assert p["scratch_b"]["tokens"] == 200 * 12_736 and p["scratch_b"]["steps_off_parent"] == 0
    # scratch reaches the pruned model's 3.2 at its half-way branch (3.1 + 0.1)
    assert p["tokens_to_match"] == {"tokens": pytest.approx(200 * 12_736 // 2), "bound": "="}


def test_tables_and_verdicts_when_scratch_wins_clearly():
    t = _table(pruned=(3.30, 3.31), twin=(3.10, 3.11), quant_hi=(0.05, 0.052))
    assert [(r["size"], r["recipe"]) for r in t["pruning"]] == [(s, r) for s in SIZES for r in ot.PRUNE]
    for r in t["pruning"]:
        for arm in ("scratch_a", "scratch_b"):
            d = r[arm]
            assert d["lo"] > 0 and d["verdict"].startswith("scratch wins")
        assert len(r["tokens_to_match"]) == 2 and len(r["match_over_recovery"]) == 2
    assert [(r["size"], r["recipe"]) for r in t["quantization"]] == [(s, r) for s in SIZES for r in ot.QUANT]
    q = t["quantization"][0]
    assert q["ratios"] == [20, 200] and q["difference"]["verdict"].startswith("PTQ hurts more")
    assert section.measured_route(t) == "train small"
    md = section.markdown(t)
    assert md.count("| p16 |") == 4 and "scratch wins by" in md and "Δloss at 200 tok/param" in md


def test_a_straddling_interval_is_never_a_win():
    t = _table(pruned=(3.10, 3.30), twin=(3.19, 3.21), quant_hi=(0.0, 0.03))
    for r in t["pruning"]:
        assert r["scratch_a"]["lo"] < 0 < r["scratch_a"]["hi"]
        assert r["scratch_a"]["verdict"].startswith("no resolvable difference")
    assert all(r["difference"]["verdict"].startswith("no resolvable") for r in t["quantization"])
    assert section.measured_route(t) is None


@pytest.mark.parametrize(
    ("law", "relation"), [("train small", "supports it"), ("train big and compress", "contradicts")]
)
def test_routes_line_holds_the_measured_verdict_against_the_law(law, relation):
    t = _table(pruned=(3.30, 3.31), twin=(3.10, 3.11), quant_hi=(0.05, 0.052))
    t["routes"] = {"host": {"cheaper": law, "statement": "…"}}
    (line,) = [x for x in section.route_lines(t) if x.startswith("host")]
    assert relation in line


def test_report_shows_the_section_from_the_run_directory(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
    import handmade_results as hm

    from edgescale.report.build import build_report
    from edgescale.results import parse_results

    vs = [hm.variant(f"s{i}/fp32", n=10_000 * 4**i, val=3 - 0.3 * i, decode={"host": 0.1 * (i + 1)}) for i in range(3)]
    results = parse_results(hm.results(vs, law=None))
    t = _table(pruned=(3.30, 3.31), twin=(3.10, 3.11), quant_hi=(0.05, 0.052))
    (tmp_path / section.FILE).write_text(json.dumps(t))
    files = build_report(results, tmp_path)
    html = files.html.read_text(encoding="utf-8")
    assert section.TITLE in html and 'id="overtrained"' in html and "scratch wins by" in html
    assert section.TITLE in files.summary.read_text(encoding="utf-8")
    assert section.load(tmp_path / "missing") is None


def test_routes_section_survives_a_law_plan_with_no_numbers():
    """A law plan marked ok whose numbers were NaN (written as null) once crashed the report of a tiny
    overtrained run; the routes table now shows "–" for them."""
    from types import SimpleNamespace

    from edgescale.report.sections import routes
    from edgescale.results.analysis_schema import LawRoute

    law = LawRoute(status="ok", law="fit", reliable=True, params_total=None, tokens=None, lifetime_flops=None)
    dev = SimpleNamespace(law_scratch_plan=law, train_small=None, train_big_and_compress=None, statement="tie")
    rules = SimpleNamespace(training="C = 6ND")
    rt = SimpleNamespace(per_device={"host": dev}, points=[], pairs=None, served_tokens=1e9, rules=rules)
    html = routes(rt)
    assert "N=–, D=–, lifetime – FLOPs" in html
