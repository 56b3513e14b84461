"""Every held-out loss a person reads carries its standard error, "3.0239 ± 0.0078", and "± —"
where the results file recorded none: pick's and compare's text, summary.md, report.html and
the console summary at the end of ``edgescale run``. Fails if the SE drops out of any of them."""

import json
import re

import pytest
from cli_runner import run_cli
from report_fixtures import full_results
from rich.console import Console

from edgescale.progress import Reporter, loss_text
from edgescale.report.analysis import analyse
from edgescale.report.compare import compare, table_lines
from edgescale.report.html import render
from edgescale.report.pick import Run as PickRun
from edgescale.report.pick import pick, summary_lines
from edgescale.report.summary import summary_text
from edgescale.results import parse_results

VAL_SE, TEST_SE = 0.0123, 0.0456  # chosen so they cannot be mistaken for any other number on the page
LOSS_SE = re.compile(r"\d+\.\d{4} ± (\d+\.\d{4}|—)")


def _with_se(data: dict, *, missing: str | None = None) -> dict:
    """``data`` with a standard error on every loss, except on ``missing``'s (an old results file)."""
    for v in data["variants"]:
        if v["variant_id"] != missing:
            v["loss"]["validation"]["se_bpb"] = VAL_SE
            if "test" in v["loss"]:
                v["loss"]["test"]["se_bpb"] = TEST_SE
    return data


def test_loss_text_style():
    assert loss_text(3.02391, 0.00781) == "3.0239 ± 0.0078"
    assert loss_text(3.0, None) == "3.0000 ± —"
    assert loss_text(3.0, float("nan")) == "3.0000 ± —"  # one scoring window: no error
    assert loss_text(None, 0.1) == "–"


def _pick_out(data: dict, target: float, device: str = "rpi5-8gb") -> dict:
    return pick([PickRun("demo", parse_results(data), None)], target, device)


def test_pick_text_shows_se_of_the_pick_and_of_the_cheaper_miss():
    data = _with_se(full_results())
    out = _pick_out(data, 2.7)
    assert out["status"] == "ok"
    assert out["variant"]["loss"]["validation_se_bpb"] == VAL_SE and out["variant"]["loss"]["test_se_bpb"] == TEST_SE
    text = "\n".join(summary_lines(out))
    assert f"validation {out['variant']['loss']['validation_bpb']:.4f} ± {VAL_SE:.4f} (selected on)" in text
    assert f"test {out['variant']['loss']['test_bpb']:.4f} ± {TEST_SE:.4f}" in text
    miss = out["cheaper_miss"]
    assert miss and miss["validation_se_bpb"] == VAL_SE
    assert f"cheaper but missing: {miss['variant_id']} at {miss['validation_bpb']:.4f} ± {VAL_SE:.4f}" in text


def test_pick_text_nearest_miss_and_old_results_without_se():
    out = _pick_out(full_results(), 1.0)  # no variant meets 1.0 bits/byte; the hand-made file has no se_bpb
    m = out["nearest_miss"]
    assert m["validation_se_bpb"] is None
    assert f"nearest miss: {m['variant_id']} at {m['validation_bpb']:.4f} ± — (misses by" in "\n".join(
        summary_lines(out)
    )


def test_compare_table_shows_validation_loss_with_se():
    data = _with_se(full_results(), missing="s1/fp32")
    cmp = compare(parse_results(data))
    lines = table_lines(cmp)
    assert "val bpb ± SE" in lines[1]
    by_id = {line.split()[0]: line for line in lines[2:] if "/" in line.split()[0]}
    for v in data["variants"]:
        val = v["loss"]["validation"]["bits_per_byte"]
        want = f"{val:.4f} ± —" if v["variant_id"] == "s1/fp32" else f"{val:.4f} ± {VAL_SE:.4f}"
        assert want in by_id[v["variant_id"]], (want, by_id[v["variant_id"]])
    assert all(r.validation_se_bpb in (VAL_SE, None) for t in cmp.sizes for r in t.rows)


def _page(data: dict) -> tuple[str, str]:
    typed = parse_results(data)
    analysis = analyse(typed)
    return render(typed, analysis, {}), summary_text(typed, analysis)


def test_summary_md_answer_table_shows_se():
    data = _with_se(full_results())
    _, md = _page(data)
    assert "| val bpb ± SE | test bpb ± SE |" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "**use " in line]
    assert rows and all(f"± {VAL_SE:.4f} | " in r and f"± {TEST_SE:.4f}" in r for r in rows)


def test_report_html_tables_show_se():
    data = _with_se(full_results(), missing="s2/int4_weight_only")
    page, _ = _page(data)
    assert "<th>val bpb ± SE</th><th>test bpb ± SE</th>" in page  # the answer and the variants tables
    for v in data["variants"]:
        val, test = v["loss"]["validation"]["bits_per_byte"], v["loss"]["test"]["bits_per_byte"]
        if v["variant_id"] == "s2/int4_weight_only":
            assert f"<td>{val:.4f} ± —</td><td>{test:.4f} ± —</td>" in page
        else:
            assert f"<td>{val:.4f} ± {VAL_SE:.4f}</td><td>{test:.4f} ± {TEST_SE:.4f}</td>" in page
    answer = page[page.index('id="answer"') : page.index("</section>")]
    assert f"± {VAL_SE:.4f}</td>" in answer and f"± {TEST_SE:.4f}" in answer
    assert "val bpb ± SE, own budget" in page


def test_console_summary_table_shows_se(tmp_path, capsys):
    data = _with_se(full_results(), missing="s0/fp32")
    data["sizes"][0] |= {"equal_tokens": 1_000_000, "val_bpb_at_equal_tokens": 3.0}  # as a run writes them
    Reporter(console=Console(stderr=True, width=250)).summary(data, tmp_path)
    out = capsys.readouterr().out
    assert "val bpb ± SE" in out and "test bpb ± SE" in out
    s1 = data["variants"][3]["loss"]  # s1/fp32, with its errors
    assert f"{s1['validation']['bits_per_byte']:.4f} ± {VAL_SE:.4f}" in out
    assert f"{s1['test']['bits_per_byte']:.4f} ± {TEST_SE:.4f}" in out
    assert f"{data['variants'][0]['loss']['validation']['bits_per_byte']:.4f} ± —" in out  # no SE recorded


@pytest.mark.slow
def test_pick_and_compare_cli_on_a_real_run_show_se(tiny_run):
    run_dir = tiny_run[1]
    results = json.loads((run_dir / "results.json").read_text())
    target = results["loss_target_bpb"]
    r = run_cli("pick", run_dir, "--loss-target-bpb", target, "--device", "host")
    assert r.returncode in (0, 3), r.stderr
    loss_lines = [line for line in r.stderr.splitlines() if " at " in line or "loss" in line]
    shown = [line for line in loss_lines if re.search(r"\d\.\d{4}", line) and "predicted loss" not in line]
    assert shown and all(LOSS_SE.search(line) for line in shown), r.stderr
    c = run_cli("compare", run_dir, "--device", "host")
    assert c.returncode == 0, c.stderr
    assert "val bpb ± SE" in c.stdout
    for v in results["variants"]:
        val = v["loss"]["validation"]
        se = val.get("se_bpb")
        assert f"{val['bits_per_byte']:.4f} ± {'—' if se is None else f'{se:.4f}'}" in c.stdout, v["variant_id"]


def test_report_html_routes_tables_show_se():
    """The train-small vs big+compress tables: each route's variant and each frontier point."""
    data = _with_se(full_results())
    page, _ = _page(data)
    routes = page[page.index("small: val bpb ± SE") :]
    assert "<th>val bpb ± SE</th>" in routes  # the frontier points' table
    assert len(re.findall(rf"<td>\d+\.\d{{4}} ± {VAL_SE:.4f}</td>", routes)) >= 2
    # a held-out loss follows a variant id, never bare (the law's predicted losses have no SE: not held out)
    assert not re.search(r"<td>s\d[^<]*</td><td>\d+\.\d{4}</td>", routes)
