"""Evaluation text is spread over every work of a split, the same bytes for every tokenizer,
recorded in the protocol and in the cache key (issue 17, case 15: the loss read one play)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from edgescale.bench.loss import score
from edgescale.config import CorpusConfig, EvaluationConfig
from edgescale.data.corpus import eval_segments, eval_spans, load_corpus, token_spans, works_covered

WORDS = ["the", "of", "and", "to", "a", "in", "that", "is", "was", "he", "for", "it", "naïve", "café", "über", "straße"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """10 works of 2-9 KB; 4 go to validation."""
    root = tmp_path_factory.mktemp("works")
    rng = random.Random(0)
    for i in range(10):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(40 + 20 * (i % 4))]
        (root / f"w{i}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_corpus(CorpusConfig(source=str(root), validation_fraction=0.4, test_fraction=0.1))


def _bpe(corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus["train"].tokens.tobytes().decode()], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_segments_cover_every_work_in_proportion_to_its_size(corpus):
    val = corpus["validation"]
    assert len(val.works) == 4 and len(val.work_bounds) == 4
    segs = eval_segments(val, val.n_bytes, 4096, 16, "spread")
    assert len(segs) == 16 and sum(s.length for s in segs) == 4096
    assert works_covered(val, segs) == val.works
    per_work = []
    for ws, we in val.work_bounds:
        inside = [s for s in segs if ws <= s.start and s.start + s.length < s.stop <= we]
        assert inside, (ws, we)  # every work is read, and no segment runs past its own work
        per_work.append(sum(s.length for s in inside))
    assert sum(per_work) == 4096  # every segment sits inside one work
    sizes = np.array([we - ws for ws, we in val.work_bounds])
    share = np.array(per_work) / 4096
    assert np.all(np.abs(share - sizes / sizes.sum()) <= 1 / 16 + 1e-9)  # within one segment of proportional
    starts = [s.start for s in segs]
    assert starts == sorted(starts) and all(a.start + a.length < b.start for a, b in zip(segs, segs[1:], strict=False))
    # the old scheme reads only the split's first work; a budget over the split reads all of it
    head = eval_segments(val, val.n_bytes, 1000, 16, "head")
    assert works_covered(val, head) == val.works[:1] and head[0].start == 0 and head[0].length == 1000
    whole = eval_segments(val, val.n_bytes, 10**9, 16, "spread")
    assert len(whole) == 1 and whole[0].length == val.n_bytes - 1


def test_every_work_gets_a_segment_even_with_fewer_segments_than_works(corpus):
    val = corpus["validation"]
    segs = eval_segments(val, val.n_bytes, 2000, 1, "spread")
    assert len(segs) == 4 and works_covered(val, segs) == val.works and sum(s.length for s in segs) == 2000


def _uniform(vocab):
    return lambda ids: np.zeros((*ids.shape, vocab), np.float32)


def test_two_tokenizers_score_the_same_bytes(corpus):
    from edgescale.hf.tokens import TokenizedCorpus, to_bits_per_byte, tokenize_split

    val, e = corpus["validation"], EvaluationConfig(context_length=32, stride=32, max_bytes=4000, segments=16)
    segs = eval_segments(val, val.n_bytes, e.max_bytes, e.segments, e.sampling)
    byte_res = score(_uniform(256), val, 32, 32, e.max_bytes, 8, eval_spans(val, e.max_bytes, e.segments, e.sampling))
    assert byte_res.bytes == e.max_bytes and len(byte_res.windows.nats) >= 16
    assert byte_res.bits_per_byte == pytest.approx(8.0)  # a uniform model over 256 ids: 8 bits per byte
    tok = _bpe(corpus)
    split, ends = tokenize_split(val, tok, len(tok))
    assert split.work_bounds == val.work_bounds and split.tokens.size < val.n_bytes
    spans = eval_spans(split, e.max_bytes, e.segments, e.sampling, ends)
    tc = TokenizedCorpus(corpus, {"validation": ends}, "bpe")
    res = to_bits_per_byte(score(_uniform(len(tok)), split, 32, 32, 0, 8, spans), tc, "validation")
    longest = int(np.diff(ends, prepend=0).max())
    assert e.max_bytes - longest <= res.bytes <= e.max_bytes  # the same byte total, to within one token
    assert res.tokens < byte_res.tokens and math.isfinite(res.se_bpb) and res.windows.bytes.sum() == res.bytes
    # ... at the same places: each span's scored bytes start within one token of its byte segment
    first_byte = [int(ends[first]) for first, _ in spans]
    assert len(spans) == len(segs)
    for seg, b in zip(segs, first_byte, strict=True):
        assert seg.start + 1 <= b <= seg.start + longest and b < seg.stop


def test_short_segments_are_scored_with_a_short_window(corpus):
    val = corpus["validation"]
    spans = token_spans(eval_segments(val, val.n_bytes, 200, 8, "spread"))  # 25 bytes per segment, context 64
    res = score(_uniform(256), val, 64, 64, 0, 4, spans)
    assert res.tokens == 200 and len(res.windows.nats) == 8
    assert list(res.windows.starts) == [s + 1 for s, _ in spans]


def test_head_spans_score_as_before(corpus):
    """The head scheme as explicit spans scores what the scorer scored without them."""
    val = corpus["validation"]
    rng = np.random.default_rng(0)
    table = rng.normal(size=(256, 256)).astype(np.float32)
    fn = lambda ids: table[ids]  # noqa: E731 - a bigram model: the loss depends on which bytes are scored
    spans = eval_spans(val, 1000, 32, "head")
    a, b = score(fn, val, 48, 32, 1000, 4), score(fn, val, 48, 32, 1000, 4, spans)
    assert (a.tokens, a.bits_per_byte, a.se_bpb) == (b.tokens, b.bits_per_byte, b.se_bpb) and a.tokens == 1000
    spread = score(fn, val, 48, 32, 1000, 4, eval_spans(val, 1000, 32, "spread"))
    assert spread.tokens == 1000 and spread.bits_per_byte != a.bits_per_byte


def test_protocol_records_the_sampling(corpus):
    from edgescale.results.assemble import sampling
    from edgescale.results.schema import Protocol

    e = EvaluationConfig(context_length=32, stride=32, max_bytes=4096, segments=16)
    base = {"context_length": 32, "stride": 32, "max_bytes": 4096, "split_sha256": "x", "unit": "bits_per_byte"}
    p = Protocol.model_validate(base | {"sampling": sampling(corpus, e)})
    assert p.sampling.scheme == "spread" and p.sampling.segments == 16
    val = p.sampling.splits["validation"]
    assert val.works == list(corpus["validation"].works) and val.bytes == 4096 and val.segments == 16
    assert p.sampling.splits["test"].works == list(corpus["test"].works)
    head = sampling(corpus, e.model_copy(update={"sampling": "head", "max_bytes": 1000}))
    assert head["splits"]["validation"]["works"] == [corpus["validation"].works[0]] and head["segments"] is None
    assert Protocol.model_validate(base).sampling is None  # runs from before still read


def test_the_scheme_is_part_of_the_loss_cache_key():
    from edgescale.pipeline import scoring
    from edgescale.rundir import key_of

    def key(e):
        return key_of("loss", onnx="sha", split="sha", protocol=scoring(e), v="1")

    e = EvaluationConfig()
    assert e.sampling == "spread" and e.max_bytes >= 2 * 65_536  # the default reads every work, 2x the old bytes
    keys = {key(e), key(e.model_copy(update={"sampling": "head"})), key(e.model_copy(update={"segments": 16}))}
    assert len(keys) == 3
    assert key(e) == key(e.model_copy(update={"degradation_grid": False}))  # not how a loss is scored
