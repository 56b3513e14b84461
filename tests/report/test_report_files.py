"""The report files from a results dict: every PNG real, report.html self-contained, complete
and escaped, summary.md answer-first, ``edgescale report`` rebuilding them for a run directory."""

import base64
import json
import re
import struct
import subprocess
import sys
from html.parser import HTMLParser

import handmade_results as hm
import pytest
from report_fixtures import full_results

from edgescale.report.analysis import analyse
from edgescale.report.build import build_report
from edgescale.report.html import render
from edgescale.report.plots import plot_frontier
from edgescale.report.summary import summary_text
from edgescale.results import parse_results


def _page(results):
    """The page and summary without figures (no matplotlib: fast): (html, summary.md)."""
    typed = parse_results(results)
    analysis = analyse(typed)
    return render(typed, analysis, {}), summary_text(typed, analysis)


def _results(name="demo"):
    variants = []
    for i, n in enumerate([14_000, 56_000, 150_000, 450_000]):
        for recipe, shrink, speed in (("fp32", 1.0, None), ("int8_dynamic", 0.4, 1.1)):
            host = {
                "kind": "measured",
                "latency_source": "measured",
                "prefill_ms_p50": 0.4 * (i + 1),
                "prefill_ms_p90": 0.5 * (i + 1),
                "decode_ms_p50": 0.1 * (i + 1) / (speed or 1),
                "decode_ms_p90": 0.12 * (i + 1),
                "prompt_len": 64,
                "decode_context": 128,
                "threads": 2,
            }
            if speed:
                host["decode_speedup_vs_fp32"] = {
                    "speedup": speed,
                    "low": 0.97,
                    "high": 1.2,
                    "within_noise": True,
                    "slower": False,
                }
            variants.append(
                {
                    "variant_id": f"s{i}/{recipe}",
                    "size": f"s{i}",
                    "recipe": recipe,
                    "onnx_path": "x.onnx",
                    "onnx_sha256": "0" * 64,
                    "file_bytes": int(4 * n * shrink) + 1000,
                    "params_non_embedding": n,
                    "params_total": n + 9000,
                    "train_tokens": 1_000_000,
                    "loss": {
                        "validation": {
                            "bits_per_byte": 3.9 - 0.3 * i + 0.01 * (shrink < 1),
                            "nats_per_token": 2.0,
                            "tokens": 65536,
                        },
                        "test": {"bits_per_byte": 3.95 - 0.3 * i, "nats_per_token": 2.0, "tokens": 65536},
                    },
                    "cost": {
                        "weight_bytes": int(4 * n * shrink),
                        "kv_bytes_per_token": 384,
                        "decode_context": 128,
                        "kv_bytes_at_context": 49152,
                        "bytes_per_decoded_token": int(4 * n * shrink) + 49152,
                        "flops_per_token": 2.0 * n,
                    },
                    "latency": {"host": host},
                }
            )
    sizes = [
        {
            "size": f"s{i}",
            "n_layer": 2,
            "n_head": 2,
            "n_embd": 24,
            "params_non_embedding": 1,
            "params_total": 2,
            "train_tokens": 1,
            "tokens_rule": "min_tokens",
            "val_bpb_at_equal_tokens": 3.0,
            "equal_tokens": 1,
        }
        for i in range(4)
    ]
    return {
        "study": name,
        "loss_target_bpb": 3.3,
        "protocol": {
            "split": "validation",
            "context_length": 128,
            "stride": 128,
            "max_tokens": 65536,
            "batch_size": 16,
            "split_sha256": "ab" * 32,
            "unit": "bits_per_byte",
        },
        "measurement": {"prompt_len": 64, "decode_context": 128, "threads": 2, "repeats": 30},
        "machine": {"cpu_model": "Test CPU", "threads": 2, "load_avg_start": [0.1, 0.2, 0.3]},
        "sizes": sizes,
        "variants": variants,
        "scaling": {"status": "not_fitted", "reason": "hand-made: no fit"},
    }


def _with_scaling(results):
    pts = [
        {"size": f"s{i}", "N": 2e4 * 3**i, "D": d, "bits_per_byte": 3.9 - 0.2 * i - 1e-7 * d}
        for i in range(4)
        for d in (2.5e5, 5e5, 1e6)
    ]
    law = {
        "E": 1.0,
        "A": 50.0,
        "B": 80.0,
        "alpha": 0.3,
        "beta": 0.3,
        "a": 0.5,
        "n_points": 12,
        "rmse_log": 0.01,
        "r2_log": 0.98,
        "unidentified": {"B": "95% interval [1, inf] is wider than the value 80"},
        "warnings": [],
        "ci": {
            "E": [0.5, 1.5],
            "A": [10, 90],
            "B": [1, None],
            "alpha": [0.2, 0.4],
            "beta": [0.2, 0.4],
            "a": [0.4, 0.6],
        },
    }
    plan = {
        "status": "ok",
        "loss_target_bpb": 3.3,
        "n_params": 1e6,
        "n_tokens": 2e7,
        "tokens_per_param": 20,
        "compute_flops": 1.2e14,
        "predicted_loss_bpb": 3.3,
        "reliable": False,
        "caveat": "E not identified",
        "shape": {"n_layer": 4, "n_embd": 144, "n_head": 9},
    }
    return {**results, "scaling": {"status": "fitted", "points": pts, "law": law, "plan_for_target": plan}}


class _Page(HTMLParser):
    """Tags, the URL-bearing attributes and the text cells of a page, checked while parsing."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.urls, self.rows, self.text = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.rows += tag == "tr"
        self.urls += [value for name, value in attrs if name in ("src", "href", "srcset", "action") and value]

    def handle_data(self, data):
        self.text.append(data)


def _parse(text):
    page = _Page()
    page.feed(text)
    page.close()
    return page


def test_png_is_a_real_image(tmp_path):
    import matplotlib.image

    path = plot_frontier(parse_results(_results()), tmp_path / "frontier.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 1200 < width < 4000 and 400 < height < 1500  # three panels side by side
    assert matplotlib.image.imread(path).shape[:2] == (height, width)
    assert [p.name for p in tmp_path.iterdir()] == ["frontier.png"]  # written atomically, no temp left
    assert (
        plot_frontier(parse_results(_results()), tmp_path / "again.png").read_bytes() == data
    )  # no timestamps: reproducible


def test_png_tolerates_missing_latency(tmp_path):
    results = _results()
    for v in results["variants"]:
        del v["latency"]
    assert plot_frontier(parse_results(results), tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"


FIGURES = {
    "frontier_devices": "frontier-devices.png",
    "frontier": "frontier.png",
    "compare": "compare.png",
    "degradation": "degradation.png",
    "latency": "latency.png",
    "plan": "plan.png",
    "scaling": "scaling.png",
    "loss_curves": "loss-curves.png",
}
SECTIONS = ("answer", "frontier", "compare", "degradation", "routes", "latency", "plan", "curves", "variants")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The full hand-made run's report, built once: (files, results, html text, parsed page)."""
    out = tmp_path_factory.mktemp("report")
    results = full_results()
    files = build_report(parse_results(results), out)
    text = files.html.read_text(encoding="utf-8")
    return files, results, text, _parse(text)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_every_figure_is_a_real_png_and_embedded(built):
    import matplotlib.image

    files, _, text, page = built
    assert {k: p.name for k, p in files.figures.items()} == FIGURES
    embedded = [base64.b64decode(u.split(",", 1)[1]) for u in page.urls if u.startswith("data:image/png")]
    assert len(embedded) == len(FIGURES)
    for path in files.figures.values():
        data = path.read_bytes()
        width, height = _png_size(data)
        assert width >= 600 and height >= 300, path.name
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[:2] == (height, width)
        assert pixels[..., :3].std() > 0.05, f"{path.name} is blank"  # something is drawn on it
        assert data in embedded, f"{path.name} not embedded as drawn"
    assert sorted(p.name for p in files.html.parent.iterdir()) == sorted(
        [*FIGURES.values(), "report.html", "summary.md"]
    )  # written atomically: no temp files left


def test_page_leads_with_the_answer_and_has_every_section(built):
    _, results, text, page = built
    starts = [text.index(f'id="{s}"') for s in SECTIONS]
    assert starts == sorted(starts) and starts[0] < text.index("<img")  # the answer before any figure
    answer = text[starts[0] : starts[1]]
    picks = analyse(parse_results(results)).picks
    for device, p in picks.items():
        assert f"<td>{device}</td>" in answer
        assert f"use {p.variant.variant_id}" in answer  # target 2.7: the largest int8 meets it
        assert f"{p.variant.loss.test_bpb:.4f}" in answer
    assert "measured" in answer and "predicted" in answer
    assert "within noise" in text[starts[2] : starts[3]]  # the comparison flags s0/int8_dynamic
    # degradation law table: the fixture's ladder is too short for a law, and the row says why
    deg = text[starts[3] : starts[4]]
    assert "γ_N" in deg and "<td>none</td>" in deg and "no law fitted, per-size δ only" in deg
    assert "lifetime" in text[starts[4] : starts[5]] and "kWh" in text[starts[4] : starts[5]]
    nav = re.search(r"<nav>(.*?)</nav>", text).group(1)
    assert all(f'href="#{s}"' in nav for s in SECTIONS[1:])


def test_page_is_self_contained(built):
    _, _, text, page = built
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert all(u.startswith(("data:image/png;base64,", "#")) for u in page.urls)
    assert "http://" not in text and "https://" not in text and "url(" not in text


def test_user_text_is_escaped_everywhere():
    evil_study, evil_recipe = "<script>alert(1)</script>", 'q<marquee>"&$x$'
    results = full_results(recipes={evil_recipe: 0.5})
    results["study"] = evil_study
    text, summary = _page(results)
    page = _parse(text)
    assert "script" not in page.tags and "marquee" not in page.tags  # no markup came through
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and evil_study in "".join(page.text)
    assert "q&lt;marquee&gt;&quot;&amp;$x$" in text and evil_recipe in "".join(page.text)
    assert evil_recipe not in text  # never raw
    assert evil_study in summary.splitlines()[0]


def test_summary_answers_first(built):
    files, results, _, _ = built
    lines = files.summary.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"# edgescale · {results['study']}"
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    table = lines[start : lines.index("", start)]  # the answer table (the matched-cost pairs table follows later)
    assert table[0].startswith("| device | answer") and len(table) == 2 + 2  # header, rule, host, rpi5-8gb
    assert "use s2/int8_dynamic" in table[2] and "measured" in table[2] and "predicted" in table[3]
    text = "\n".join(lines)
    assert text.index("| device") < text.index("## Train small") < text.index("## Recipes compared")
    assert "[0.97, 1.12]~" in text  # the comparison, within noise marked
    assert all(name in text for name in FIGURES.values())


def test_answer_plans_a_model_when_no_variant_meets_the_target():
    text, summary = _page(full_results(target=2.3))  # below every variant, above the law's E
    answer = text[text.index('id="answer"') : text.index('id="frontier"')]
    assert answer.count("train a new model") == 2 and "then " in answer
    assert "train a new model" in summary


def test_answer_says_infeasible_with_the_reason():
    text, summary = _page(full_results(target=0.9))  # below the law's E (1.0): no model reaches it
    answer = text[text.index('id="answer"') : text.index('id="frontier"')]
    assert answer.count("infeasible") >= 2 and "E" in answer
    assert "**infeasible**" in summary


def test_no_target_no_pick():
    text, summary = _page(full_results(target=None))
    assert "no pick" in text and "no loss_target_bpb" in summary


def test_report_tolerates_a_sparse_run(tmp_path):
    """An older, thinner results.json: one recipe, host only, no curves, no scaling fit."""
    results = hm.results([hm.variant(f"s{i}/fp32", n=10_000 * 4**i, val=3 - 0.3 * i, decode={"host": 0.1 * (i + 1)})
                          for i in range(3)], law=None)  # fmt: skip
    files = build_report(parse_results(results), tmp_path)
    assert {"frontier", "frontier_devices", "latency", "plan"} <= set(files.figures)
    assert not {"compare", "degradation", "scaling", "loss_curves"} & set(files.figures)
    text = files.html.read_text(encoding="utf-8")
    assert "No compare figure" in text or "nothing to draw" in text
    page = _parse(text)
    assert len([u for u in page.urls if u.startswith("data:")]) == len(files.figures)


def test_odd_names_in_every_figure(tmp_path):
    """``$`` in user text must not start matplotlib's mathtext (an unbalanced one raises)."""
    results = full_results(recipes={"a $ b": 0.5})
    results["study"] = "$x^{$ 50% of $\\alpha"
    results["variants"][0]["size"] = "$s0"
    files = build_report(parse_results(results), tmp_path)
    assert len(files.figures) == len(FIGURES)


def test_scaling_section_flags_an_unreliable_plan():
    text, _ = _page(_with_scaling(_results()))
    assert "Scaling law fitted" in text and "not identified" in text and "Not reliable" in text and "∞" in text


def test_variants_table_and_speedup_flags():
    results = _results()
    slow = results["variants"][3]["latency"]["host"]["decode_speedup_vs_fp32"]
    slow.update(speedup=0.8, low=0.7, high=0.9, within_noise=False, slower=True)
    results["variants"][6]["loss"]["validation"]["bits_per_byte"] = 4.0  # s3/fp32: now off the front
    text, _ = _page(results)
    table = text[text.index('id="variants"') : text.index('id="protocol"')]
    assert _parse(table).rows == 1 + 8
    assert '<span class="bad">slower</span>' in table and table.count("within noise") >= 3
    assert table.count('<td class="ok">✓</td>') == 7
    assert "ab" * 32 in text and "Test CPU" in text and "0.10 / 0.20 / 0.30" in text


def test_html_tolerates_missing_optional_parts():
    results = _results()
    del results["variants"][0]["latency"], results["variants"][1]["loss"]["test"], results["machine"]
    del results["protocol"]["batch_size"]  # max_tokens, which this deleted before, is required by the schema
    text, _ = _page(results)
    assert "<td>–</td>" in text and 'id="answer"' in text


def test_distillation_section():
    pair = {
        "student": "s0-kd",
        "scratch": "s0",
        "teacher": "s3",
        "tokens": 1000,
        "val_bpb_distilled": 3.7,
        "val_bpb_scratch": 3.6,
        "test_bpb_distilled": 3.8,
        "test_bpb_scratch": 3.7,
    }
    results = {
        **_results(),
        "distillation": {"alpha": 0.5, "temperature": 2.0, "teacher": "s3", "teacher_val_bpb": 2.8, "pairs": [pair]},
    }
    text, _ = _page(results)
    assert 'id="distillation"' in text and "s0-kd" in text and "+0.1000" in text


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgescale.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_report_command_rebuilds_an_old_run(tmp_path):
    """``edgescale report RUN_DIR --out DIR`` on a results.json without ``analysis``: recomputed,
    every file written to DIR, the run directory itself untouched."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(full_results()))
    before = (run / "results.json").read_bytes()
    r = _cli("report", run, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "report.html" in r.stderr
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == {*FIGURES.values(), "report.html", "summary.md"}
    assert [p.name for p in run.iterdir()] == ["results.json"] and (run / "results.json").read_bytes() == before


def test_report_command_refuses_a_directory_without_results(tmp_path):
    r = _cli("report", tmp_path)
    assert r.returncode == 2 and "results.json" in r.stderr and str(tmp_path) in r.stderr


def _trusted(results: dict) -> dict:
    """``results`` with what summary.md reports on trust: an A/A control, the load flag, a bootstrap
    that dropped draws, and a distilled student with seed deltas against both scratch twins."""
    tie = {"within_noise": True, "slower": False}
    results["measurement"] |= {
        "aa": {"variant": "s0/fp32", "prefill": {"speedup": 1.01, "low": 0.97, "high": 1.05, **tie},
               "decode": {"speedup": 1.012, "low": 0.99, "high": 1.03, **tie},
               "noise_floor": {"prefill": 0.05, "decode": 0.03}},
        "loaded": False,
    }  # fmt: skip
    results["scaling"]["law"] |= {"boot_n": 200, "boot_dropped": 7, "boot_unit": "run", "form": "L = E + A/N^α + B/D^β"}
    delta = {"split": "validation", "se": 0.01, "df": 4.0, "n_distilled": 3, "n_scratch": 3}
    results["distillation"] = {
        "alpha": 0.5, "temperature": 2.0, "teacher": "s2", "teacher_val_bpb": 2.6,
        "pairs": [{"student": "s0-kd", "scratch": "s0", "teacher": "s2", "tokens": 1000, "val_bpb_distilled": 3.0,
                   "val_bpb_scratch": 3.04, "test_bpb_distilled": 3.1, "test_bpb_scratch": 3.12, "seeds": [0, 1, 2],
                   "deltas": [{"twin": "equal_tokens", "mean": -0.041, "lo": -0.069, "hi": -0.013, **delta},
                              {"twin": "equal_compute", "mean": 0.012, "lo": -0.016, "hi": 0.04, **delta}]}],
    }  # fmt: skip
    return results


def test_summary_says_pairs_distillation_fit_and_timing():
    _, summary = _page(_trusted(full_results(target=2.6)))
    lines = summary.splitlines()
    # the matched-cost pairs at equal bytes per token: every compressed variant, matched baseline, Δ with its interval
    head = lines.index("| variant | matched baseline | Δ bpb [low, high] | verdict |")
    rows = [line for line in lines[head + 2 :] if line.startswith("| ")]
    assert rows and all(re.search(r"\| [+-]\d\.\d{4} \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\] \| (better|worse|tie) \|$", r)
                        or "(no interval) | unknown |" in r for r in rows)  # fmt: skip
    assert any(re.match(r"\| s\d/\w+ \| [01]\.\d\d·s\d/fp32 \+ [01]\.\d\d·s\d/fp32 \|", r) for r in rows)
    # the distillation deltas per twin, with the 95% interval and the seed counts
    assert "- s0-kd − s0 (equal tokens), n = 3 KD vs 3 scratch seeds: validation -0.0410 [-0.0690, -0.0130]" in lines
    assert "- s0-kd − s0 (equal compute), n = 3 KD vs 3 scratch seeds: validation +0.0120 [-0.0160, +0.0400]" in lines
    fit = next(line for line in lines if line.startswith("- Scaling fit:"))
    assert "form L = E + A/N^α + B/D^β; identified; bootstrap 200 refits over whole runs, 7 dropped" in fit
    timing = next(line for line in lines if line.startswith("- Timing:"))
    assert "A/A (s0/fp32 timed twice) decode 1.012× [0.990, 1.030], noise floor decode ±3.0%" in timing
    assert timing.endswith("machine not loaded")


def test_summary_says_an_unidentified_fit_and_a_loaded_machine():
    results = _trusted(full_results(target=2.6))
    results["scaling"]["law"]["unidentified"] = {"E": "collapsed to 1e-10"}
    results["measurement"]["loaded"] = True
    del results["distillation"]["pairs"][0]["deltas"]  # an older run: one seed
    _, summary = _page(results)
    fit = next(line for line in summary.splitlines() if line.startswith("- Scaling fit:"))
    assert "unidentified (E not identified by" in fit and "train sizes of about" in fit
    assert "timings are suspect" in summary
    assert "- s0-kd − s0: validation -0.0400, one seed: no interval" in summary
