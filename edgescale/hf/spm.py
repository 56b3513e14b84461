"""A fast tokenizer from a sentencepiece ``tokenizer.model`` alone, without the sentencepiece package.

Bits per byte needs character offsets, which only fast (``tokenizers``) tokenizers give.
A folder that ships only ``tokenizer.model`` (older Llama and Gemma checkpoints) is
turned into one by transformers' own slow-to-fast converter (``LlamaConverter``,
``GemmaConverter``): the result is what ``AutoTokenizer`` builds when sentencepiece is
installed. That converter reads the model file with protobuf (installed with
transformers' dependencies here) and asks a ``SentencePieceProcessor`` only for the
pieces in id order, to derive the BPE merges; those pieces are read from the same
protobuf here, so sentencepiece, which this environment does not install, is not needed.
Other sentencepiece tokenizer classes are refused with a message (their converters read
more of the slow tokenizer than its file holds).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgescale.errors import UserError

# tokenizer classes (tokenizer_config.json) whose converters read no more than _SlowStandIn holds
CONVERTIBLE = ("LlamaTokenizer", "GemmaTokenizer")


class _Pieces:
    """The two ``SentencePieceProcessor`` methods the converters' extractors call."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def GetPieceSize(self) -> int:  # noqa: N802 (sentencepiece's name)
        return len(self.pieces)

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]


class _SlowStandIn:
    """What ``LlamaConverter``/``GemmaConverter`` read from a slow tokenizer: its file, its special
    tokens and its ``legacy``/``add_prefix_space`` settings (slow tokenizers' defaults: True)."""

    def __init__(self, vocab_file: Path, pieces: list[str], cfg: dict) -> None:
        self.vocab_file = str(vocab_file)
        self._pieces = pieces
        self.legacy = cfg.get("legacy") is not False  # None (unset) reads as the slow default, True
        self.add_prefix_space = cfg.get("add_prefix_space") is not False
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            tok = cfg.get(name)
            setattr(self, name, tok.get("content") if isinstance(tok, dict) else tok)

    def convert_ids_to_tokens(self, i: int) -> str:
        return self._pieces[i]


def tokenizer_class(folder: Path) -> str:
    """The slow class ``tokenizer_config.json`` names (without ``Fast``), or "" if none."""
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    return str(cfg.get("tokenizer_class") or "").removesuffix("Fast")


def fast_from_sentencepiece(folder: Path):
    """The folder's tokenizer as a fast one, converted from ``tokenizer.model`` (no tokenizer.json)."""
    from transformers import AutoTokenizer
    from transformers.convert_slow_tokenizer import SLOW_TO_FAST_CONVERTERS, import_protobuf

    cls = tokenizer_class(folder)
    if cls not in CONVERTIBLE:
        raise UserError(
            f"only a sentencepiece tokenizer.model ({cls or 'no tokenizer_class'} in tokenizer_config.json) and no "
            f"tokenizer.json: edgescale converts {' and '.join(CONVERTIBLE)} models to fast tokenizers (character "
            "offsets for bits per byte) and no others; save the fast tokenizer (tokenizer.json) into the folder "
            "with transformers, or set tokenizer: bytes",
            file=folder / "tokenizer.model",
            field="hf_model.tokenizer",
        )
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString((folder / "tokenizer.model").read_bytes())
    except Exception as e:  # noqa: BLE001 -- protobuf's DecodeError and friends; one message names the file
        raise UserError(f"not a sentencepiece model: {e}", file=folder / "tokenizer.model") from None
    pieces = [p.piece for p in proto.pieces]
    converter = SLOW_TO_FAST_CONVERTERS[cls]
    extractor = type("ProtoExtractor", (converter.SpmExtractor,), {"__init__": _read_pieces(pieces)})
    backend = type(f"Proto{converter.__name__}", (converter,), {"SpmExtractor": extractor})(
        _SlowStandIn(folder / "tokenizer.model", pieces, cfg)
    ).converted()
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, tokenizer_object=backend)


def _read_pieces(pieces: list[str]):
    def __init__(self, model: str) -> None:  # noqa: N807 (the extractor's constructor, replaced)
        self.sp = _Pieces(pieces)

    return __init__
