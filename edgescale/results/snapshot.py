"""A run directory as its readers (``report``, ``pick``, ``compare``) may trust it.

Three checks stand between a run directory and an answer drawn from it:

- **The lock.** ``edgescale run`` holds an exclusive ``flock`` on ``RUN_DIR/.lock`` from start
  to finish (:class:`edgescale.rundir.RunDir`). A reader takes the same lock: shared to read
  (``pick``, ``compare``, ``report --out`` elsewhere), exclusive to write into the run
  directory (``report``). It waits up to :data:`LOCK_WAIT_S`, then refuses in one line, so a
  report is never drawn from a results.json a run is rewriting. ``edgescale run`` builds its
  own report with the lock already held and never comes through here.
- **The finished marker.** ``run`` writes ``manifest.json`` with ``status: "running"`` first
  and ``status: "finished"`` last, with the sha256 of the results.json it finished. A run that
  was killed, or is still going, or a results.json changed after the finish is refused, or with
  ``--allow-unfinished`` read under a loud warning. A results.json with no manifest beside it (a
  file handed over on its own) is read with a warning that none of this could be checked.
- **Artifact hashes.** Every variant's ONNX file must still hash (canonical hash, external data
  included: :func:`edgescale.export.canonical.artifact_sha256`) to what results.json records and
  manifest.json lists: a truncated or changed file is refused, naming it and the command that
  rebuilds it, so no answer names a damaged file or quotes its old size. Each file is hashed
  once per process while its size, inode and mtime stay the same.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgescale.errors import UserError
from edgescale.export.canonical import artifact_sha256
from edgescale.results.io import read_results_sha
from edgescale.results.schema import Results

LOCK_WAIT_S = 10.0  # how long a reader waits for a run or another report to let go of the lock
ALLOW_FLAG = "--allow-unfinished"

# resolved path -> (stat key, sha256): a 4 GB graph is hashed once per process, not once per command
_hashed: dict[str, tuple[tuple, str]] = {}


@dataclass(frozen=True)
class Snapshot:
    """A run directory's results, read under its lock and checked; ``warnings`` are for the user's terminal."""

    root: Path
    results: Results
    warnings: tuple[str, ...] = ()


@contextlib.contextmanager
def locked(root: Path, *, exclusive: bool, wait_s: float | None = None) -> Iterator[None]:
    """Hold ``root/.lock`` (shared, or exclusive to write in ``root``), waiting up to ``wait_s``."""
    fd = _open_lock(Path(root), exclusive)
    if fd is None:  # no .lock to share: no run has used this directory (a run makes it first, and keeps it)
        yield
        return
    try:
        deadline = time.monotonic() + (LOCK_WAIT_S if wait_s is None else wait_s)
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise UserError(
                        "another edgescale process (a run, or a report) is using this run directory; "
                        "wait for it to finish, then try again",
                        file=root,
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_lock(root: Path, exclusive: bool) -> int | None:
    """A descriptor on ``root/.lock``, never through a symbolic link; a reader that only shares the
    lock leaves a directory without one as it is (None), a writer creates it."""
    lock = root / ".lock"
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(lock, flags)
    except FileNotFoundError:
        if not exclusive:
            return None
    except OSError as e:
        what = "is a symbolic link; remove it" if e.errno == errno.ELOOP else f"cannot be opened ({e.strerror})"
        raise UserError(f"{what}: edgescale locks the run directory with it", file=lock) from None
    try:
        return os.open(lock, flags | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(
            f"cannot write in the run directory ({e.strerror}); write the report elsewhere with --out DIR", file=root
        ) from None


def read_snapshot(run_dir: Path, *, allow_unfinished: bool = False, names_artifacts: bool = False) -> Snapshot:
    """``run_dir``'s results, checked as the module docstring says; call it with the lock held (:func:`locked`).
    ``names_artifacts``: the reader answers with a variant's file (``pick``, ``compare``), so a results.json
    without the manifest that proves the run finished is refused like an unfinished run, and with
    ``--allow-unfinished`` its files are still hashed against results.json."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UserError("not a directory", file=root, field="RUN_DIR")
    for name in ("results.json", "manifest.json"):
        _confined(root, root / name, name)
    results, results_sha = read_results_sha(root)
    for v in results.variants:  # whatever else holds: no answer points outside the run directory
        _confined(root, root / v.onnx_path, f"variants[{v.variant_id}].onnx_path")
    manifest = _read_manifest(root)
    if manifest is None:
        note = "no manifest.json beside results.json: nothing proves the run finished"
        if names_artifacts and not allow_unfinished:
            raise UserError(
                f"{note}, so its files are not named as an answer; rerun `edgescale run STUDY --out {root}`, or pass "
                f"{ALLOW_FLAG} to read it anyway",
                file=root / "manifest.json",
            )
        if names_artifacts:  # the files that are there must be the ones results.json records
            missing = check_artifacts(root, results, missing_ok=True)
            gone = (
                f"; {len(missing)} of its variants' files are not there ({', '.join(missing[:3])})" if missing else ""
            )
            return Snapshot(root, results, (f"{root}: UNFINISHED RUN, read because of {ALLOW_FLAG}: {note}{gone}",))
        return Snapshot(root, results, (f"{root}: {note}, and its artifacts' hashes were not checked",))
    warnings = _check_finished(root, manifest, results_sha, allow_unfinished)
    check_artifacts(root, results, manifest)
    return Snapshot(root, results, tuple(warnings))


def _confined(root: Path, path: Path, what: str) -> None:
    """Refuse ``path`` (a file a reader would open, or name as an answer) when it resolves outside ``root``."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{what} leads outside the run directory (a link, an absolute path or ..); refused", file=path)


def _read_manifest(root: Path) -> dict | None:
    path = root / "manifest.json"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"unreadable manifest.json ({e}); rerun `edgescale run` to rewrite it", file=path) from None
    if not isinstance(data, dict):
        raise UserError("not a JSON object; rerun `edgescale run` to rewrite it", file=path)
    return data


def rerun_hint(root: Path, manifest: dict) -> str:
    """The command that finishes or repairs the run in ``root``."""
    study = manifest.get("study_file")
    return f"`edgescale run {study if isinstance(study, str) else 'STUDY'} --out {root}`"


def _check_finished(root: Path, manifest: dict, results_sha: str, allow: bool) -> list[str]:
    """The finished marker, and that results.json is the one the run finished with."""
    path = root / "manifest.json"
    status = manifest.get("status")
    recorded = manifest.get("results_sha256")  # absent in runs finished before it was recorded
    if status != "finished":
        problem = f"the run did not finish (status {status!r}): it was killed, failed or is still running"
    elif recorded is not None and recorded != results_sha:
        problem = "results.json changed after the run finished (its sha256 is not the manifest's results_sha256)"
    else:
        return []
    if not allow:
        raise UserError(
            f"{problem}; finish it with {rerun_hint(root, manifest)}, or pass {ALLOW_FLAG} to read it anyway",
            file=path,
            field="status" if status != "finished" else "results_sha256",
        )
    return [f"{path}: UNFINISHED RUN, read because of {ALLOW_FLAG}: {problem}; its numbers may be partial or stale"]


def check_artifacts(
    root: Path, results: Results, manifest: dict | None = None, *, missing_ok: bool = False
) -> list[str]:
    """Every variant's ONNX file is in ``root`` and hashes to what results.json (and the manifest) record;
    with ``missing_ok`` a missing file is listed (returned) instead of refused."""
    listed = (manifest or {}).get("artifacts")
    listed = listed if isinstance(listed, dict) else {}
    hint = rerun_hint(root, manifest or {})
    missing: list[str] = []
    for v in results.variants:
        rel, sha = v.onnx_path, v.onnx_sha256
        field = f"variants[{v.variant_id}].onnx_path"
        p = root / rel
        _confined(root, p, field)
        if rel in listed and listed[rel] != sha:
            raise UserError(
                f"results.json and manifest.json record different hashes for {rel}: one was changed after the run; "
                f"rebuild both with {hint}",
                file=root / "results.json",
                field=field,
            )
        if not p.is_file():
            if missing_ok:
                missing.append(rel)
                continue
            raise UserError(f"the artifact of variant {v.variant_id} is missing; rebuild it with {hint}", file=p)
        if _sha256(p) != sha:
            raise UserError(
                f"the artifact of variant {v.variant_id} fails its hash check (truncated or changed since the run: "
                f"{p.stat().st_size:,} bytes, recorded {v.file_bytes:,}); rebuild it with {hint}",
                file=p,
            )
    return missing


def _stat_key(p: Path) -> tuple:
    """What changes when a file (or the data file beside a graph) is rewritten, replaced or truncated."""
    data = p.with_name(p.name + ".data")
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in (p.stat(), *([data.stat()] if data.exists() else [])))


def _sha256(p: Path) -> str | None:
    """The artifact hash of ``p``, from this process's cache while the file is unchanged; None if unreadable."""
    key, stat = str(p.resolve()), _stat_key(p)
    hit = _hashed.get(key)
    if hit is not None and hit[0] == stat:
        return hit[1]
    try:
        sha = artifact_sha256(p)
    except UserError:  # not a readable graph (truncated, corrupt) or its data file gone: as a wrong hash
        return None
    _hashed[key] = (stat, sha)
    return sha


def read_locked(run_dir: Path, *, allow_unfinished: bool = False) -> Snapshot:
    """:func:`read_snapshot` under a shared lock: what ``pick`` and ``compare`` read."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UserError("not a directory", file=root, field="RUN_DIR")
    with locked(root, exclusive=False):
        return read_snapshot(root, allow_unfinished=allow_unfinished, names_artifacts=True)
