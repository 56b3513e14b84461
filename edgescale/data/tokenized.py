"""A corpus tokenized once into memory-mapped token files, cached by the hash of its content.

Layout of one cached corpus, ``<cache>/<key>/``: per split a token file ``<split>.bin`` (uint8,
one token per byte), ``<split>.bounds.npy`` (int64 (start, end) of each document),
``<split>.names`` (the documents' names, UTF-8, back to back) with ``<split>.name_ends.npy``, and
``manifest.json`` (source,
content hash, tokenizer, and per split documents, tokens and the token file's SHA-256). The key
hashes the format version, the tokenizer, the split fractions, the text field and every source
file's name, kind, size and bytes, so a change to any of them tokenizes afresh. A folder is
written under a temporary name and renamed into place when complete: a killed tokenization
leaves nothing a later load would use, and of two processes racing, the loser takes the
winner's. A second index, ``<cache>/stat/<signature>.json``, maps the files' stat signature
(path, size, mtime, ctime, inode) to the key, so an unchanged source is not re-hashed on every load.

The split is the one edgescale always used: documents ordered by the SHA-256 of their name,
the first ``round(f·n)`` (at least one) to validation, the next to test, the rest to train; each
split's documents in name order, joined with a blank line. Names are never all held at once:
the ordering needs only 128-bit prefixes of their hashes in a numpy array.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescale.config import CorpusConfig
from edgescale.data import sources
from edgescale.errors import UserError

FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
BYTES = "bytes"
SEPARATOR = b"\n\n"
_CODES = {"validation": 1, "test": 2, "train": 0}


@dataclass(frozen=True)
class TokenFile:
    """One split as stored: its tokens (read-only map), documents and hash."""

    tokens: np.ndarray
    works: Works
    work_bounds: Bounds
    sha256: str
    byte_ends: np.ndarray | None = None  # with a tokenizer: text bytes up to each token's end


class _Lazy(Sequence):
    """A read-only sequence built item by item from arrays on disk: a corpus of millions of
    documents does not hold millions of Python objects. Equal to a tuple of the same items."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a tuple, so no hash of its own

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self[:3])
        return f"{type(self).__name__}([{head}{', ...' if len(self) > 3 else ''}], n={len(self)})"


class Bounds(_Lazy):
    """(start, end) of each document, from an (n, 2) int64 array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(map(tuple, self.array[i].tolist()))
        a, b = self.array[i].tolist()
        return (a, b)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for j in range(0, len(self), 1 << 16):
            yield from map(tuple, self.array[j : j + (1 << 16)].tolist())


class Works(_Lazy):
    """Documents' names, from their UTF-8 bytes back to back and the end of each."""

    def __init__(self, blob: np.ndarray, ends: np.ndarray) -> None:
        self.blob, self.ends = blob, ends

    def __len__(self) -> int:
        return int(self.ends.size)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[k] for k in range(*i.indices(len(self))))
        i = range(len(self))[i]  # negative indices, and IndexError past the end
        start = int(self.ends[i - 1]) if i else 0
        return self.blob[start : int(self.ends[i])].tobytes().decode("utf-8")


def cache_root(cfg: CorpusConfig, base: Path) -> Path:
    if cfg.cache_dir:
        root = Path(cfg.cache_dir).expanduser()
        return root if root.is_absolute() else base / root
    env = os.environ.get("EDGESCALE_CORPUS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgescale" / "corpora"


def options(cfg: CorpusConfig) -> dict:
    """Everything besides the source's bytes that the tokens depend on (a tokenizer folder: its
    tokenizer.json's hash, so an edited tokenizer tokenizes afresh and a moved one does not)."""
    return {
        "format": FORMAT_VERSION,
        "tokenizer": cfg.tokenizer if cfg.tokenizer == BYTES else tokenizer_sha256(Path(cfg.tokenizer)),
        "validation_fraction": cfg.validation_fraction,
        "test_fraction": cfg.test_fraction,
        "text_field": cfg.text_field,
    }


def content_key(cfg: CorpusConfig, files: list[sources.SourceFile], tick: sources.Tick) -> str:
    h = hashlib.sha256(json.dumps(options(cfg), sort_keys=True).encode())
    sources.hash_contents(h, files, tick)
    return h.hexdigest()


def stat_key(cfg: CorpusConfig, files: list[sources.SourceFile]) -> str:
    sig = {"options": options(cfg), "files": sources.stat_signature(files)}
    return hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()


def lookup(root: Path, signature: str) -> Path | None:
    """The cached corpus the stat signature points to, if it is there and whole."""
    try:
        key = json.loads((root / "stat" / f"{signature}.json").read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    folder = root / str(key)
    return folder if verify(folder) else None


def remember(root: Path, signature: str, key: str) -> None:
    index = root / "stat"
    index.mkdir(parents=True, exist_ok=True)
    tmp = index / f".{signature}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp.write_text(json.dumps({"key": key}))
    os.replace(tmp, index / f"{signature}.json")


def verify(folder: Path) -> bool:
    """A cheap check that ``folder`` is a whole cached corpus: its manifest and every file's size."""
    try:
        m = json.loads((folder / "manifest.json").read_text())
        if m.get("format") != FORMAT_VERSION:
            return False
        for s in SPLITS:
            info = m["splits"][s]
            if (folder / f"{s}.bin").stat().st_size != info["tokens"] * np.dtype(m["dtype"]).itemsize:
                return False
            if m["tokenizer"] != BYTES and (folder / f"{s}.byte_ends").stat().st_size != 8 * info["tokens"]:
                return False
            if np.load(folder / f"{s}.bounds.npy", mmap_mode="r").shape != (info["documents"], 2):
                return False
            if np.load(folder / f"{s}.name_ends.npy", mmap_mode="r").shape != (info["documents"],):
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def split_codes(names, n_val_fraction: float, n_test_fraction: float) -> np.ndarray:
    """Which split each document goes to (0 train, 1 validation, 2 test), in the order of ``names``."""
    hi, lo = array("Q"), array("Q")
    for name in names:
        d = hashlib.sha256(name.encode()).digest()
        hi.append(int.from_bytes(d[:8], "big"))
        lo.append(int.from_bytes(d[8:16], "big"))
    n = len(hi)
    n_val = max(1, round(n_val_fraction * n))
    n_test = max(1, round(n_test_fraction * n))
    if n - n_val - n_test < 1:
        raise UserError(f"{n} works cannot be split into train/validation/test; give more text", field=sources.FIELD)
    # big-endian prefixes sort as the hex digests do; 128 bits make a tie between two names impossible in practice
    order = np.lexsort((np.frombuffer(lo, np.uint64), np.frombuffer(hi, np.uint64)))
    codes = np.zeros(n, np.uint8)
    codes[order[:n_val]] = _CODES["validation"]
    codes[order[n_val : n_val + n_test]] = _CODES["test"]
    return codes


class _SplitWriter:
    """Appends documents to one split's token file through a buffered file, hashing what it writes.

    With a ``tokenizer`` (a ``tokenizers.Tokenizer``) a document is encoded whole and written as
    uint32 ids, and ``<split>.byte_ends`` gets, per token, the text bytes up to its end (int64):
    what turns a loss per token into bits per text byte. Bounds stay in text bytes."""

    def __init__(self, folder: Path, name: str, tokenizer=None) -> None:
        self.folder, self.name, self.tok = folder, name, tokenizer
        self.out = open(folder / f"{name}.bin", "wb", buffering=sources.CHUNK_BYTES)  # noqa: SIM115 -- closed in close()
        self.names = open(folder / f"{name}.names", "wb", buffering=sources.CHUNK_BYTES)  # noqa: SIM115
        self.ends = open(folder / f"{name}.byte_ends", "wb", buffering=sources.CHUNK_BYTES) if tokenizer else None  # noqa: SIM115
        self.sha, self.pos, self.bounds, self.name_ends = hashlib.sha256(), 0, array("q"), array("q")
        self.text_pos, self.n_tokens = 0, 0  # text bytes and tokens written (they differ with a tokenizer)

    def write(self, doc_name: str, chunks) -> None:
        if self.bounds:
            self._text(SEPARATOR)
        start = self.text_pos
        if self.tok is None:
            for chunk in chunks:
                self._text(chunk)
        else:
            self._text(b"".join(chunks))
        self.bounds.extend((start, self.text_pos))
        self.names.write(doc_name.encode("utf-8"))
        self.name_ends.append(self.names.tell())

    def _text(self, data: bytes) -> None:
        if self.tok is None:
            self._put(data)
            self.n_tokens += len(data)
        elif data:
            text = data.decode("utf-8")
            enc = self.tok.encode(text, add_special_tokens=False)
            char_ends = np.asarray([e for _, e in enc.offsets], np.int64)
            ends = self.text_pos + np.maximum.accumulate(char_byte_starts(text)[char_ends]) if enc.ids else char_ends
            self._put(np.asarray(enc.ids, "<u4").tobytes())
            self.ends.write(ends.astype("<i8").tobytes())
            self.n_tokens += len(enc.ids)
        self.text_pos += len(data)

    def _put(self, data: bytes) -> None:
        self.out.write(data)
        self.sha.update(data)
        self.pos += len(data)

    def close(self) -> dict:
        self.out.close()
        self.names.close()
        if self.ends:
            self.ends.close()
        np.save(self.folder / f"{self.name}.bounds.npy", np.frombuffer(self.bounds, np.int64).reshape(-1, 2))
        np.save(self.folder / f"{self.name}.name_ends.npy", np.frombuffer(self.name_ends, np.int64))
        info = {"documents": len(self.bounds) // 2, "tokens": self.n_tokens, "sha256": self.sha.hexdigest()}
        return info | {"bytes": self.text_pos}


def char_byte_starts(text: str) -> np.ndarray:
    """Byte offset of every character of ``text`` in UTF-8, plus the total (len(text) + 1 entries)."""
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    widths = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000)
    return np.concatenate([[0], np.cumsum(widths)])


def tokenizer_sha256(folder: Path) -> str:
    return hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()


def load_tokenizer(folder: Path):
    """The fast tokenizer in ``folder/tokenizer.json`` (the ``tokenizers`` library, no network)."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:  # the library raises its own exception types for a bad file
        raise UserError(
            f"{folder}/tokenizer.json cannot be read: {str(e).splitlines()[0]}", field="corpus.tokenizer"
        ) from None


def build(cfg: CorpusConfig, files: list[sources.SourceFile], key: str, root: Path, tick: sources.Tick) -> Path:
    """Tokenize ``files`` into ``root/key`` (or take the copy another process finished first)."""
    codes = split_codes(sources.document_names(files), cfg.validation_fraction, cfg.test_fraction)
    root.mkdir(parents=True, exist_ok=True)
    _reclaim(root)
    tmp = root / f".tmp-{key[:16]}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    final = root / key
    writers: dict[str, _SplitWriter] = {}
    try:
        tok = None if cfg.tokenizer == BYTES else load_tokenizer(Path(cfg.tokenizer))
        writers = {s: _SplitWriter(tmp, s, tok) for s in SPLITS}
        by_code = {c: writers[s] for s, c in _CODES.items()}
        n = 0
        for n, (name, chunks) in enumerate(sources.documents(files, cfg.text_field, tick), 1):
            if n > codes.size:
                break
            by_code[int(codes[n - 1])].write(name, chunks)
        if n != codes.size:
            raise UserError(f"{cfg.source} changed while it was being tokenized; load it again", field=sources.FIELD)
        splits = {s: w.close() for s, w in writers.items()}
        manifest = {**options(cfg), "source": cfg.source, "content_sha256": key}
        manifest |= (
            {"dtype": "uint8", "vocab_size": 256}
            if tok is None
            else {"dtype": "<u4", "vocab_size": tok.get_vocab_size()}
        )
        (tmp / "manifest.json").write_text(json.dumps({**manifest, "splits": splits}, indent=1))
        if final.exists() and not verify(final):
            shutil.rmtree(final, ignore_errors=True)  # a damaged copy (a disk error, a hand edit): replace it
        try:
            os.rename(tmp, final)
        except OSError:
            if not verify(final):  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            for w in writers.values():
                for f in (w.out, w.names, w.ends):
                    if f:
                        f.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return final


_HOST = socket.gethostname().replace("-", "_")


def _reclaim(root: Path) -> None:
    """Remove what killed tokenizations on this host left (a cache on a shared disk: only this
    host's, whose process ids it can check)."""
    for tmp in root.glob(f".tmp-*-{_HOST}-*-*"):
        pid = tmp.name.rsplit("-", 2)[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def open_split(folder: Path, split: str) -> TokenFile:
    """One split of a cached corpus; its tokens a read-only map of the token file, never read whole."""
    manifest = json.loads((folder / "manifest.json").read_text())
    info = manifest["splits"][split]
    bounds = np.load(folder / f"{split}.bounds.npy", mmap_mode="r")
    works = Works(_map(folder / f"{split}.names"), np.load(folder / f"{split}.name_ends.npy", mmap_mode="r"))
    tokens = _map(folder / f"{split}.bin", info["tokens"], manifest["dtype"])
    ends = None if manifest["tokenizer"] == BYTES else _map(folder / f"{split}.byte_ends", info["tokens"], "<i8")
    return TokenFile(tokens, works, Bounds(bounds), info["sha256"], ends)


def vocab_size(folder: Path) -> int:
    return int(json.loads((folder / "manifest.json").read_text())["vocab_size"])


def _map(path: Path, count: int | None = None, dtype: str = "uint8") -> np.ndarray:
    count = path.stat().st_size // np.dtype(dtype).itemsize if count is None else count
    if count:
        return np.memmap(path, dtype=np.dtype(dtype), mode="r", shape=(count,))
    empty = np.zeros(0, np.dtype(dtype))  # an empty file cannot be mapped
    empty.flags.writeable = False
    return empty
