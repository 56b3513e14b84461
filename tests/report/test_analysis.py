"""analyse(): one typed, strict-JSON analysis with every part the report shows; report/ imports without torch."""

import json
import subprocess
import sys

import handmade_results as handmade

from edgescale.report.analysis import analyse
from edgescale.results.analysis_schema import Analysis, NewModelPick, VariantPick
from edgescale.results.base import clean


def test_analysis_holds_every_part_as_strict_json():
    res = handmade.results(handmade.ladder({"int4": 2.0}), target=2.8)
    out = analyse(handmade.typed(res))
    assert isinstance(out, Analysis)
    json.dumps(out.data(), allow_nan=False)  # NaN would be invalid JSON for the report and other tools
    assert out.devices == ["host", "rpi5-8gb"] and out.loss_target_bpb == 2.8
    assert {"bytes_per_decoded_token", "rpi5-8gb_decode_ms", "host_decode_ms"} <= set(out.frontiers)
    # 3 sizes over 1.2 decades: no degradation law (it needs 5 over 1.5), the per-size δ kept
    deg = out.degradation["int4"]
    assert deg.form == "none" and len(deg.points) == 3 and deg.curve is None and "3 sizes" in deg.notes[0]
    assert set(out.picks) == {"host", "rpi5-8gb"} and isinstance(out.picks["host"], VariantPick)
    assert out.picks["host"].status == "ok"
    assert out.compare.device == "host"
    # the only fp32 size meeting 2.8 is the largest: its own int4 is no "train big" route (same model)
    pi = out.routes.per_device["rpi5-8gb"]
    assert pi.cheaper is None and "not a route" in pi.statement
    assert {(p.variant_id, p.axis) for p in out.routes.pairs} >= {("s2/int4", "bytes_per_decoded_token")}
    plan = analyse(handmade.typed(res), target=1.9, device="rpi5-8gb").picks["rpi5-8gb"]
    assert isinstance(plan, NewModelPick) and plan.status == "plan" and plan.best.plan.n_params > 0
    # what is written reads back to the same typed section, and the same bytes
    assert Analysis.model_validate_json(json.dumps(out.data())).data() == out.data()


def test_no_target_no_picks():
    res = handmade.results(handmade.ladder({}), target=None)
    out = analyse(handmade.typed(res))
    assert out.picks == {} and "no pick" in out.picks_note


def test_clean_makes_strict_json():
    assert clean({"a": float("nan"), "b": (1, float("inf")), 3: [2.0]}) == {"a": None, "b": [1, None], "3": [2.0]}


def test_report_imports_without_torch():
    mods = ", ".join(
        f"edgescale.report.{m}"
        for m in ("frontier", "degradation", "pick", "compare", "routes", "analysis", "extrapolate")
    )
    code = f"import sys, {mods}; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False False"
