"""Atomic file writes: write to a temp file beside the target, then rename.

A reader never sees a half-written artifact, and an interrupted run leaves at most a
``*.tmp`` file behind, which the next run ignores.

A write that fails because of the machine (a read-only folder, a full disk, a missing
permission) comes out as one :class:`~edgescale.errors.EnvironmentFailure` naming the path
and what to do (:func:`environment`), not as the traceback of whichever library wrote.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgescale.errors import EnvironmentFailure

_READ_ONLY = {
    errno.EROFS: "on a read-only file system; pass --out DIR (a writable run directory)",
    errno.EACCES: "permission denied; fix its permissions or pass --out DIR (a writable run directory)",
    errno.EPERM: "operation not permitted; fix its permissions or pass --out DIR (a writable run directory)",
}
_FULL = {errno.ENOSPC, errno.EDQUOT}
# safetensors (Rust) reports an I/O failure as text, with the errno only in it: "Error while serializing:
# I/O error: No space left on device (os error 28)" (safetensors 0.7 on a full tmpfs), or in Rust's
# Debug form "IoError(Os { code: 28, kind: StorageFull, ... })"
_RUST_ERRNO = re.compile(r"\(os error (\d+)\)|Os \{ code: (\d+)")


def os_errno(e: BaseException) -> int | None:
    """The errno of an OSError, or of a Rust I/O error that safetensors reports as text; else None."""
    if isinstance(e, OSError):
        return e.errno
    if type(e).__name__ == "SafetensorError" and (m := _RUST_ERRNO.search(str(e))):
        return int(m.group(1) or m.group(2))
    return None


def _io_errors() -> tuple[type[Exception], ...]:
    """The exceptions a failed write raises: OSError, and safetensors' own error type."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - a dependency of edgescale
        return (OSError,)
    return (OSError, SafetensorError)


def environment_failure(e: BaseException, path: str | Path | None) -> EnvironmentFailure | None:
    """One line for a read-only, full or forbidden ``path`` (``e`` raised writing it), or None
    when ``e`` is anything else (that propagates unchanged)."""
    code, where = os_errno(e), Path(path) if path is not None else None
    if code in _FULL:
        disk = f"the disk holding {where.parent}" if where is not None else "the disk of the run directory"
        return EnvironmentFailure(
            f"no space left on the device; free space on {disk} or pass --out DIR on another disk", file=where
        )
    if code in _READ_ONLY:
        return EnvironmentFailure(_READ_ONLY[code], file=where)
    return None


@contextlib.contextmanager
def environment(path: str | Path) -> Iterator[None]:
    """Turn a read-only, full-disk or permission failure of the block (writing ``path``) into
    an :class:`EnvironmentFailure`; any other exception propagates unchanged."""
    try:
        yield
    except _io_errors() as e:
        failure = environment_failure(e, path)
        if failure is None:
            raise
        raise failure from None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on success rename it onto ``path``."""
    path = Path(path)
    tmp = None
    try:
        with environment(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            os.chmod(tmp, 0o644)
            yield Path(tmp)
            os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: Path, obj: object) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())
