"""Where a study's independent work runs: here (``local``, the default) or as Ray tasks.

Training comes in stages of independent runs (:meth:`edgescale.pipeline.Pipeline.train_all`):
every ladder size and seed replicate; then each distilled student's seeds and equal-token
twins, after their teacher; then the equal-compute twins. With Ray each run of a stage is a
task asking for the study's threads as CPUs and, when the study trains on CUDA, one GPU; the
driver only plans the stages and collects the records the tasks wrote. A study's variants are
independent once the ladder is trained: each (size, recipe) chain
— its steps, its scratch twin, its held-out loss — is one task, and host latency is one
task that takes a whole node. A variant that fails as a variant can (see
:func:`edgescale.pipeline.is_variant_failure`) comes back as its
:class:`~edgescale.pipeline.VariantFailure`; the others go on. Both executors run the same :class:`Pipeline` methods on
the same run directory, so artifacts, cache records and hashes are identical; the
driver then assembles the results from the cache (every lookup a reuse) and is the only
process that writes ``results.json``, the report and the results store.

Ray (``pip install 'edgescale[ray]'``) is imported only here. Tasks write artifacts and
cache records into the run directory the way a local run does (temp file + rename,
content-addressed names), so on a multi-node cluster the run directory must be on a
filesystem every node mounts at the same path. The measurement task asks for every CPU
of a node plus one unit of the custom resource ``edgescale_host``, which each node
offers once, so two measurements never share a host; the record names the host.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from edgescale.backends.torch_lm import TorchBackend
from edgescale.errors import UserError
from edgescale.pipeline import Pipeline, TrainJob, VariantFailure, attempt
from edgescale.progress import Reporter
from edgescale.rundir import RunDir
from edgescale.study_inputs import Inputs

EXECUTORS = ("local", "ray")
HOST_RESOURCE = "edgescale_host"  # offered once per node: a measurement holds a whole host
RAY_VERSION = "2.60.0"


def check_executor(executor: str) -> None:
    """Refuse an unknown executor, or Ray when it is not installed, before any work starts."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}", field="--executor")
    if executor == "ray":
        _import_ray()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            f"the ray executor needs Ray: pip install 'edgescale[ray]' (ray=={RAY_VERSION})", field="--executor"
        ) from None
    return ray


class Session:
    """An executor for one run: :meth:`train_stage` (a :data:`~edgescale.pipeline.RunJobs`) and
    :meth:`run_chains`; with Ray, connected once for both."""

    def __init__(self, executor: str, ray=None) -> None:
        self.executor, self.ray = executor, ray

    def runner(self, pipe: Pipeline):
        """The function :meth:`Pipeline.train_all` hands each stage of training jobs to."""
        if self.executor == "local":
            return pipe.run_here
        return lambda jobs: _train_on_ray(self.ray, pipe, jobs)

    def run_chains(self, pipe: Pipeline, trained: dict[str, dict]):
        """Every (size, recipe) variant and scratch twin: ``(variants, twins, failed)`` keyed by
        variant id, ``failed`` holding the variants that failed (absent from the other two). With
        Ray the held-out losses and the host measurement are computed by tasks too and recorded in
        the run directory, where the driver's own calls then find them."""
        if self.executor == "ray":
            return _run_on_ray(self.ray, pipe, trained)
        return _run_chains_here(pipe, trained)


@contextmanager
def session(executor: str, address: str | None = None) -> Iterator[Session]:
    """The run's executor; with ``ray``, connected (or a local instance started) for the whole run."""
    if executor == "local":
        yield Session("local")
        return
    if executor != "ray":
        raise UserError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}", field="--executor")
    ray, started = _connect(address)
    try:
        yield Session("ray", ray)
    finally:
        if started:
            ray.shutdown()


def _run_chains_here(pipe: Pipeline, trained: dict[str, dict]):
    variants, twins, failed = {}, {}, {}
    for p in pipe.candidates:
        for c in pipe.chains:
            out, twin, failure = one_variant(pipe, p, c, trained[p.name], with_loss=False)
            _collect(f"{p.name}/{c.name}", out, twin, failure, variants, twins, failed)
    return variants, twins, failed


def one_variant(
    pipe: Pipeline, plan, chain, trained: dict, *, with_loss: bool
) -> tuple[dict | None, dict | None, VariantFailure | None]:
    """One variant's chain, scratch twin and (``with_loss``) held-out losses: ``(chain record,
    twin, None)``, or ``(None, None, failure)`` when it failed as a variant can."""
    vid = f"{plan.name}/{chain.name}"
    out = attempt(vid, "chain", pipe.run_chain, plan, chain, trained)
    if isinstance(out, VariantFailure):
        return None, None, out
    twin = attempt(vid, "scratch twin", pipe.scratch_twin, plan, chain, out, trained)
    if isinstance(twin, VariantFailure):  # the twin is part of the variant's evidence
        stage = twin.stage if twin.stage == "scratch twin" else f"scratch twin: {twin.stage}"
        return None, None, replace(twin, stage=stage)
    if with_loss and isinstance(got := attempt(vid, "loss", pipe.losses, vid, out), VariantFailure):
        return None, None, got
    return out, twin, None


def _collect(vid: str, out, twin, failure, variants: dict, twins: dict, failed: dict) -> None:
    if failure:
        failed[vid] = failure
        return
    variants[vid] = out
    if twin:
        twins[vid] = twin


# --------------------------------------------------------------------------- Ray tasks
def _pipeline(inputs, run_dir: str) -> Pipeline:
    """A task's view of the run: the driver holds the run directory's lock for the whole run."""
    return Pipeline(inputs, RunDir(Path(run_dir)), Reporter(quiet=True))


def _chain_task(inputs, run_dir: str, plan, chain, trained: dict):
    return one_variant(_pipeline(inputs, run_dir), plan, chain, trained, with_loss=True)


def _train_task(inputs, run_dir: str, job: TrainJob) -> dict:
    """One training job; its checkpoint, branches and cache record go into the run directory
    exactly as a local run writes them (temp file + rename, content-addressed names)."""
    return _pipeline(inputs, run_dir).train_job(job)


def _measure_task(inputs, run_dir: str, variants: dict) -> str | None:
    """The host's name; None when a variant failed it (the driver then finds which, here)."""
    pipe = _pipeline(inputs, run_dir)
    got = attempt("*", "measure", pipe.measure, variants)
    return None if isinstance(got, VariantFailure) else socket.gethostname()


def _connect(address: str | None):
    ray = _import_ray()
    if address:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as e:  # noqa: BLE001 -- Ray's connection errors have no common type
            raise UserError(f"cannot connect to the Ray cluster: {str(e).splitlines()[0]}", field="--address") from None
        if ray.cluster_resources().get(HOST_RESOURCE, 0) < 1:
            ray.shutdown()
            raise UserError(
                f"no node of the cluster at {address} offers the custom resource {HOST_RESOURCE!r}; start each "
                f"node with: ray start ... --resources='{{\"{HOST_RESOURCE}\": 1}}'",
                field="--address",
            )
        return ray, False
    # A local instance on loopback, one measurement slot; Ray's dashboard and usage stats off.
    ray.init(
        resources={HOST_RESOURCE: 1},
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
    )
    return ray, True


def _wait(ray, refs: list, on_done: Callable[[int, object], None]) -> None:
    """Wait for every task, reporting each as it finishes; a task's UserError is the run's."""
    pending = {r: i for i, r in enumerate(refs)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(done[0])
        try:
            on_done(i, ray.get(done[0]))
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                raise cause from None
            raise


def train_resources(study, cluster: dict) -> dict:
    """What one training task asks Ray for: the study's threads as CPUs (at most a node's), and one
    GPU when the study trains on CUDA (or on ``auto`` where the cluster has GPUs)."""
    device = study.training.device
    if device == "cuda" and cluster.get("GPU", 0) < 1:
        raise UserError(
            "the study trains on cuda (training.device) but the Ray cluster offers no GPU; start its nodes with "
            "`ray start ... --num-gpus=N`, or set training.device: cpu",
            field="training.device",
        )
    gpus = 1 if device == "cuda" or (device == "auto" and cluster.get("GPU", 0) >= 1) else 0
    return {"num_cpus": min(study.training.threads, max(1, int(cluster.get("CPU", 1)))), "num_gpus": gpus}


def _train_on_ray(ray, pipe: Pipeline, jobs: list[TrainJob]) -> list[dict]:
    """A stage of training jobs as parallel Ray tasks (a size whose backend does not train, such as
    a checkpoint copied into the run, stays on the driver); records in the jobs' order."""
    remote = [i for i, j in enumerate(jobs) if isinstance(pipe.backends[j.backend or j.plan.name], TorchBackend)]
    out: list[dict | None] = [None] * len(jobs)
    if remote:
        asks = train_resources(pipe.study, ray.cluster_resources())
        inputs = ray.put(Inputs(pipe.study, Path(), pipe.corpus, pipe.chains, pipe.plans, pipe.backends))
        task = ray.remote(max_retries=0, **asks)(_train_task)
        run_dir = str(pipe.rd.root.resolve())
        refs = [task.remote(inputs, run_dir, jobs[i]) for i in remote]

        def done(k: int, rec: dict) -> None:
            job = jobs[remote[k]]
            out[remote[k]] = rec
            seed = "" if job.seed in (None, pipe.study.seed) else f" seed {job.seed}"
            pipe.rep.done(f"train {job.plan.name}{seed} on ray", rec["checkpoint"])

        gpu = f", {asks['num_gpus']} GPU each" if asks["num_gpus"] else ""
        with pipe.rep.status(f"{len(refs)} training runs as Ray tasks ({asks['num_cpus']} CPU{gpu} each)"):
            _wait(ray, refs, done)
    for i, j in enumerate(jobs):
        if out[i] is None:
            out[i] = pipe.train_job(j)
    return out


def _run_on_ray(ray, pipe: Pipeline, trained: dict[str, dict]):
    inputs = ray.put(Inputs(pipe.study, Path(), pipe.corpus, pipe.chains, pipe.plans, pipe.backends))
    run_dir = str(pipe.rd.root.resolve())
    # One CPU per chain task; the training inside (scratch twins) uses the study's threads.
    chain = ray.remote(num_cpus=1, max_retries=0)(_chain_task)
    jobs = [(p, c) for p in pipe.candidates for c in pipe.chains]
    refs = [chain.remote(inputs, run_dir, p, c, trained[p.name]) for p, c in jobs]
    variants, twins, failed = {}, {}, {}

    def chain_done(i: int, got) -> None:
        p, c = jobs[i]
        vid = f"{p.name}/{c.name}"
        _collect(vid, *got, variants, twins, failed)
        if vid in variants:
            pipe.rep.done(f"{vid} on ray", variants[vid]["artifact"])

    with pipe.rep.status(f"{len(jobs)} variants as Ray tasks"):
        _wait(ray, refs, chain_done)
    order = [f"{p.name}/{c.name}" for p, c in jobs]  # the local order
    variants = {vid: variants[vid] for vid in order if vid in variants}
    failed = {vid: failed[vid] for vid in order if vid in failed}
    if not variants:
        return variants, twins, failed

    # Latency: one task holding a whole node (all its CPUs and its one edgescale_host unit).
    node_cpus = max(n["Resources"].get("CPU", 1) for n in ray.nodes() if n["Alive"])
    measure = ray.remote(num_cpus=node_cpus, resources={HOST_RESOURCE: 1}, max_retries=0)(_measure_task)
    with pipe.rep.status("host latency as a Ray task holding a whole node"):
        _wait(
            ray,
            [measure.remote(inputs, run_dir, variants)],
            lambda _, host: pipe.rep.info(f"measured on {host}" if host else "measurement failed; retried here"),
        )
    return variants, twins, failed
