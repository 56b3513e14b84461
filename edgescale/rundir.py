"""The run directory: a lock, a manifest, content-hashed artifacts and a step cache.

Layout of ``runs/<study>/``::

    manifest.json      resolved study, seeds, package versions, machine, artifacts
    results.json       every variant's loss, cost and latency, with the protocol and analysis
    report.html  summary.md   the report (self-contained) and its terminal summary
    *.png              frontier(-devices), compare, degradation, latency, plan, scaling, loss-curves
    artifacts/<sha256[:20]>.onnx|.safetensors   content-hashed, written atomically
    artifacts/<sha256[:20]>.onnx.data   a graph's ONNX external data (graphs over 2 GB), hashed with it
    cache/<key>.json   one record per finished unit of work (train, step, loss, measure)
    train/<size>/      training state (resume checkpoint, curve)
    work/              scratch space of running steps

A unit of work is reused when its record exists and every artifact it names is present
with the recorded hash; an artifact that fails its hash is quarantined, never used.
A run killed at any point leaves at most temp files (removed by the next run, which
holds the lock) and unrecorded work, which is redone.

Kill-test hook: with ``EDGESCALE_KILL_AT=store:<file name>`` set, the process SIGKILLs
itself when a finished step hands that output file (e.g. ``model.int8_dynamic.onnx``) to
:meth:`RunDir.store`, before it is moved into ``artifacts/`` and recorded: the exact
point a crash costs most. tests/test_kill.py uses it; unset, it does nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from edgescale.atomic import write_json
from edgescale.errors import UserError
from edgescale.export.canonical import artifact_sha256, external_data_files, move_onnx

KILL_ENV = "EDGESCALE_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process here if ``$EDGESCALE_KILL_AT`` names this point (see the module doc)."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def key_of(kind: str, **parts) -> str:
    blob = json.dumps({"kind": kind, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _remove_with_data(src: Path) -> None:
    """Delete a step's output that is already stored, with the external data file it names."""
    if src.suffix == ".onnx":
        for f in external_data_files(src):
            f.unlink()
    src.unlink()


def _stat_key(p: Path) -> tuple:
    """What changes when a file (or the data file beside a graph) is rewritten, replaced or truncated."""
    data = p.with_name(p.name + ".data")
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in (p.stat(), *([data.stat()] if data.exists() else [])))


class RunDir:
    def __init__(self, root: Path, log: Callable[[str], None] = lambda msg: None) -> None:
        self.root = Path(root)
        self.log = log
        self._lock_fd: int | None = None
        # rel -> (stat of the file and its data file, sha) of artifacts hashed by this process:
        # a 4 GB graph is hashed once per run, not once per record that names it
        self._verified: dict[str, tuple[tuple, str]] = {}

    # -- locking ---------------------------------------------------------------
    def __enter__(self) -> RunDir:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                "another edgescale run is using this run directory; wait for it or pass --out DIR",
                file=self.root,
            ) from None
        self._lock_fd = fd
        # Temp files of writes that a killed run never finished (see edgescale.atomic);
        # with the lock held, nothing else is writing them.
        for tmp in self.root.rglob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink()
        shutil.rmtree(self.root / "work", ignore_errors=True)  # scratch of steps a killed run left
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- paths -----------------------------------------------------------------
    def inside(self, rel: str | Path) -> Path:
        """``root/rel``, refusing a path that leaves the run directory (``..``, absolute, a link out)."""
        p = self.root / rel
        if not p.resolve().is_relative_to(self.root.resolve()):
            raise UserError(f"path {str(rel)!r} leaves the run directory; refused", file=self.root)
        return p

    def path(self, *parts: str) -> Path:
        p = self.inside(Path(*parts))
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def work_dir(self, key: str) -> Path:
        """Scratch space of one step in this process (Ray tasks may run the same step at once)."""
        d = self.root / "work" / f"{key[:20]}-{os.getpid()}"
        if d.exists():
            shutil.rmtree(d)  # left by an interrupted step: never trusted
        d.mkdir(parents=True)
        return d

    # -- artifacts -------------------------------------------------------------
    def store(self, src: Path) -> tuple[Path, str]:
        """Move ``src`` into artifacts/ under its content hash; return (relative path, sha256).

        An ONNX graph with external data moves with it: the data file becomes
        ``<sha[:20]>.onnx.data`` (moved first) and the graph, pointing at it, lands last."""
        kill_point(f"store:{src.name}")
        sha = artifact_sha256(src)
        rel = Path("artifacts") / f"{sha[:20]}{src.suffix}"
        dst = self.path(str(rel))
        if dst.exists() and self.verify(str(rel), sha):  # a corrupt one is quarantined, then replaced
            _remove_with_data(src)
        elif src.suffix == ".onnx":
            move_onnx(src, dst)
        else:
            os.replace(src, dst)
        return rel, sha

    def verify(self, rel: str, sha: str) -> bool:
        p = self.inside(rel)
        if not p.exists():
            return False
        if self._verified.get(rel) == (_stat_key(p), sha):
            return True
        try:
            if artifact_sha256(p) == sha:  # a graph's hash covers its external data file
                self._verified[rel] = (_stat_key(p), sha)
                return True
        except UserError:  # unreadable (truncated, corrupt), or its data file missing: as a wrong hash
            pass
        quarantine = self.path("quarantine", p.name)
        data = p.with_name(p.name + ".data")
        if data.exists():
            os.replace(data, quarantine.with_name(data.name))
        os.replace(p, quarantine)
        self.log(f"{rel} failed its hash check: moved to {quarantine}, rebuilding")
        return False

    # -- cache records -----------------------------------------------------------
    def cached(self, key: str) -> dict | None:
        """The finished record for ``key`` if all the artifacts it names verify."""
        p = self.root / "cache" / f"{key}.json"
        if not p.exists():
            return None
        try:
            rec = json.loads(p.read_text())
            arts = rec["_artifacts"]
            for rel, sha in arts.items():
                if not isinstance(sha, str):
                    raise TypeError(f"hash of {rel} is not a string")
                self.inside(rel)  # a record may only name files in this run directory
        except (ValueError, KeyError, TypeError, AttributeError, UserError) as e:
            quarantine = self.path("quarantine", p.name)
            os.replace(p, quarantine)
            self.log(f"cache record {p.name} is not a valid record ({e}): moved to {quarantine}, redoing its work")
            return None
        for rel, sha in arts.items():
            if not self.verify(rel, sha):
                return None
        return rec

    def record(self, key: str, rec: dict, artifacts: dict[str, str] | None = None) -> dict:
        rec = {**rec, "_artifacts": artifacts or {}}
        write_json(self.path("cache", f"{key}.json"), rec)
        return rec
