"""frontier.png and report.html from a results dict: valid, self-contained, escaped."""

import base64
import struct
from html.parser import HTMLParser

import pytest

from edgescale.report.html import write_report
from edgescale.report.plots import plot_frontier


def _results(name="demo"):
    variants = []
    for i, n in enumerate([14_000, 56_000, 150_000, 450_000]):
        for recipe, shrink, speed in (("fp32", 1.0, None), ("int8_dynamic", 0.4, 1.1)):
            host = {
                "kind": "measured",
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
                        "flops_context": 128,
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
        },
        "measurement": {"prompt_len": 64, "decode_context": 128, "threads": 2, "repeats": 30},
        "machine": {"cpu_model": "Test CPU", "threads": 2, "load_avg_start": [0.1, 0.2, 0.3]},
        "sizes": sizes,
        "variants": variants,
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
        "target_bpb": 3.3,
        "n_params": 1e6,
        "n_tokens": 2e7,
        "tokens_per_param": 20,
        "compute_flops": 1.2e14,
        "predicted_loss_bpb": 3.3,
        "reliable": False,
        "caveat": "E not identified",
        "shape": {"n_layer": 4, "d_model": 144, "n_head": 9},
    }
    return {**results, "scaling": {"status": "fitted", "points": pts, "law": law, "plan_for_target": plan}}


def test_scaling_section_and_plot(tmp_path):
    from edgescale.report.plots import plot_scaling

    results = _with_scaling(_results())
    assert plot_scaling(results, tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    text = write_report(results, tmp_path, tmp_path / "report.html").read_text()
    assert "Scaling fit" in text and "not identified" in text and "Not reliable" in text and "∞" in text
    assert text.count("data:image/png;base64,") == 2


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

    path = plot_frontier(_results(), tmp_path / "frontier.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 1200 < width < 4000 and 400 < height < 1500  # three panels side by side
    assert matplotlib.image.imread(path).shape[:2] == (height, width)
    assert [p.name for p in tmp_path.iterdir()] == ["frontier.png"]  # written atomically, no temp left
    assert plot_frontier(_results(), tmp_path / "again.png").read_bytes() == data  # no timestamps: reproducible


@pytest.mark.parametrize("name", ["$x^{$", "a $ b", "50% of $\\alpha"])
def test_png_shows_odd_study_names_literally(tmp_path, name):
    results = _results(name)
    results["variants"][0]["size"] = "$s0"
    assert plot_frontier(results, tmp_path / "frontier.png").stat().st_size > 10_000


def test_png_tolerates_missing_latency(tmp_path):
    results = _results()
    for v in results["variants"]:
        del v["latency"]
    assert plot_frontier(results, tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_html_is_self_contained_complete_and_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    results = _results(evil)
    text = write_report(results, tmp_path, tmp_path / "report.html").read_text(encoding="utf-8")
    page = _parse(text)
    assert "script" not in page.tags and "link" not in page.tags
    assert page.urls and all(u.startswith("data:image/png;base64,") for u in page.urls)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert evil in "".join(page.text) and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert page.rows == 1 + 4 + 1 + 8  # header + 4 sizes, header + 8 variants
    for v in results["variants"]:
        assert f"<td>{v['variant_id']}</td>" in text
    assert text.count('<td class="ok">✓</td>') == 8  # a clean trade-off: every variant on the bytes front
    assert "within noise" in text and "measured on this host" in text and "kind: measured" in text
    assert "ab" * 32 in text and "Test CPU" in text and "0.10 / 0.20 / 0.30" in text


def test_html_embeds_an_existing_png_and_flags_slower(tmp_path):
    results = _results()
    png = plot_frontier(results, tmp_path / "frontier.png").read_bytes()
    slow = results["variants"][3]["latency"]["host"]["decode_speedup_vs_fp32"]
    slow.update(speedup=0.8, low=0.7, high=0.9, within_noise=False, slower=True)
    results["variants"][6]["loss"]["validation"]["bits_per_byte"] = 4.0  # s3/fp32: now off the front
    text = write_report(results, tmp_path, tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in text
    assert '<span class="bad">slower</span>' in text and text.count("within noise") >= 3
    assert text.count('<td class="ok">✓</td>') == 7


def test_html_tolerates_missing_optional_parts(tmp_path):
    results = _results()
    del results["variants"][0]["latency"], results["variants"][1]["loss"]["test"], results["machine"]
    del results["protocol"]["max_tokens"]
    text = write_report(results, tmp_path, tmp_path / "report.html").read_text(encoding="utf-8")
    assert _parse(text).rows == 14 and "<td>–</td>" in text


def test_distillation_section(tmp_path):
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
    text = write_report(results, tmp_path, tmp_path / "report.html").read_text()
    assert "Distillation" in text and "s0-kd" in text and "+0.1000" in text
