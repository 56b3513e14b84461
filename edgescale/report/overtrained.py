"""The overtrained-parents verdicts (benchmarks/overtrained.py) as a report section and as markdown.

The benchmark runs several studies (seeds, and two token ratios) and writes its tables as JSON,
``overtrained.json``, into the first seed's run directory; a report built there renders this
section from that file (results.json, typed and closed, is left as it is). Nothing here computes a
statistic: the intervals and verdicts are the benchmark's (Welch over seeds), shown as measured.

The section also holds the measured pruning verdict against the run's "train small, or train big
and compress?" answer (edgescale.report.routes), which comes from the law and the frontier.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

FILE = "overtrained.json"
TITLE = "Overtrained parents: compress, or train the small shape from scratch?"
_BASELINES = (("scratch_a", "parent + recovery tokens"), ("scratch_b", "parent tokens alone"))


def load(root: Path | None) -> dict | None:
    """The benchmark's tables in run directory ``root``, or None (no file, or not readable JSON)."""
    path = Path(root) / FILE if root is not None else None
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "pruning" in data else None


def _ci(d: dict | None, sign: str = "+") -> str:
    """mean [lo, hi]; ``sign`` "" for a loss rather than a difference."""
    if not d or d.get("mean") is None:
        return "–"
    if d.get("lo") is None:
        return f"{d['mean']:{sign}.4f} (one seed)"
    return f"{d['mean']:{sign}.4f} [{d['lo']:{sign}.4f}, {d['hi']:{sign}.4f}]"


def _ses(values: list | None) -> str:
    return ", ".join("–" if v is None else f"{v:.4f}" for v in values or []) or "–"


def _match(row: dict) -> str:
    out = []
    for m in row.get("match_over_recovery") or []:
        out.append("–" if m is None else f"{m[0]}{m[1]:.1f}×")
    return ", ".join(out) or "–"


def pruning_rows(t: dict) -> list[list[str]]:
    rows = []
    for r in t.get("pruning", []):
        size = t.get("sizes", {}).get(r["size"], {})
        cells = [r["size"], f"{size.get('params_total', 0):,}", r["recipe"], _ci(r["pruned_bpb"], "")]
        for key, _ in _BASELINES:
            b = r[key]
            cells += [_ci(b), b["verdict"], _ses(b.get("paired_se_per_seed"))]
        cells.append(_match(r))
        rows.append(cells)
    return rows


def quant_rows(t: dict) -> list[list[str]]:
    return [
        [
            r["size"],
            r["recipe"],
            _ci(r["delta_low_ratio"]),
            _ci(r["delta_high_ratio"]),
            _ci(r["difference"]),
            r["difference"]["verdict"],
            f"{_ses(r.get('paired_se_low_ratio'))} | {_ses(r.get('paired_se_high_ratio'))}",
        ]
        for r in t.get("quantization", [])
    ]


PRUNE_HEAD = [
    "size",
    "N total",
    "recipe",
    "pruned+recovered bpb",
    "Δ vs scratch (parent+recovery tokens)",
    "verdict",
    "paired SE/seed",
    "Δ vs scratch (parent tokens)",
    "verdict",
    "paired SE/seed",
    "scratch tokens to match / recovery tokens (per seed)",
]


def quant_head(t: dict) -> list[str]:
    lo, hi = t["quantization"][0]["ratios"] if t.get("quantization") else (20, 200)
    return [
        "size",
        "recipe",
        f"Δloss at {lo} tok/param",
        f"Δloss at {hi} tok/param",
        f"Δ({hi}) − Δ({lo})",
        "verdict",
        f"paired SE/seed ({lo} | {hi})",
    ]


def measured_route(t: dict) -> str | None:
    """``train small``, ``train big and compress`` or None: what the pruning verdicts against the
    scratch twin (parent + recovery tokens) say where every resolved one agrees (and one is resolved)."""
    said = {
        "train small" if "scratch wins" in r["scratch_a"]["verdict"] else "train big and compress"
        for r in t.get("pruning", [])
        if r["scratch_a"]["verdict"].startswith(("scratch wins", "compression wins"))
    }
    return said.pop() if len(said) == 1 else None


def route_lines(t: dict) -> list[str]:
    """The measured verdict next to the run's route answer per device: supported, contradicted or neither."""
    measured = measured_route(t)
    head = (
        f"Measured in this regime (pruning vs its scratch twin): {measured}."
        if measured
        else "Measured in this regime (pruning vs its scratch twin): no single answer (unresolved or mixed)."
    )
    lines = [head]
    for dev, r in (t.get("routes") or {}).items():
        law = r.get("cheaper")
        if law is None or measured is None:
            rel = "neither supports nor contradicts it"
        else:
            rel = "supports it" if law == measured else "contradicts it"
        lines.append(f"{dev}: the report's route answer is {law or 'a tie / no answer'}; the measured verdict {rel}.")
    return lines


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _intro(t: dict) -> str:
    epochs = ", ".join(f"{s} {e:.2f}" for s, e in (t.get("epochs") or {}).items() if e is not None)
    return (
        f"Split: {t.get('split')}; {t.get('seeds')} seeds; bits per byte through onnxruntime. Intervals: Welch 95% "
        "over per-seed values (quantization: the per-seed paired difference quantized − fp32); paired SE/seed: "
        f"the within-run paired NLL standard error of each seed's difference. Epochs over the train split: {epochs}."
    )


def markdown(t: dict) -> str:
    """The benchmark's tables and verdicts as markdown (printed, saved, and the summary's section)."""
    parts = [
        f"## {TITLE}",
        _intro(t),
        "### Pruned + recovered vs the same shape from scratch (Δ = pruned − scratch; negative: compression wins)",
        _md_table(PRUNE_HEAD, pruning_rows(t)),
        "### Post-training quantization Δloss at two token ratios (same N)",
        _md_table(quant_head(t), quant_rows(t)),
        "### Routes",
        "\n".join(f"- {line}" for line in route_lines(t)),
    ]
    return "\n\n".join(parts) + "\n"


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>"


def html(t: dict) -> str:
    """The section's body: the per-size verdicts, both tables, and the routes line."""
    verdicts = "".join(
        f"<li>{escape(r['size'])} {escape(r['recipe'])}: vs scratch at parent + recovery tokens, "
        f"{escape(r['scratch_a']['verdict'])}; vs scratch at the parent's tokens, "
        f"{escape(r['scratch_b']['verdict'])}</li>"
        for r in t.get("pruning", [])
    )
    verdicts += "".join(
        f"<li>{escape(r['size'])} {escape(r['recipe'])}: {escape(r['difference']['verdict'])}</li>"
        for r in t.get("quantization", [])
    )
    return (
        f"<p>{escape(_intro(t))}</p><ul>{verdicts}</ul>"
        + _html_table(PRUNE_HEAD, pruning_rows(t))
        + _html_table(quant_head(t), quant_rows(t))
        + "<ul>"
        + "".join(f"<li>{escape(line)}</li>" for line in route_lines(t))
        + "</ul>"
    )
