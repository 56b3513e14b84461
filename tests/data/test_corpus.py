"""Deterministic split by work, byte tokens, and the evaluation windows."""

import numpy as np
import pytest

from edgescale.config import CorpusConfig
from edgescale.data.corpus import eval_windows, load_corpus, train_batch
from edgescale.errors import UserError


def test_default_corpus_splits_by_work_deterministically(corpus):
    again = load_corpus(CorpusConfig())
    works = [set(corpus[s].works) for s in ("train", "validation", "test")]
    assert not (works[0] & works[1] or works[0] & works[2] or works[1] & works[2])
    assert sum(len(w) for w in works) == 42
    for s in ("train", "validation", "test"):
        assert corpus[s].sha256 == again[s].sha256
    assert corpus["train"].n_bytes > 3_000_000 and corpus["validation"].n_bytes > 100_000
    assert corpus["train"].tokens.dtype == np.uint8  # one token per byte


def test_text_file_and_folder_sources(tmp_path):
    text = "".join(f"line {i} of a small local corpus\n" for i in range(2000))
    (tmp_path / "one.txt").write_text(text)
    c = load_corpus(CorpusConfig(source="one.txt"), tmp_path)
    assert sum(c[s].n_bytes for s in ("train", "validation", "test")) >= len(text)
    folder = tmp_path / "books"
    folder.mkdir()
    for i in range(10):
        (folder / f"b{i}.txt").write_text(text[i * 100 :])
    c = load_corpus(CorpusConfig(source="books"), tmp_path)
    assert (len(c["train"].works), len(c["validation"].works), len(c["test"].works)) == (8, 1, 1)


def test_bad_sources_are_clear(tmp_path):
    with pytest.raises(UserError, match="neither 'shakespeare' nor an existing"):
        load_corpus(CorpusConfig(source="missing.txt"), tmp_path)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00" * 1000)
    with pytest.raises(UserError, match="not UTF-8"):
        load_corpus(CorpusConfig(source="bin.txt"), tmp_path)


@pytest.mark.parametrize(("context", "stride"), [(8, 8), (8, 4), (8, 1), (16, 5)])
def test_eval_windows_score_every_token_once(context, stride):
    windows = eval_windows(500, context, stride, 10_000)
    scored = [s + j + 1 for s, first in windows for j in range(first, context)]
    assert scored == list(range(1, len(scored) + 1))  # contiguous, no token twice
    assert all(first in (0, context - stride) for _, first in windows)


def test_eval_windows_respect_max_tokens():
    windows = eval_windows(10_000, 16, 16, 100)
    assert sum(16 - f for _, f in windows) <= 100 and len(windows) == 6


def test_train_batch_depends_only_on_seed_and_step(corpus):
    t = corpus["train"].tokens
    a, b = train_batch(t, 7, 4, 16, 0), train_batch(t, 7, 4, 16, 0)
    assert a.shape == (4, 17) and (a == b).all()
    assert not (train_batch(t, 8, 4, 16, 0) == a).all()
