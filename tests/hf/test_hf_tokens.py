"""Bits per byte with a model's own tokenizer: the byte charges partition the text exactly."""

from __future__ import annotations

import math

import numpy as np

from edgescale.bench.loss import score
from edgescale.hf.tokens import to_bits_per_byte, tokenize_corpus, tokenize_split


def test_byte_charges_sum_to_the_text_and_never_decrease(byte_corpus, tiny_tokenizer):
    for name, split in byte_corpus.splits.items():
        tok, ends = tokenize_split(split, tiny_tokenizer, 320)
        assert tok.tokens.size < split.n_bytes  # BPE merges: fewer tokens than bytes
        assert ends.size == tok.tokens.size and np.all(np.diff(ends) >= 0), name
        assert ends[-1] == split.n_bytes  # every byte charged once, multi-byte characters included


def test_round_trip_of_the_scored_range_matches_its_byte_charge(byte_corpus, tiny_tokenizer):
    split = byte_corpus["validation"]
    tok, ends = tokenize_split(split, tiny_tokenizer, 320)
    text = tiny_tokenizer.decode(tok.tokens[:200].tolist(), clean_up_tokenization_spaces=False)
    assert len(text.encode("utf-8")) == ends[199]


def test_bits_per_byte_of_a_uniform_model_is_log2_vocab_times_tokens_per_byte(byte_corpus, tiny_tokenizer):
    tc = tokenize_corpus(byte_corpus, tiny_tokenizer, 320)
    res = score(lambda ids: np.zeros((*ids.shape, 320), np.float32), tc["validation"], 16, 16, 512, 8)
    bpb = to_bits_per_byte(res, tc, "validation")
    covered = tc.bytes_covered("validation", 1, res.tokens)
    assert bpb.bytes == covered and covered > res.tokens
    assert math.isclose(bpb.bits_per_byte, res.tokens * math.log2(320) / covered, rel_tol=1e-9)
    assert math.isclose(bpb.nats_per_token, math.log(320), rel_tol=1e-9)


def test_without_a_tokenizer_ids_are_bytes(byte_corpus):
    tok, ends = tokenize_split(byte_corpus["test"], None, 256)
    assert np.array_equal(tok.tokens, byte_corpus["test"].tokens) and ends[-1] == byte_corpus["test"].n_bytes
