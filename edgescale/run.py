"""Study → run directory: the stages of :mod:`edgescale.pipeline`, run here or on Ray
(:mod:`edgescale.executor`), then the results, the report and the results store.

Above :mod:`edgescale.pipeline` and :mod:`edgescale.executor` (the executor runs the
pipeline's stages in its tasks) and above the report (results are assembled, then rendered).

Every unit of work is keyed by what it depends on (see :mod:`edgescale.rundir`), so a
rerun reuses finished work and says so, and an interrupted run resumes.

One variant that fails (a chain step, the causality guard, non-finite loss, a runtime
error: :func:`edgescale.pipeline.is_variant_failure`) does not take the study down: it is
warned about once, listed in ``results.json`` under ``failed_variants`` with its stage and
reason, left out of latency and the analysis, and retried by the next run (nothing of it
was cached as a success). The run still exits 0: its results are written, and whoever
scripts studies reads ``failed_variants``.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgescale import __version__
from edgescale.atomic import write_json
from edgescale.backends.torch_lm import TorchBackend
from edgescale.bench.measure import machine_info
from edgescale.degradation_grid import degradation_grid
from edgescale.executor import check_executor, session
from edgescale.export.canonical import file_sha256
from edgescale.pipeline import Pipeline, VariantFailure, attempt
from edgescale.progress import Reporter
from edgescale.report.analysis import analyse
from edgescale.report.build import build_report
from edgescale.results.assemble import assemble_results
from edgescale.results.io import write_results
from edgescale.results.schema import Results
from edgescale.rundir import RunDir, key_of
from edgescale.scaling.estimate import estimate_study, measured_against
from edgescale.store.schema import db_path
from edgescale.store.write import record_run
from edgescale.study_inputs import load_inputs, package_versions


def run_study(
    study_path: Path | None = None,
    out: Path | None = None,
    rep: Reporter | None = None,
    executor: str = "local",
    address: str | None = None,
    trust_code: tuple[str, ...] = (),
    corpus: Path | None = None,
) -> Path:
    """Run a study end to end; return the run directory. ``executor``: see :mod:`edgescale.executor`;
    ``trust_code``: modules a ``model.factory`` may run from (``--trust-code``); ``corpus``: replaces
    the study's ``corpus.source`` (``--corpus``)."""
    check_executor(executor)

    rep = rep or Reporter()
    with rep.status("loading the study and its corpus (a new corpus is tokenized once, into the cache)"):
        inputs = load_inputs(study_path, trust_code, corpus, (lambda done, total: None) if rep.quiet else None)
    study, path = inputs.study, inputs.study_path
    run_dir = Path(out) if out else Path("runs") / study.name
    t0 = time.perf_counter()
    with RunDir(run_dir, log=rep.warn) as rd:
        pipe = Pipeline(inputs, rd, rep)
        manifest = {
            "edgescale_version": __version__,
            "study_file": str(path),
            "study": study.model_dump(mode="json"),
            "seeds": {"init": study.seed, "data": study.seed, "measure": study.seed},
            "packages": package_versions(),
            "machine": {
                **machine_info(study.training.threads),
                "torch_threads": study.training.threads,
                "ort_threads": study.measurement.threads,
            },
            "corpus": pipe.corpus.describe(),
            "recipes": {c.name: {"source": c.source, "steps": c.describe()} for c in pipe.chains},
        }
        trains = {p.name for p in pipe.plans if isinstance(pipe.backends[p.name], TorchBackend)}
        estimate = estimate_study(study, pipe.plans, trains, pipe.corpus["train"].n_tokens, executor == "local")
        rep.info(estimate.text())
        manifest["training_estimate"] = estimate.to_dict()
        write_json(rd.path("manifest.json"), {**manifest, "status": "running"})
        with session(executor, address) as ex:
            t_train = time.perf_counter()
            trained = pipe.train_all(ex.runner(pipe))
            manifest["training_seconds"] = round(time.perf_counter() - t_train, 1)
            rep.info(measured_against(estimate, manifest["training_seconds"]))
            variants, twins, failed = ex.run_chains(pipe, trained)
        with rep.status("held-out loss through onnxruntime"):
            losses = {vid: attempt(vid, "loss", pipe.losses, vid, v) for vid, v in variants.items()}
        failed |= {vid: f for vid, f in losses.items() if isinstance(f, VariantFailure)}
        variants = {vid: v for vid, v in variants.items() if vid not in failed}
        latency, failed_measure = pipe.measure_each(variants)
        failed |= failed_measure
        variants = {vid: v for vid, v in variants.items() if vid not in failed}
        failures = [
            failed[vid] for vid in (f"{p.name}/{c.name}" for p in pipe.candidates for c in pipe.chains) if vid in failed
        ]
        for f in failures:
            rep.warn(f.message())
        grid = degradation_grid(pipe, trained, variants, losses)  # recipes at every cooled branch and seed
        records = [f.record() for f in failures]
        results = assemble_results(pipe, trained, variants, losses, latency, twins, records, grid)
        with rep.status("report: figures, report.html, summary.md"):
            if not write_outputs(rd, results):
                rep.reuse("report", "the results did not change")
        artifacts = {v["artifact"]: v["sha256"] for v in variants.values()}
        artifacts |= {t["onnx_path"]: t["onnx_sha256"] for t in twins.values()}
        artifacts |= {t["checkpoint"]: t["sha256"] for t in trained.values()}
        # The finished marker, written last in the run directory: `report` and `pick` require it, and
        # results_sha256 ties it to the results.json it finished (one rewritten after it is detected).
        write_json(
            rd.path("manifest.json"),
            {
                **manifest,
                "status": "finished",
                "seconds": round(time.perf_counter() - t0, 1),
                "artifacts": dict(sorted(artifacts.items())),
                "results_sha256": file_sha256(rd.path("results.json")),
            },
        )
        record_in_store(run_dir, rep)  # still under the run-directory lock: what it reads cannot change
    rep.summary(results.data(), run_dir)
    return run_dir


def write_outputs(rd: RunDir, results: Results) -> bool:
    """Write results.json and the report; False when the report of these very results was
    already there (a rerun that changed nothing), verified by hash, and is reused."""
    # Frontiers, degradation laws, picks, comparison, routes: stored so pick/compare and the report agree.
    results = results.model_copy(update={"analysis": analyse(results, root=rd.root)})
    path = write_results(rd.path("results.json"), results)
    key = key_of("report", results=file_sha256(path), v=__version__)
    if rd.cached(key):
        return False
    files = build_report(results, rd.root)  # the PNGs, report.html and summary.md: what `edgescale report` writes
    written = [files.html, files.summary, *files.figures.values()]
    rd.record(key, {"files": [f.name for f in written]}, {f.name: file_sha256(f) for f in written})
    return True


def record_in_store(run_dir: Path, rep: Reporter) -> None:
    """Index the finished run in the results store ($EDGESCALE_DB, else runs/edgescale.db).

    results.json is the source of truth and is already written: a store that cannot take
    the run (locked past every retry, another schema version, not a database) costs a
    warning and a later ``edgescale runs --add``, never the run.
    """
    db = db_path()
    try:
        record_run(db, run_dir)
    except Exception as e:  # noqa: BLE001 -- reported, not swallowed; see the docstring
        rep.warn(
            f"results store {db}: run not recorded ({type(e).__name__}: {e}); "
            f"its results are in {run_dir}/results.json; record it later with: edgescale runs --add {run_dir}"
        )
