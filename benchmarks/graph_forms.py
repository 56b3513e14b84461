"""Old graph against new graph on a finished study's trained models: the same losses, and how much faster.

    .venv/bin/python benchmarks/graph_forms.py                       # runs/default, every ladder size
    .venv/bin/python benchmarks/graph_forms.py --run RUN_DIR --sizes s2,s3 --repeats 30 --json out.json

For each ladder size of a finished run (``edgescale run``) the final checkpoint of the study's seed
(the one its fp32 and int8_dynamic variants were exported from, found through the run's cache
records and loaded through the GPT backend) is exported twice: ``traced`` (torch's exporter,
standard ops: every run's graph before the fused writer) and ``fused`` (:mod:`edgescale.export.fused`:
GroupQueryAttention, SkipLayerNormalization, BiasGelu), and each is quantized with the shipped
int8_dynamic recipe's step. Then:

(a) loss: validation bits per byte of every file through onnxruntime with the study's evaluator and
    evaluation settings (``edgescale.bench.loss``, read from the run's manifest), old, new and the
    paired difference new - old with its window-clustered standard error, as the study reports them;
    plus the loss the study recorded for that variant (the graph form the run used reproduces it) and
    each float graph's check against torch (max |Δlogit|, greedy tokens identical);
(b) latency: every file of every size in ONE interleaved ``measure_variants`` run at the study's
    measurement settings (prompt, decode context, threads, processes); per size and recipe the decode
    and prefill speed-up new/old (ratio of medians, two-level bootstrap 95% interval, judged against
    the A/A noise floor), the KV binding the worker used, and the node counts (file, and optimized
    graph where the worker profiled it);
(c) at the largest size: every shipped recipe that is ONNX steps after the export, applied to the new
    graph, its loss change against the new fp32 graph (paired, 95% interval), beside the same change
    under the old graph. No shipped recipe declares a loss bound today: the table says so.

Speed-ups move with machine load: the header gives the load during the timed run; measure on a
quiet machine. Nothing is written into the run directory (exports go to a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

RECIPES = ("fp32", "int8_dynamic")  # measured in both graph forms, every size
GRAPHS = ("traced", "fused")  # old, new


@dataclass(frozen=True)
class StudyRun:
    root: Path
    study: object  # edgescale.config.Study
    corpus: object  # edgescale.data.corpus.Corpus
    manifest: dict
    results: dict


class RunMissing(Exception):
    """No finished run at the given directory."""


def open_run(root: Path) -> StudyRun:
    """The study (its study.yaml if the run has one, else the manifest's resolved copy), its corpus
    (checked against the hashes the run recorded) and its results."""
    from edgescale.config import Study
    from edgescale.data.corpus import load_corpus
    from edgescale.yamlfile import read_yaml

    if not (root / "manifest.json").is_file() or not (root / "results.json").is_file():
        raise RunMissing(f"no finished study run at {root} (manifest.json, results.json): run `edgescale run` first")
    manifest = json.loads((root / "manifest.json").read_text())
    raw = read_yaml(root / "study.yaml") if (root / "study.yaml").is_file() else manifest["study"]
    study = Study.model_validate(raw)
    base = Path(manifest.get("study_file") or root).parent
    corpus = load_corpus(study.corpus, base)
    recorded = manifest["corpus"]["splits"]
    for split in ("train", "validation"):
        if corpus[split].sha256 != recorded[split]["sha256"]:
            raise RunMissing(f"the {split} split read now differs from the one {root} was run on (sha256)")
    return StudyRun(root, study, corpus, manifest, json.loads((root / "results.json").read_text()))


def ladder(run: StudyRun, only: list[str] | None) -> list[dict]:
    """The ladder's sizes as the results recorded them (shape, tokens, seed), in ladder order."""
    from edgescale.models.shape import ladder_sizes

    if run.study.ladder is None:
        raise RunMissing(f"{run.root} is not a ladder study (no ladder: in its study)")
    names = [r.name for r in ladder_sizes(run.study.ladder, run.corpus.vocab_size)]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise RunMissing(f"--sizes {','.join(unknown)}: not in the ladder ({', '.join(names)})")
    by_name = {s["size"]: s for s in run.results["sizes"]}
    return [by_name[n] for n in names if only is None or n in only]


def trained_checkpoint(run: StudyRun, size: dict) -> Path:
    """The final checkpoint of ``size`` at the study's seed: the cache record of its training run
    (a ``checkpoint`` with no teacher, the size's shape, tokens, seed and final validation point),
    its artifact verified against the recorded hash."""
    from edgescale.export.canonical import artifact_sha256
    from edgescale.models.checkpoint import read_spec

    shape = (size["n_layer"], size["n_head"], size["n_embd"])
    found = []
    for p in sorted((run.root / "cache").glob("*.json")):
        rec = json.loads(p.read_text())
        if not isinstance(rec.get("checkpoint"), str) or rec.get("teacher") is not None or "curve" not in rec:
            continue
        if rec.get("seed") != run.study.seed or rec.get("tokens") != size["train_tokens"]:
            continue
        if rec["curve"][-1].get("val_bpb") != size["curve"][-1].get("val_bpb"):
            continue
        path = run.root / rec["checkpoint"]
        spec = read_spec(path) if path.is_file() else None
        if spec is not None and (spec.n_layer, spec.n_head, spec.n_embd) == shape:
            found.append((path, rec["sha256"]))
    if len(found) != 1:
        raise RunMissing(f"{size['size']}: {len(found)} training records match its shape, tokens and seed (want 1)")
    path, sha = found[0]
    if artifact_sha256(path) != sha:
        raise RunMissing(f"{path} fails its recorded hash")
    return path


def onnx_step_chain(name: str):
    """The shipped recipe ``name``'s compiled chain, or None with the reason it is not an ONNX-stage
    recipe (a torch-stage step before the export, or a Hugging Face-only export)."""
    from edgescale.compress.recipe import load_recipe

    chain = load_recipe(name)
    first = chain.steps[0].op if chain.steps else ""
    if first == "export.genai":
        return None, "export.genai (Hugging Face models only)"
    if first != "export.onnx":
        return None, f"{first} before the export (torch-stage: trains or prunes; the graph form is not its question)"
    return chain, ""


def apply_chain(chain, fp32: Path, work: Path, run: StudyRun) -> Path:
    """The ONNX-stage steps of ``chain`` (after its export) applied to ``fp32``, each in its own folder."""
    from edgescale.compress.registry import StepContext

    path = fp32
    for i, step in enumerate(chain.steps[1:]):
        folder = work / f"{chain.name}.{i}"
        folder.mkdir(parents=True)
        ctx = StepContext(folder, seed=run.study.seed, log=lambda m: None, corpus=run.corpus, target=chain.target)
        path = Path(step.definition.fn(path, step.config, ctx))
    return path


def export_forms(model, work: Path, run: StudyRun) -> dict[tuple[str, str], Path]:
    """(recipe, graph) -> file: both graph forms of ``model``, and the int8_dynamic recipe of each."""
    from edgescale.export.fused import export_fused
    from edgescale.export.onnx import export_onnx

    int8, _ = onnx_step_chain("int8_dynamic")
    out = {}
    for graph, writer in (("traced", export_onnx), ("fused", export_fused)):
        folder = work / graph
        folder.mkdir(parents=True)
        out["fp32", graph] = writer(model, folder / "model.onnx")
        out["int8_dynamic", graph] = apply_chain(int8, out["fp32", graph], folder, run)
    return out


def validation_loss(path: Path, run: StudyRun):
    """Validation loss exactly as the study scored its variants (GPT backend's ``score``, without
    its causality probes): the evaluation settings and segment sampling of the run's study."""
    from edgescale.bench.loss import onnx_loss
    from edgescale.data.corpus import eval_spans

    e, split = run.study.evaluation, run.corpus["validation"]
    spans = eval_spans(split, e.max_bytes, e.segments, e.sampling)
    return onnx_loss(path, split, e.context_length, e.stride, e.max_bytes, e.batch_size, spans)


def recorded_loss(run: StudyRun, variant_id: str) -> float | None:
    v = next((v for v in run.results["variants"] if v["variant_id"] == variant_id), None)
    return (v or {}).get("loss", {}).get("validation", {}).get("bits_per_byte")


def torch_check(model, path: Path, seed: int) -> str:
    """The export step's check against torch, in words (a mismatch is reported, not raised)."""
    from edgescale.export.verify import verify_export

    try:
        c = verify_export(model, path, seed=seed)
    except Exception as e:  # ExportMismatch: the row says so
        return f"FAILS: {e}"
    return f"max|Δlogit| {c['max_abs_logit_diff']:.1e}, {c['greedy_tokens_identical']} greedy tokens = torch"


def loss_row(size: str, recipe: str, old, new, recorded: float | None) -> dict:
    from edgescale.results.nll import paired_delta

    d = paired_delta(new.windows, old.windows)
    return {
        "size": size,
        "recipe": recipe,
        "old_bpb": old.bits_per_byte,
        "old_se_bpb": old.se_bpb,
        "new_bpb": new.bits_per_byte,
        "new_se_bpb": new.se_bpb,
        "delta_bpb": d.bpb,
        "delta_se_bpb": d.se_bpb,
        "delta_low": d.low,
        "delta_high": d.high,
        "study_recorded_bpb": recorded,
    }


def node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def _graph_nodes(profile) -> int | None:
    """Nodes of the optimized graph from the worker's profile (a dict or a VariantProfile), if profiled."""
    if profile is None:
        return None
    return profile.get("graph_nodes") if isinstance(profile, dict) else getattr(profile, "graph_nodes", None)


def latency_rows(report, sizes: list[dict], files: dict[str, Path]) -> list[dict]:
    """Per size and recipe: new/old speed-ups of both phases against the run's A/A noise floor."""
    from edgescale.bench.measure import phase_ratio

    floor = report.aa.noise_floor if report.aa else {"prefill": 0.0, "decode": 0.0}
    seed, rows = report.spec["seed"], []
    for size in sizes:
        for recipe in RECIPES:
            old, new = (f"{size['size']}/{recipe}/{g}" for g in GRAPHS)
            row = {"size": size["size"], "recipe": recipe, "n_layer": size["n_layer"]}
            for phase in ("decode", "prefill"):
                r = phase_ratio(report.variants[old], report.variants[new], phase, seed, floor[phase])
                row[phase] = {"speedup": r.speedup, "low": r.low, "high": r.high, "within_noise": r.within_noise}
                for g, vid in zip(GRAPHS, (old, new), strict=True):
                    row[f"{phase}_ms_p50_{g}"] = getattr(report.variants[vid], f"{phase}_ms_p50")
            for g, vid in zip(GRAPHS, (old, new), strict=True):
                prof = report.profiles.get(vid)
                row[f"nodes_{g}"] = node_count(files[vid])
                row[f"optimized_nodes_{g}"] = _graph_nodes(prof)
                row[f"kv_buffer_{g}"] = report.variants[vid].kv_buffer or "?"
            rows.append(row)
    return rows


def recipe_rows(run: StudyRun, fp32: dict[str, Path], base: dict[str, object], work: Path) -> list[dict]:
    """(c): each shipped ONNX-stage recipe under both graphs, its paired loss change against fp32."""
    from edgescale.config import builtin_recipes
    from edgescale.results.nll import paired_delta

    rows = []
    for name in builtin_recipes():
        chain, why = onnx_step_chain(name)
        if chain is None:
            rows.append({"recipe": name, "skipped": why})
            continue
        row = {"recipe": name, "graph_chosen": chain.steps[0].config.graph, "bound_bpb": None}
        for g in GRAPHS:
            try:
                res = validation_loss(apply_chain(chain, fp32[g], work / g / "recipes", run), run)
            except Exception as e:  # a recipe that fails on a graph form is a finding, not a crash
                row[g] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                continue
            d = paired_delta(res.windows, base[g].windows)
            row[g] = {"bpb": res.bits_per_byte, "se_bpb": res.se_bpb, "delta_bpb": d.bpb, "low": d.low, "high": d.high}
        rows.append(row)
    return rows


def header(report) -> dict:
    from edgescale.compress.feasibility import host_target

    m = report.machine
    return {
        "cpu": m.get("cpu_model"),
        "isa": sorted(host_target().isa),
        "logical_cpus": m.get("logical_cpus"),
        "threads": m.get("threads"),
        "onnxruntime": m.get("onnxruntime"),
        "load": report.load,
        "spec": report.spec,
        "aa": None if report.aa is None else {"variant": report.aa.variant, "noise_floor": report.aa.noise_floor},
    }


def measure_spec(run: StudyRun, repeats: int | None):
    """The study's measurement settings (as the pipeline builds them), ``repeats`` overriding."""
    from edgescale.bench.measure import MeasureSpec

    m = run.study.measurement
    return MeasureSpec(
        prompt_len=m.prompt_len,
        decode_context=m.decode_context,
        repeats=repeats or m.repeats,
        warmup=m.warmup,
        threads=m.threads,
        processes=m.processes,
        seed=run.study.seed,
        timeout_s=3600,
    )


def collect(run: StudyRun, sizes: list[dict], repeats: int | None, work: Path) -> dict:
    """Export, score and time everything; the whole result as one JSON-able dict."""
    from edgescale.backends.gpt import GPTBackend
    from edgescale.bench.measure import measure_variants

    backend, files, losses, checks = GPTBackend(run.study, run.corpus), {}, [], {}
    largest = {}
    for size in sizes:
        name = size["size"]
        model = backend.load(trained_checkpoint(run, size))
        forms = export_forms(model, work / name, run)
        scored = {key: validation_loss(path, run) for key, path in forms.items()}
        for g in GRAPHS:
            checks[f"{name}/{g}"] = torch_check(model, forms["fp32", g], run.study.seed)
        for recipe in RECIPES:
            old, new = scored[recipe, "traced"], scored[recipe, "fused"]
            losses.append(loss_row(name, recipe, old, new, recorded_loss(run, f"{name}/{recipe}")))
        files |= {f"{name}/{recipe}/{g}": path for (recipe, g), path in forms.items()}
        largest = {"size": name, "fp32": {g: forms["fp32", g] for g in GRAPHS}, "scored": scored}
    spec = measure_spec(run, repeats)
    report = measure_variants(files, spec, baseline=next(iter(files)))
    base = {g: largest["scored"]["fp32", g] for g in GRAPHS}
    recipes = recipe_rows(run, largest["fp32"], base, work / largest["size"])
    return {
        "run": str(run.root),
        "header": header(report),
        "loss": losses,
        "torch_check": checks,
        "latency": latency_rows(report, sizes, files),
        "recipes": {"size": largest["size"], "rows": recipes},
    }


def _ci(r: dict) -> str:
    flag = " ~" if r["within_noise"] else ""
    return f"{r['speedup']:.2f}× [{r['low']:.2f}, {r['high']:.2f}]{flag}"


def _pm(x: float, se: float) -> str:
    return f"{x:.6f} ± {se:.5f}" if math.isfinite(se) else f"{x:.6f} ± —"


def print_tables(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con, h = Console(width=max(150, Console().width)), out["header"]
    load = h["load"] or {}
    con.print(
        f"[bold]graph forms[/] of {out['run']}: old = traced, new = fused\n"
        f"CPU {h['cpu']} ({h['logical_cpus']} logical), ISA {' '.join(h['isa'])}; onnxruntime {h['onnxruntime']}, "
        f"{h['threads']} threads; prompt {h['spec']['prompt_len']}, decode context {h['spec']['decode_context']}, "
        f"{h['spec']['repeats']} repeats in {h['spec']['processes']} processes\n"
        f"machine load: loaded={load.get('loaded')}, other runnable mean {load.get('other_runnable_mean')} "
        f"(limit {load.get('limit')}), 1-min load {load.get('load_avg_1min_start')} → {load.get('load_avg_1min_end')}"
    )
    t = Table(title="(a) validation bits per byte (± SE, window-clustered); Δ = new − old, paired")
    for col in ("size", "recipe", "old", "new", "Δ ± SE", "study recorded"):
        t.add_column(col, justify="left" if col in ("size", "recipe") else "right")
    for r in out["loss"]:
        rec = r["study_recorded_bpb"]
        t.add_row(
            r["size"],
            r["recipe"],
            _pm(r["old_bpb"], r["old_se_bpb"]),
            _pm(r["new_bpb"], r["new_se_bpb"]),
            f"{r['delta_bpb']:+.2e} ± {r['delta_se_bpb']:.1e}",
            "—" if rec is None else f"{rec:.6f}",
        )
    con.print(t)
    for k, v in out["torch_check"].items():
        con.print(f"  {k} fp32 against torch: {v}")
    _print_latency(con, out)
    _print_recipes(con, out["recipes"])


def _print_latency(con, out: dict) -> None:
    from rich.table import Table

    aa = out["header"]["aa"]
    floor = (
        ""
        if aa is None
        else f"; A/A noise floor ({aa['variant']}): " + ", ".join(f"{p} ±{f:.1%}" for p, f in aa["noise_floor"].items())
    )
    t = Table(title=f"(b) speed-up new/old, ratio of p50s [95% interval], ~ = within noise{floor}")
    cols = ("size", "recipe", "decode ms old→new", "decode ×", "prefill ms old→new", "prefill ×", "KV", "nodes")
    for col in cols:
        t.add_column(col, justify="left" if col in ("size", "recipe") else "right")
    for r in out["latency"]:
        opt = f" (opt {r['optimized_nodes_traced']}→{r['optimized_nodes_fused']})" if r["optimized_nodes_fused"] else ""
        t.add_row(
            f"{r['size']} ({r['n_layer']}L)",
            r["recipe"],
            f"{r['decode_ms_p50_traced']:.4f}→{r['decode_ms_p50_fused']:.4f}",
            _ci(r["decode"]),
            f"{r['prefill_ms_p50_traced']:.4f}→{r['prefill_ms_p50_fused']:.4f}",
            _ci(r["prefill"]),
            f"{r['kv_buffer_traced']}→{r['kv_buffer_fused']}",
            f"{r['nodes_traced']}→{r['nodes_fused']}{opt}",
        )
    con.print(t)


def _print_recipes(con, rec: dict) -> None:
    from rich.table import Table

    t = Table(title=f"(c) {rec['size']}: each shipped recipe's validation loss change vs fp32 (paired, 95% interval)")
    for col in ("recipe", "export", "new graph Δ bpb [95%]", "old graph Δ bpb [95%]", "bound"):
        t.add_column(col)
    for r in rec["rows"]:
        if "skipped" in r:
            continue
        cells = []
        for g in ("fused", "traced"):
            c = r[g]
            cells.append(c["error"] if "error" in c else f"{c['delta_bpb']:+.5f} [{c['low']:+.5f}, {c['high']:+.5f}]")
        t.add_row(r["recipe"], r["graph_chosen"], *cells, "none declared")
    con.print(t)
    for r in rec["rows"]:
        if "skipped" in r:
            con.print(f"  not run: {r['recipe']}: {r['skipped']}")
    con.print(
        "No shipped recipe (recipes/*.yaml, edgescale/compress) declares a loss bound: Δ is reported, not judged."
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/default"), help="a finished study run directory")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default: the study's)")
    ap.add_argument("--sizes", default=None, help="comma-separated ladder sizes (default: all)")
    ap.add_argument("--json", type=Path, default=None, help="also write everything measured here")
    args = ap.parse_args(argv)
    try:
        run = open_run(args.run)
        sizes = ladder(run, args.sizes.split(",") if args.sizes else None)
    except RunMissing as e:
        print(f"graph_forms: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgescale-graph-forms-") as tmp:
        out = collect(run, sizes, args.repeats, Path(tmp))
    print_tables(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
