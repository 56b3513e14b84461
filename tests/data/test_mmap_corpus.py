"""The tokenized, memory-mapped corpus: formats, bad rows, the content-hash cache, the split kept
byte-identical to the in-memory loader it replaced, and flat memory on a corpus of 1 GB."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgescale.config import CorpusConfig
from edgescale.data import tokenized
from edgescale.data.corpus import Split, load_corpus, shakespeare_dir, train_batch
from edgescale.errors import UserError

SPLITS = ("train", "validation", "test")


def _old_load(cfg: CorpusConfig, base: Path) -> dict[str, Split]:
    """The loader before the memory-mapped corpus (edgescale 0.x), verbatim but for its inputs:
    every work read into memory, each split joined into one blob."""
    if cfg.source == "shakespeare":
        files = sorted(shakespeare_dir().glob("*_gut.txt"))
        works = [(f.name.removesuffix("_gut.txt"), f.read_bytes()) for f in files]
    else:
        path = base / cfg.source
        if path.is_dir():
            works = [(str(f.relative_to(path)), f.read_bytes()) for f in sorted(path.rglob("*.txt"))]
        else:
            data, works, start = path.read_bytes(), [], 0
            size = max(1, len(data) // 20)
            while start < len(data):
                end = data.find(b"\n", start + size)
                end = len(data) if end < 0 else end + 1
                works.append((f"{path.name}#{len(works):02d}", data[start:end]))
                start = end
    works.sort(key=lambda w: hashlib.sha256(w[0].encode()).hexdigest())
    n = len(works)
    n_val, n_test = max(1, round(cfg.validation_fraction * n)), max(1, round(cfg.test_fraction * n))
    parts = {"validation": works[:n_val], "test": works[n_val : n_val + n_test], "train": works[n_val + n_test :]}
    out = {}
    for split in SPLITS:
        ws = sorted(parts[split])
        blob = b"\n\n".join(d for _, d in ws)
        starts = np.cumsum([0] + [len(d) + 2 for _, d in ws[:-1]])
        bounds = tuple((int(a), int(a) + len(d)) for a, (_, d) in zip(starts, ws, strict=True))
        out[split] = Split(
            split, tuple(w for w, _ in ws), np.frombuffer(blob, np.uint8), hashlib.sha256(blob).hexdigest(), bounds
        )
    return out


def _assert_same(new, old: dict[str, Split]) -> None:
    for s in SPLITS:
        a, b = new[s], old[s]
        assert isinstance(a.tokens, np.memmap) and not a.tokens.flags.writeable
        assert (a.works, a.work_bounds, a.sha256) == (b.works, b.work_bounds, b.sha256), s
        assert a.tokens.tobytes() == b.tokens.tobytes()


def test_shakespeare_split_is_byte_identical_to_the_in_memory_loader(tmp_path):
    cfg = CorpusConfig(cache_dir=str(tmp_path))
    _assert_same(load_corpus(cfg), _old_load(cfg, tmp_path))
    cfg = CorpusConfig(cache_dir=str(tmp_path), validation_fraction=0.3, test_fraction=0.2)
    _assert_same(load_corpus(cfg), _old_load(cfg, tmp_path))


def test_txt_folder_and_file_are_byte_identical_to_the_in_memory_loader(tmp_path):
    books = tmp_path / "books"
    (books / "a").mkdir(parents=True)
    names = ["a/b.txt", "a-c.txt", "z.txt", "é.txt", "a/ü/../d.txt", "A.txt", "0.txt", "n.txt", "m.txt", "e.txt"]
    for i, n in enumerate(names):  # "a/b" sorts before "a-c" as a Path, after it as a string
        p = books / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"book {i} é\n" * (50 + i))
    (books / "empty.txt").write_text("")
    _assert_same(load_corpus(CorpusConfig(source="books"), tmp_path), _old_load(CorpusConfig(source="books"), tmp_path))
    (tmp_path / "one.txt").write_text("".join(f"line {i} of one file\n" for i in range(997)) + "no newline at the end")
    cfg = CorpusConfig(source="one.txt")
    _assert_same(load_corpus(cfg, tmp_path), _old_load(cfg, tmp_path))


def _write_parquet(path: Path, texts: list, batch_rows: int = 3) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(texts))), "body": texts}), path, row_group_size=batch_rows)


def test_jsonl_parquet_and_mixed_folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    rows = [{"body": f"row {i} ü"} for i in range(12)]
    (docs / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:6]) + "\n\n" + json.dumps(rows[6]) + "\n")
    _write_parquet(docs / "b.parquet", [f"pq {i}" for i in range(11)])
    (docs / "c.txt").write_text("a plain text document")
    c = load_corpus(
        CorpusConfig(source="docs", text_field="body", validation_fraction=0.2, test_fraction=0.2), tmp_path
    )
    works = sorted(w for s in SPLITS for w in c[s].works)
    assert len(works) == 7 + 11 + 1 and "a.jsonl#8" in works and "a.jsonl#7" not in works  # line 7 is blank
    assert "b.parquet#00" in works and "b.parquet#10" in works and "c.txt" in works
    for s in SPLITS:  # each split in name order, and each bound holds its document's text
        sp = c[s]
        assert list(sp.works) == sorted(sp.works)
        for w, (a, b) in zip(sp.works, sp.work_bounds, strict=True):
            text = sp.tokens[a:b].tobytes().decode()
            assert text.startswith({"a": "row", "b": "pq", "c": "a plain"}[w[0]])
    single = load_corpus(CorpusConfig(source="docs/b.parquet", text_field="body"), tmp_path)
    assert sum(len(single[s].works) for s in SPLITS) == 11
    single = load_corpus(CorpusConfig(source="docs/a.jsonl", text_field="body"), tmp_path)
    assert sum(single[s].n_bytes for s in SPLITS) == sum(len(f"row {i} ü".encode()) for i in range(7)) + 2 * 4


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("not json", r"x.jsonl line 4: not JSON"),
        ('{"body": "ok"}', r"x.jsonl line 4: no string field 'text'"),
        ('{"text": 3}', r"line 4: no string field 'text'"),
        ('["text"]', r"line 4: no string field"),
        ('{"text": "lone \\ud800 surrogate"}', r"line 4: not UTF-8"),
        (b'{"text": "\xff"}', r"line 4: not UTF-8"),
    ],
)
def test_a_bad_jsonl_row_is_one_clear_error(tmp_path, bad, match):
    good = b'{"text": "ok"}\n'
    (tmp_path / "x.jsonl").write_bytes(
        good * 2 + b"\n" + (bad if isinstance(bad, bytes) else bad.encode()) + b"\n" + good
    )
    with pytest.raises(UserError, match=match) as e:
        load_corpus(CorpusConfig(source="x.jsonl"), tmp_path)
    assert e.value.field == "corpus.source"


def test_bad_parquet_and_text(tmp_path, monkeypatch):
    _write_parquet(tmp_path / "x.parquet", ["a", "b", "c", "d", None, "f"])
    with pytest.raises(UserError, match=r"x.parquet row 4: 'body' is null"):
        load_corpus(CorpusConfig(source="x.parquet", text_field="body"), tmp_path)
    with pytest.raises(UserError, match=r"no column 'text'.*\['id', 'body'\]"):
        load_corpus(CorpusConfig(source="x.parquet"), tmp_path)
    with pytest.raises(UserError, match=r"of type int64, not text"):
        load_corpus(CorpusConfig(source="x.parquet", text_field="id"), tmp_path)
    monkeypatch.setattr("edgescale.data.sources.CHUNK_BYTES", 8)  # a character straddles two chunks
    folder = tmp_path / "t"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_bytes("aaaaaaé".encode() * 3 + (b"\xe9x" if i == 2 else b""))
    with pytest.raises(UserError, match=r"2.txt is not UTF-8 text \(invalid continuation byte at byte 24\)"):
        load_corpus(CorpusConfig(source="t"), tmp_path)


def _folder_corpus(tmp_path: Path, n: int = 10) -> CorpusConfig:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for i in range(n):
        (src / f"{i}.txt").write_text(f"document {i}\n" * 40)
    return CorpusConfig(source=str(src), cache_dir=str(tmp_path / "cache"))


def _corpora(cfg: CorpusConfig) -> list[str]:
    return sorted(p.name for p in Path(cfg.cache_dir).iterdir() if p.name != "stat")


def test_cache_hits_and_misses_on_content(tmp_path, monkeypatch):
    cfg = _folder_corpus(tmp_path)
    first = load_corpus(cfg)
    (key,) = _corpora(cfg)
    manifest = json.loads((Path(cfg.cache_dir) / key / "manifest.json").read_text())
    assert manifest["content_sha256"] == key and manifest["splits"]["train"]["sha256"] == first["train"].sha256
    digest = hashlib.sha256(Path(first["train"].tokens.filename).read_bytes()).hexdigest()
    assert digest == first["train"].sha256 and manifest["splits"]["train"]["documents"] == 8

    calls = []
    monkeypatch.setattr(tokenized, "content_key", lambda *a: calls.append(a) or "never")
    assert load_corpus(cfg)["test"].sha256 == first["test"].sha256 and not calls  # stat unchanged: no hashing
    monkeypatch.undo()

    src = Path(cfg.source) / "3.txt"
    src.write_text(src.read_text())  # same bytes, new mtime: hashed again, same corpus
    assert load_corpus(cfg)["train"].sha256 == first["train"].sha256 and _corpora(cfg) == [key]
    src.write_text("changed\n")
    changed = load_corpus(cfg)
    assert len(_corpora(cfg)) == 2 and {changed[s].sha256 for s in SPLITS} != {first[s].sha256 for s in SPLITS}
    assert (
        load_corpus(cfg.model_copy(update={"validation_fraction": 0.3}))["validation"].works
        != first["validation"].works
    )

    want = first["validation"].tokens.tobytes()
    (Path(cfg.cache_dir) / key / "validation.bin").write_bytes(b"torn")  # damaged: rebuilt, not used
    src.write_text("document 3\n" * 40)
    assert load_corpus(cfg)["validation"].tokens.tobytes() == want


def test_a_failed_or_raced_tokenization_leaves_nothing_half_used(tmp_path, monkeypatch):
    cfg = _folder_corpus(tmp_path)
    real = tokenized._SplitWriter.write

    def dies(self, name, chunks):
        if name == "7.txt":
            raise KeyboardInterrupt  # as a kill would, mid-corpus
        real(self, name, chunks)

    monkeypatch.setattr(tokenized._SplitWriter, "write", dies)
    with pytest.raises(KeyboardInterrupt):
        load_corpus(cfg)
    assert _corpora(cfg) == []  # no temporary folder, no corpus
    monkeypatch.undo()
    files = __import__("edgescale.data.sources", fromlist=["x"]).resolve_files(cfg.source, tmp_path)
    key = tokenized.content_key(cfg, files, lambda n: None)
    root = Path(cfg.cache_dir)
    winner = tokenized.build(cfg, files, key, root, lambda n: None)
    loser = tokenized.build(cfg, files, key, root, lambda n: None)  # renames onto a finished folder: takes it
    assert winner == loser and _corpora(cfg) == [key] and tokenized.verify(winner)


def test_batches_from_the_map_equal_batches_from_memory(tmp_path):
    c = load_corpus(_folder_corpus(tmp_path, 30))
    mapped = c["train"].tokens
    in_memory = np.array(mapped)
    for seed, step in [(0, 0), (0, 5), (3, 1), (7, 10_000)]:
        assert np.array_equal(train_batch(mapped, step, 4, 16, seed), train_batch(in_memory, step, 4, 16, seed))
    again = pickle.loads(blob := pickle.dumps(c["train"]))  # to a worker: the path, not the tokens
    assert len(blob) < 2000 and isinstance(again.tokens, np.memmap)
    assert again.tokens.tobytes() == mapped.tobytes() and again.work_bounds == c["train"].work_bounds


def test_progress_is_reported_in_bytes(tmp_path):
    cfg = _folder_corpus(tmp_path)
    seen = []
    load_corpus(cfg, progress=lambda done, total: seen.append((done, total)))
    total = sum(p.stat().st_size for p in Path(cfg.source).iterdir())
    assert seen and seen[-1] == (total, total) and all(d <= t == total for d, t in seen)


_TOKENIZE = """
import resource, sys
from edgescale.config import CorpusConfig
from edgescale.data.corpus import load_corpus
c = load_corpus(CorpusConfig(source=sys.argv[1], cache_dir=sys.argv[2]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, c["train"].n_bytes)
"""

_TRAIN = """
import resource, sys
from pathlib import Path
from edgescale.config import CorpusConfig, TrainingConfig
from edgescale.data.corpus import load_corpus
from edgescale.models.gpt import GPTConfig
from edgescale.train.trainer import train
corpus = load_corpus(CorpusConfig(source=sys.argv[1], cache_dir=sys.argv[2]))
tc = TrainingConfig(batch_size=4, eval_every_tokens=128 * 3, eval_tokens=256, cooled_eval_tokens=256,
                    checkpoint_every_steps=100, threads=1, learning_rate=1e-2)
train(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32), tc, corpus, 128 * 6, 0, Path(sys.argv[3]), "k")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _generate(folder: Path, files: int, file_bytes: int) -> None:
    """Text fast: one random block of words, repeated with a varying line in front of each copy."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    words = [bytes(rng.integers(97, 123, int(k))) for k in rng.integers(1, 9, 4000)]
    block = b" ".join(words).replace(b"q", b"\n")[: 1 << 16]
    for i in range(files):
        with open(folder / f"{i:03d}.txt", "wb") as fh:
            for j in range(file_bytes // (len(block) + 16)):
                fh.write(b"%03d/%010d: " % (i, j) + block)


def _rss(script: str, *args: Path) -> list[int]:
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return [int(x) for x in out.stdout.split()]


@pytest.mark.slow  # about 15 s: 1 GB written, tokenized and trained on
def test_peak_rss_stays_flat_on_a_1gb_corpus(tmp_path):
    """Tokenizing and training on 1 GB take about the memory they take on 10 MB."""
    rss = {}
    try:
        for label, files, size in (("10mb", 8, 10 << 17), ("1gb", 64, 16 << 20)):
            src, cache = tmp_path / f"src-{label}", tmp_path / f"cache-{label}"
            _generate(src, files, size)
            tok_rss, train_bytes = _rss(_TOKENIZE, src, cache)
            assert train_bytes > files * size * 0.6
            (train_rss,) = _rss(_TRAIN, src, cache, tmp_path / f"run-{label}")
            rss[label] = (tok_rss, train_rss)
    finally:  # pytest keeps the last runs' tmp_path: not 2 GB of them
        shutil.rmtree(tmp_path, ignore_errors=True)
    print({k: [f"{v / 2**20:.0f} MiB" for v in vs] for k, vs in rss.items()})
    assert rss["1gb"][0] < rss["10mb"][0] + (64 << 20)  # tokenizing: streamed, buffers of a megabyte
    assert rss["1gb"][1] < rss["10mb"][1] + (300 << 20)  # training: batches read from the map


def test_names_and_bounds_are_read_from_disk_and_equal_tuples(tmp_path):
    c = load_corpus(_folder_corpus(tmp_path, 30))
    works, bounds = c["train"].works, c["train"].work_bounds
    assert isinstance(works, tokenized.Works) and isinstance(bounds, tokenized.Bounds)
    names, spans = tuple(works), tuple(bounds)
    assert works == names and names == works and bounds == spans and len(works) == len(bounds) == 24
    assert works[-1] == names[-1] and works[1:3] == names[1:3] and bounds[2] == spans[2] and bounds[:2] == spans[:2]
    assert all(isinstance(x, int) for x in spans[0]) and works != names[:-1] and "0.txt" in works
    with pytest.raises(IndexError):
        works[24]


def test_a_full_or_read_only_cache_is_one_clear_error(tmp_path, monkeypatch):
    import errno

    from edgescale.errors import EnvironmentFailure

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tokenized, "build", full)
    with pytest.raises(EnvironmentFailure, match="no space left"):
        load_corpus(_folder_corpus(tmp_path))


def test_what_a_killed_tokenization_left_is_reclaimed(tmp_path):
    cfg = _folder_corpus(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    root = Path(cfg.cache_dir)
    left = root / f".tmp-{'0' * 16}-{tokenized._HOST}-{int(dead.stdout)}-abcd"
    alive = root / f".tmp-{'0' * 16}-{tokenized._HOST}-{os.getpid()}-abcd"
    for d in (left, alive):
        d.mkdir(parents=True)
        (d / "train.bin").write_bytes(b"half")
    load_corpus(cfg)
    assert not left.exists() and alive.exists()  # a running tokenization's folder is left alone


def test_the_default_progress_is_quiet_when_small_and_a_bar_when_large(tmp_path, capsys):
    from edgescale.data import corpus
    from edgescale.progress import _ADVANCE, Reporter

    load_corpus(_folder_corpus(tmp_path))
    assert capsys.readouterr().err == ""
    big = corpus.PROGRESS_MIN_BYTES
    with corpus._progress(None, big) as report:  # no Reporter running: a bar of its own on stderr
        report("tokenizing", big // 2, big)
    seen = []
    with Reporter().status("loading"):  # inside a Reporter's status: progress goes to its row
        assert _ADVANCE.get() is not None
        _ADVANCE.set(lambda d, t: seen.append((d, t)))  # (the status's own row, observed)
        with corpus._progress(None, big) as report:
            report("tokenizing", 5, big)
    assert seen == [(5, big)]
