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

Confinement: nothing is read or written outside the run directory. A symbolic link in it
that resolves outside (``train/<size>``, ``work``, ``artifacts``, ``cache``, a record) is
refused when the lock is taken, and again by :meth:`RunDir.inside` on every path; ``.lock``
is opened without following a link. A cache record whose path fields (``artifact``,
``checkpoint``, ``onnx_path``, ``nll_file``, ``files``) leave the directory is set aside and
its work redone. A read-only or full disk is one :class:`~edgescale.errors.EnvironmentFailure`.

Kill-test hook: with ``EDGESCALE_KILL_AT=store:<file name>`` set, the process SIGKILLs
itself when a finished step hands that output file (e.g. ``model.int8_dynamic.onnx``) to
:meth:`RunDir.store`, before it is moved into ``artifacts/`` and recorded: the exact
point a crash costs most. tests/test_kill.py uses it; unset, it does nothing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from edgescale.atomic import environment, write_json
from edgescale.errors import EnvironmentFailure, UserError
from edgescale.export.canonical import artifact_sha256, external_data_files, move_onnx

KILL_ENV = "EDGESCALE_KILL_AT"
# the fields of a cache record that name a file in the run directory (``source`` is the user's input)
PATH_FIELDS = frozenset({"artifact", "checkpoint", "onnx_path", "nll_file", "files"})


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


def _path_values(obj: object) -> list:
    """The values of a record's path fields (see PATH_FIELDS), at any depth but the user's ``source``."""
    if isinstance(obj, list):
        return [v for item in obj for v in _path_values(item)]
    if not isinstance(obj, dict):
        return []
    out: list = []
    for k, v in obj.items():
        if k in PATH_FIELDS and v is not None:
            out += v if isinstance(v, list) else [v]
        elif k not in ("source", "_artifacts"):
            out += _path_values(v)
    return out


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
        lock = self.root / ".lock"
        with environment(lock):
            self.root.mkdir(parents=True, exist_ok=True)
            try:  # O_NOFOLLOW: a .lock linked elsewhere is never opened (nor created) through the link
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                if e.errno != errno.ELOOP:
                    raise
                raise EnvironmentFailure(
                    "is a symbolic link; remove it (edgescale creates its own lock file) or pass --out DIR", file=lock
                ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                "another edgescale run is using this run directory; wait for it or pass --out DIR",
                file=self.root,
            ) from None
        self._lock_fd = fd
        try:
            self._refuse_links_out()
            with environment(self.root):
                self._remove_leftovers()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _refuse_links_out(self) -> None:
        """Refuse the run directory if any link in it resolves outside (links are not followed)."""
        root = self.root.resolve()
        for folder, dirs, files in os.walk(self.root):
            for name in dirs + files:
                p = Path(folder) / name
                if p.is_symlink() and not p.resolve().is_relative_to(root):
                    raise EnvironmentFailure(
                        f"is a symbolic link to {p.resolve()}: leaves the run directory {self.root}, "
                        "and edgescale writes only inside it; remove the link or pass --out DIR",
                        file=p,
                    )

    def _remove_leftovers(self) -> None:
        """With the lock held, nothing else writes these: temp files of writes a killed run never
        finished (see edgescale.atomic), a quantizer's shape-inference copy (``*-inferred.onnx``,
        which onnxruntime writes beside its input) and the scratch of steps a killed run left."""
        for folder, _, files in os.walk(self.root):
            for name in files:
                p = Path(folder) / name
                tmp = name.startswith(".") and name.endswith(".tmp")
                if tmp or (p.parent.name == "artifacts" and "-inferred.onnx" in name):
                    p.unlink()
        work = self.root / "work"
        if work.is_dir() and not work.is_symlink():
            shutil.rmtree(work)

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- paths -----------------------------------------------------------------
    def inside(self, rel: str | Path) -> Path:
        """``root/rel``, refusing a path that leaves the run directory (``..``, absolute, a link out)."""
        p = self.root / rel
        if p.resolve().is_relative_to(self.root.resolve()):
            return p
        below = [q for q in (p, *p.parents) if q.is_relative_to(self.root) and q != self.root]
        link = next((q for q in below if q.is_symlink()), None)
        if link is not None and not Path(rel).is_absolute() and ".." not in Path(rel).parts:
            raise EnvironmentFailure(
                f"is a symbolic link to {link.resolve()}: leaves the run directory {self.root}; "
                "remove the link or pass --out DIR",
                file=link,
            )
        raise UserError(f"path {str(rel)!r} leaves the run directory; refused", file=self.root)

    def path(self, *parts: str) -> Path:
        p = self.inside(Path(*parts))
        with environment(p.parent):
            p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def work_dir(self, key: str) -> Path:
        """Scratch space of one step in this process (Ray tasks may run the same step at once)."""
        d = self.path("work", f"{key[:20]}-{os.getpid()}")
        with environment(d):
            if d.exists():
                shutil.rmtree(d)  # left by an interrupted step: never trusted
            d.mkdir()
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
        with environment(dst):
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
        with environment(quarantine):
            if data.exists():
                os.replace(data, quarantine.with_name(data.name))
            os.replace(p, quarantine)
        self.log(f"{rel} failed its hash check: moved to {quarantine}, rebuilding")
        return False

    # -- cache records -----------------------------------------------------------
    def cached(self, key: str) -> dict | None:
        """The finished record for ``key`` if all the artifacts it names verify."""
        p = self.inside(Path("cache") / f"{key}.json")
        if not p.exists():
            return None
        try:
            rec = json.loads(p.read_text())
            arts = rec["_artifacts"]
            for rel, sha in arts.items():
                if not isinstance(sha, str):
                    raise TypeError(f"hash of {rel} is not a string")
                self.inside(rel)  # a record may only name files in this run directory
            self._check_paths(rec, arts)
        except (ValueError, KeyError, TypeError, AttributeError, UserError) as e:
            quarantine = self.path("quarantine", p.name)
            with environment(quarantine):
                os.replace(p, quarantine)
            self.log(f"cache record {p.name} is not a valid record ({e}): moved to {quarantine}, redoing its work")
            return None
        for rel, sha in arts.items():
            if not self.verify(rel, sha):
                return None
        return rec

    def _check_paths(self, rec: dict, arts: dict) -> None:
        """Every file a record hands back lies in this run directory; its artifact is one it hashes.

        A forged record naming ``/elsewhere`` or ``../x`` would otherwise reach results.json, the
        manifest and ``pick`` (which trust what a reused record says)."""
        for field in ("artifact", "checkpoint"):
            if field in rec and rec[field] not in arts:
                raise KeyError(f"{field} {rec[field]!r} is not among the record's hashed artifacts")
        for rel in _path_values(rec):
            if not isinstance(rel, str):
                raise TypeError(f"path {rel!r} is not a string")
            self.inside(rel)

    def record(self, key: str, rec: dict, artifacts: dict[str, str] | None = None) -> dict:
        rec = {**rec, "_artifacts": artifacts or {}}
        write_json(self.path("cache", f"{key}.json"), rec)
        return rec
