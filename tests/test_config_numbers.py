"""Numbers are checked at the door (issue 17, cases 2-4 and 14): what ``edgescale validate`` accepts,
``run`` can run. Floats are finite, integers are integers, and every count has an upper bound; a
run whose training diverges stops with one error naming the size, the step and the setting to lower,
and caches nothing."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml
from cli_runner import run_cli
from safetensors.torch import load_file
from tiny_study import TINY

from edgescale.config import MAX_BATCH_TOKENS, Study, TrainingConfig
from edgescale.errors import UserError
from edgescale.models.gpt import GPTConfig
from edgescale.study_inputs import critical_batch
from edgescale.train import trainer
from edgescale.train.trainer import TrainingDiverged, train

RAW = "@@raw@@"  # replaced by the YAML text of the value under test, so it is read as YAML reads it
PLANNED = {"block_size": 32, "params_non_embedding": [1e4]}

# (where, YAML text of the value, the field the error must name): the red-team values of issue 17,
# cases 2, 3 and 14, as a user writes them.
RED_TEAM = [
    ("ladder.params_non_embedding", "[1e12]", "ladder.params_non_embedding.0"),
    ("ladder.params_non_embedding", "[1.0e+12]", "ladder.params_non_embedding.0"),
    ("ladder.params_non_embedding", "[.inf]", "ladder.params_non_embedding.0"),
    ("ladder.params_non_embedding", "[.nan]", "ladder.params_non_embedding.0"),
    ("training.tokens_per_param", ".inf", "training.tokens_per_param"),
    ("seed", "1e30", "seed"),
    ("seed", "1.0e+30", "seed"),
    ("seed", "4294967296", "seed"),
    ("training.batch_size", "1e12", "training.batch_size"),
    ("training.batch_size", "1000000000000", "training.batch_size"),
    ("loss_target_bpb", ".inf", "loss_target_bpb"),
    ("loss_target_bpb", "8", "loss_target_bpb"),
    ("training.learning_rate", ".inf", "training.learning_rate"),
    ("training.learning_rate", "10", "training.learning_rate"),
    ("ladder.sizes.0.n_layer", "true", "ladder.sizes.0.n_layer"),
    ("ladder.sizes.0.n_layer", "'1'", "ladder.sizes.0.n_layer"),
    ("ladder.sizes.0.n_layer", "1.0", "ladder.sizes.0.n_layer"),
    ("evaluation.degradation_grid", "1", "evaluation.degradation_grid"),
    ("measurement.repeats", ".nan", "measurement.repeats"),
    ("training.max_tokens", "1e15", "training.max_tokens"),
]


def _study_text(where: str, raw: str) -> str:
    """TINY with the value at ``where`` set to the YAML text ``raw``."""
    doc = copy.deepcopy(TINY)
    if where.startswith("ladder.params_non_embedding"):
        doc["ladder"] = dict(PLANNED)
        doc.pop("distillation")  # it names the sizes a, b
    *path, last = where.split(".")
    node = doc
    for part in path:
        node = node[int(part) if part.isdigit() else part]
    node[int(last) if last.isdigit() else last] = RAW
    text = yaml.safe_dump(doc, sort_keys=False)
    assert text.count(f"'{RAW}'") == 1
    return text.replace(f"'{RAW}'", raw)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(("where", "raw", "field"), RED_TEAM, ids=[f"{w}={r}" for w, r, _ in RED_TEAM])
def test_validate_refuses_what_run_would_crash_on(tmp_path, where, raw, field):
    study = tmp_path / "study.yaml"
    study.write_text(_study_text(where, raw))
    r = run_cli("validate", study, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr[-2000:])
    line = _one_line(r.stderr)
    assert f"{study}: {field}: " in line, line
    # and run refuses it the same way, before the run directory exists
    out = tmp_path / "run"
    r = run_cli("run", study, "--out", out, "-q", cwd=tmp_path)
    assert r.returncode == 2 and f"{field}: " in _one_line(r.stderr)
    assert not out.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("where", "raw"),
    [
        ("seed", "4294967295"),  # the largest seed
        ("training.learning_rate", "1"),  # a YAML int in a float field
        ("training.learning_rate", "3e-3"),  # YAML 1.1 reads this as a string; pydantic's float parses it
        ("loss_target_bpb", "2"),
        ("training.batch_size", "4096"),  # x block_size 32: within MAX_BATCH_TOKENS
        ("ladder.params_non_embedding", "[1000, 5.0e+8]"),
    ],
)
def test_numbers_at_the_bounds_and_yaml_ints_in_float_fields_still_validate(tmp_path, where, raw):
    study = tmp_path / "study.yaml"
    study.write_text(_study_text(where, raw))
    r = run_cli("validate", study, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]


def test_batch_times_block_size_is_bounded(tmp_path):
    doc = copy.deepcopy(TINY)
    doc["ladder"]["block_size"] = 512
    doc["training"]["batch_size"] = 4096  # within its own bound, but 2^21 tokens per micro-batch
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(doc))
    r = run_cli("validate", study, cwd=tmp_path)
    assert r.returncode == 2 and "training.batch_size x block size" in _one_line(r.stderr)


def test_the_critical_batch_is_capped_by_memory_too():
    doc = copy.deepcopy(TINY) | {"loss_target_bpb": 0.01}
    doc["training"] = doc["training"] | {"batch_rule": "critical", "max_tokens": 10**12}
    study = Study.model_validate(doc)
    assert critical_batch(study, 10**12) * study.block_size <= MAX_BATCH_TOKENS


@pytest.mark.parametrize(
    "step",
    ["{op: prune.magnitude, sparsity: .nan}", "{op: distill.recover, learning_rate: .inf}", "{op: fp16, x: 1}"],
)
def test_recipe_step_params_are_checked_at_the_door(tmp_path, step):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nsteps:\n  - {step}\n")
    r = run_cli("validate", recipe, cwd=tmp_path)
    assert r.returncode == 2 and str(recipe) in _one_line(r.stderr)


def test_an_alias_bomb_in_model_kwargs_is_refused_before_the_run_directory(tmp_path):
    """Case 4: a 700-byte billion-laughs file (validate's refusal: tests/test_yaml_bounds.py)."""
    laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    laughs += [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(9)]
    kwargs = "\n".join("    " + line for line in laughs)
    study = tmp_path / "bomb.yaml"
    study.write_text(f"name: bomb\nmodel:\n  factory: 'edgescale.examples.encoder:encoder_lm'\n  kwargs:\n{kwargs}\n")
    assert study.stat().st_size < 800
    out = tmp_path / "run"
    r = run_cli("run", study, "--out", out, "-q", cwd=tmp_path)
    assert r.returncode == 2 and "alias" in _one_line(r.stderr) and not out.exists()


def test_a_late_invalid_target_names_the_study_field_not_a_flag():
    from edgescale.report.pick import pick

    with pytest.raises(UserError) as e:
        pick([object()], math.inf, "host", target_field="loss_target_bpb")
    assert e.value.field == "loss_target_bpb" and "--" not in str(e.value)


# ----------------------------------------------------------------------------- divergence
CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)
TRAIN = TrainingConfig(batch_size=4, eval_every_tokens=10**6, eval_tokens=256, checkpoint_every_steps=2, threads=1)


def test_a_diverging_run_stops_with_one_clear_error_and_saves_nothing_non_finite(corpus, tmp_path):
    calls = []

    def poison_after_step_3(model):  # a weight blown up by the 3rd update, as a too-large step does
        calls.append(1)
        if len(calls) == 3:
            next(model.parameters()).data[0, 0] = math.inf

    out = tmp_path / "s0"
    with pytest.raises(TrainingDiverged) as e:
        train(CFG, TRAIN, corpus, 4 * 32 * 10, 0, out, "k", after_step=poison_after_step_3)
    msg = str(e.value)
    # the loss at step 4 is the first computed from the poisoned weights; step 4's resume save never happened
    assert "training s0 diverged" in msg and "at step 4 of 10" in msg and e.value.field == "training.learning_rate"
    assert "Lower training.learning_rate" in msg
    assert not (out / "model.safetensors").exists()
    resume = out / "resume.safetensors"
    assert resume.exists()  # the step-2 resume point, from before the blow-up: resuming still works
    assert all(bool(torch.isfinite(t).all()) for t in load_file(resume).values())


def test_non_finite_weights_are_never_saved_even_if_the_loss_is_still_finite(corpus, tmp_path):
    calls: list[int] = []

    def poison_the_last_update(model):  # no loss is computed from it: only the check before saving sees it
        calls.append(1)
        if len(calls) == 4:
            next(model.parameters()).data[0, 0] = math.nan

    out = tmp_path / "s1"
    with pytest.raises(TrainingDiverged, match="the weights are not finite at step 4 of 4"):
        train(CFG, TRAIN, corpus, 4 * 32 * 4, 0, out, "k", after_step=poison_the_last_update)
    assert not (out / "model.safetensors").exists()


def test_a_diverging_study_is_one_line_exit_2_and_caches_no_checkpoint(tmp_path, monkeypatch):
    real = trainer._sgd_step

    def nan_from_step_2(run, model, opt, step, lr):
        loss, ce = real(run, model, opt, step, lr)
        return (math.nan, math.nan) if step >= 1 else (loss, ce)

    monkeypatch.setattr(trainer, "_sgd_step", nan_from_step_2)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    r = run_cli("run", study, "--out", out, "-q", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    line = _one_line(r.stderr)
    assert "training.learning_rate" in line and "training a diverged" in line and "at step 2 of" in line
    assert not list(Path(out).rglob("model.safetensors"))
