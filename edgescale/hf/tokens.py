"""The study's corpus in a model's own tokens, and held-out loss in bits per byte.

Each split's text (UTF-8, as :mod:`edgescale.data.corpus` loaded it) is tokenized in one
pass without special tokens. For every token we keep the number of text bytes covered by
the tokens up to and including it (``byte_ends``), from the tokenizer's character
offsets: token i is charged the bytes between the end of token i-1 and its own end, so
the charges partition the text and sum to its byte length whatever the tokenizer does
with spaces or byte fallback. Scoring then runs the same windows as for byte models
(:func:`edgescale.bench.loss.score`), and

    bits per byte = Σ nats over the scored tokens / ln 2 / bytes those tokens cover,

which is the quantity a byte-level model reports, so tokenizer and byte models share one
frontier axis (the convention of the Pile and of Gao et al. 2020). Without a tokenizer
the ids are the bytes themselves (vocabulary >= 256).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgescale.bench.loss import LossResult, per_text_byte, score
from edgescale.bench.ort_model import OrtCausalLM
from edgescale.data.corpus import Corpus, Split
from edgescale.data.tokenized import char_byte_starts
from edgescale.errors import UserError
from edgescale.hf.source import TOKENIZER_FILES, load_tokenizer


@dataclass(frozen=True)
class TokenizedCorpus:
    corpus: Corpus  # splits hold the model's token ids (int32); vocab_size is the model's
    byte_ends: dict[str, np.ndarray]  # per split: text bytes covered by tokens[0..i]
    tokenizer: str  # "bytes" or the tokenizer's class name

    def __getitem__(self, name: str) -> Split:
        return self.corpus[name]

    def targets_within(self, split: str, max_bytes: int) -> int:
        """How many targets (tokens[1:], in order) end within the first ``1 + max_bytes`` text bytes:
        the span a byte-level model scores under the same cap (its targets are bytes 1..max_bytes)."""
        return max(0, int(np.searchsorted(self.byte_ends[split], 1 + max_bytes, side="right")) - 1)

    def bytes_covered(self, split: str, first: int, count: int) -> int:
        """Text bytes of tokens[first : first + count]."""
        ends = self.byte_ends[split]
        start = int(ends[first - 1]) if first > 0 else 0
        return int(ends[first + count - 1]) - start


def tokenize_split(split: Split, tokenizer, vocab_size: int) -> tuple[Split, np.ndarray]:
    """(the split in token ids, byte_ends); ``tokenizer`` None means byte ids."""
    if tokenizer is None:
        ids = split.tokens.astype(np.int32)
        return replace(split, tokens=ids), np.arange(1, ids.size + 1, dtype=np.int64)
    text = split.tokens.tobytes().decode("utf-8")
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            f"{type(tokenizer).__name__} is a slow (Python) tokenizer without character offsets; "
            "bits per byte needs a fast tokenizer (tokenizer.json) or tokenizer: bytes",
            field="hf_model.tokenizer",
        )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    if ids.size and int(ids.max()) >= vocab_size:
        raise UserError(
            f"the tokenizer produces id {int(ids.max())} but the model has {vocab_size} logits",
            field="hf_model.tokenizer",
        )
    char_ends = np.asarray([e for _, e in enc["offset_mapping"]], dtype=np.int64)
    byte_ends = np.maximum.accumulate(char_byte_starts(text)[char_ends]) if ids.size else np.zeros(0, np.int64)
    h = hashlib.sha256(split.sha256.encode())
    h.update(ids.astype("<i4").tobytes())
    return Split(split.name, split.works, ids.astype(np.int32), h.hexdigest(), split.work_bounds), byte_ends


def tokenize_corpus(corpus: Corpus, tokenizer, vocab_size: int) -> TokenizedCorpus:
    splits, ends = {}, {}
    for name, split in corpus.splits.items():
        splits[name], ends[name] = tokenize_split(split, tokenizer, vocab_size)
    name = type(tokenizer).__name__ if tokenizer is not None else "bytes"
    return TokenizedCorpus(Corpus(corpus.source, splits, vocab_size), ends, name)


def hf_onnx_loss(
    path: Path,
    tc: TokenizedCorpus,
    split: str,
    context_length: int,
    stride: int,
    max_tokens: int,
    batch_size: int,
    spans: list[tuple[int, int]] | None = None,
) -> LossResult:
    """Loss of an ONNX causal LM through onnxruntime on ``split`` in its own tokens, in bits per byte
    (on ``spans``, :func:`edgescale.data.corpus.eval_spans`, or the first ``max_tokens`` targets)."""
    lm = OrtCausalLM(path)
    res = score(lm.logits, tc[split], context_length, stride, max_tokens, batch_size, spans)
    return to_bits_per_byte(res, tc, split)


def to_bits_per_byte(res: LossResult, tc: TokenizedCorpus, split: str) -> LossResult:
    """Re-express a token-level score in bits per text byte (:func:`edgescale.bench.loss.per_text_byte`)."""
    return per_text_byte(res, tc.byte_ends[split])


def check_causal_lm(path: Path):
    """An onnxruntime session over ``path``, or a UserError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", file=path)
    return OrtCausalLM(path)


def resolve_tokenizer(model: Path, tokenizer: str | None):
    """(tokenizer or None for bytes, its description). ``None``: the model's folder if it has one."""
    if tokenizer == "bytes":
        return None, "bytes"
    folder = Path(tokenizer) if tokenizer else Path(model).parent
    if tokenizer and not folder.is_dir():
        raise UserError("not a folder with a Hugging Face tokenizer (or 'bytes')", file=folder, field="--tokenizer")
    if not any((folder / f).exists() for f in TOKENIZER_FILES):
        if tokenizer:
            raise UserError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)})", file=folder, field="--tokenizer")
        return None, "bytes"
    tok = load_tokenizer(folder)
    return tok, f"{type(tok).__name__} ({folder})"
