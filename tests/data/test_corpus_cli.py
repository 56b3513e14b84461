"""``edgescale corpus``: tokenizes into the cache and prints the splits a study would train on."""

import json

from cli_runner import run_cli

from edgescale.config import CorpusConfig
from edgescale.data.corpus import load_corpus


def test_corpus_command_prints_the_splits_load_corpus_gives(tmp_path):
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"body": f"document {i}\n" * 9}) + "\n" for i in range(20)))
    r = run_cli("corpus", "docs.jsonl", "--text-field", "body", "--cache-dir", "cache", "--json", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    want = load_corpus(CorpusConfig(source="docs.jsonl", text_field="body", cache_dir="cache"), tmp_path)
    want_train = {"works": 16, "bytes": want["train"].n_bytes, "tokens": want["train"].n_tokens}
    assert out["splits"]["train"] == {**want_train, "sha256": want["train"].sha256}
    assert out["cache"].endswith(str(want["train"].tokens.filename).rsplit("/", 2)[1])
    r = run_cli("corpus", "docs.jsonl", "--test-fraction", "0.5", cwd=tmp_path)
    assert r.returncode == 2 and "--test-fraction" in r.stderr
    r = run_cli("corpus", "docs.jsonl", "--cache-dir", "cache", cwd=tmp_path)  # text_field "text": no such field
    assert r.returncode == 2 and "docs.jsonl line 1: no string field 'text'" in r.stderr
