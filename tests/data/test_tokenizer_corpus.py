"""A corpus in a local tokenizer's tokens: tokenized once into the map with each token's text bytes,
scored in bits per text byte, and a GPT ladder trained on it end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from edgescale.bench.loss import score
from edgescale.config import CorpusConfig, Study
from edgescale.data.corpus import eval_spans, load_corpus
from edgescale.errors import UserError
from edgescale.progress import Reporter
from edgescale.run import run_study


@pytest.fixture(scope="module")
def texts(tmp_path_factory, corpus):
    """A folder of 12 documents cut from the train split (non-ASCII included) and a byte-level BPE
    tokenizer of 400 ids trained on them, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("tok")
    docs = root / "docs"
    docs.mkdir()
    text = corpus["train"].tokens[:240_000].tobytes().decode("utf-8", "ignore")
    for i in range(12):
        (docs / f"d{i:02d}.txt").write_text(text[i * 20_000 : (i + 1) * 20_000] + " café – naïve\n")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(p) for p in sorted(docs.iterdir())], trainer)
    (root / "tok").mkdir()
    tok.save(str(root / "tok" / "tokenizer.json"))
    return root


def test_tokens_carry_their_text_bytes(texts, tmp_path):
    cfg = dict(source=str(texts / "docs"), cache_dir=str(tmp_path / "cache"))
    as_bytes = load_corpus(CorpusConfig(**cfg))
    tokens = load_corpus(CorpusConfig(**cfg, tokenizer=str(texts / "tok")))
    assert tokens.vocab_size == 400 and tokens.tokenizer == str((texts / "tok").resolve())
    for name in ("train", "validation", "test"):
        b, t = as_bytes[name], tokens[name]
        assert t.tokens.dtype == np.dtype("<u4") and int(t.tokens.max()) < 400
        assert t.n_tokens < 0.8 * b.n_tokens  # BPE merges: fewer tokens than bytes
        assert t.n_bytes == b.n_bytes and t.works == b.works and t.work_bounds == b.work_bounds  # the same text
        assert np.all(np.diff(t.byte_ends) >= 0) and t.byte_ends[-1] == b.n_bytes
    # the ids decode back to the split's text
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(texts / "tok" / "tokenizer.json"))
    val = tokens["validation"]
    text = as_bytes["validation"].tokens[: val.byte_ends[4999]].tobytes()
    assert tok.decode(val.tokens[:5000].tolist()).encode() == text


def test_a_score_in_tokens_is_reported_per_text_byte(texts, tmp_path):
    c = load_corpus(CorpusConfig(source=str(texts / "docs"), cache_dir=str(tmp_path), tokenizer=str(texts / "tok")))
    split = c["validation"]
    spans = eval_spans(split, 4096, 4, "spread")  # byte segments mapped onto the tokens by their byte ends
    res = score(lambda ids: np.zeros((*ids.shape, 400), np.float32), split, 32, 32, 4096, 8, spans)
    assert abs(res.bytes - 4096) < 64  # the same bytes a byte-level model would score, to within a token or so
    assert res.bits_per_byte == pytest.approx(math.log2(400) * res.tokens / res.bytes)
    assert res.windows.bytes.sum() == res.bytes and math.isfinite(res.se_bpb)


def test_a_ladder_trains_and_is_scored_in_the_tokenizers_tokens(texts, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESCALE_DB", str(tmp_path / "store.db"))
    study = {
        "schema_version": 1,
        "name": "tok",
        "corpus": {"source": str(texts / "docs"), "tokenizer": str(texts / "tok"), "validation_fraction": 0.2},
        "ladder": {"block_size": 32, "sizes": [{"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 16}]},
        "training": {"tokens_per_param": 1, "min_tokens": 4096, "max_tokens": 4096, "batch_size": 8, "threads": 1,
                     "eval_every_tokens": 4096, "eval_tokens": 512, "cooled_eval_tokens": 512},
        "evaluation": {"context_length": 32, "stride": 32, "max_bytes": 2048, "batch_size": 8},
        "measurement": {"prompt_len": 8, "decode_context": 32, "repeats": 3, "warmup": 1, "threads": 1},
        "recipes": ["fp32"],
        "devices": ["host"],
    }  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    run = run_study(path, tmp_path / "run", Reporter(quiet=True))
    results = json.loads((run / "results.json").read_text())
    (v,) = results["variants"]
    assert v["params_total"] - v["params_non_embedding"] == 400 * 16 + 32 * 16  # the tokenizer's vocabulary
    assert v["tokenizer"].startswith(str((texts / "tok").resolve()) + " sha256:")
    loss = v["loss"]["validation"]
    assert 0 < loss["bits_per_byte"] < 12 and loss["bytes"] > loss["tokens"]  # tokens span several bytes
    assert json.loads((run / "manifest.json").read_text())["corpus"]["tokenizer"].endswith("tok")


def test_a_tokenizer_is_for_the_ladder_only_and_must_exist(texts, tmp_path):
    base = {"schema_version": 1, "name": "x", "recipes": ["fp32"], "corpus": {"tokenizer": str(texts / "tok")}}
    with pytest.raises(ValueError, match="a tokenizer folder sets the vocabulary of the GPT ladder"):
        Study.model_validate({**base, "hf_model": {"path": str(tmp_path)}})
    with pytest.raises(UserError, match="corpus.tokenizer: .*holds no tokenizer.json"):
        load_corpus(CorpusConfig(source=str(texts / "docs"), cache_dir=str(tmp_path), tokenizer=str(tmp_path)))
