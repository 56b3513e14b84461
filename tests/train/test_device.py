"""training.device: the decisions for every device (tested here, on the CPU, from capabilities),
autocast off on the CPU, dtype handling, resume across a device change (simulated by saving
on bf16 and loading on fp32, and the reverse), compile, and the training key."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_study import TINY

from edgescale.config import Study, TrainingConfig
from edgescale.errors import UserError
from edgescale.models.checkpoint import build_model, save_model, spec_meta
from edgescale.models.gpt import GPTConfig
from edgescale.rundir import key_of
from edgescale.train.device import (
    DeviceSetup,
    autocast,
    decide,
    device_peak,
    device_setup,
    gpu_peak,
    pick_device,
    resolve_device,
)
from edgescale.train.resume import _load_resume, _save_resume
from edgescale.train.trainer import _optimizer, _Run, _sgd_step, lr_at, train

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)
TRAIN = TrainingConfig(batch_size=8, eval_every_tokens=10**6, eval_tokens=256, checkpoint_every_steps=4, threads=1)
TOKENS = 256 * 12  # 12 steps of 8 x 32
CPU = DeviceSetup("cpu")


@pytest.mark.parametrize(
    ("requested", "cuda", "mps", "want"),
    [
        ("auto", True, True, "cuda"),
        ("auto", False, True, "mps"),
        ("auto", False, False, "cpu"),
        ("cpu", True, True, "cpu"),
        ("cuda", True, False, "cuda"),
        ("mps", False, True, "mps"),
    ],
)
def test_the_device_picked_for_each_request_and_machine(requested, cuda, mps, want):
    assert pick_device(requested, cuda, mps) == want


@pytest.mark.parametrize(("requested", "cuda", "mps"), [("cuda", False, True), ("mps", True, False)])
def test_an_absent_device_is_one_user_error_naming_training_device(requested, cuda, mps):
    with pytest.raises(UserError, match=f"{requested} was asked for") as e:
        pick_device(requested, cuda, mps)
    assert e.value.field == "training.device"


def test_cuda_decisions_with_and_without_bf16():
    s = decide("cuda", bf16_supported=True, compile=True)
    assert (s.autocast_dtype, s.dtype, s.tf32, s.fused_adamw, s.pin_memory, s.non_blocking, s.compile) == (
        "bfloat16",
        torch.bfloat16,
        True,
        True,
        True,
        True,
        True,
    )
    old = decide("cuda", bf16_supported=False)
    assert old.autocast_dtype is None and old.dtype is None and old.tf32  # no fp16 without a loss scaler
    assert s.key() == {"device": "cuda", "autocast": "bfloat16", "tf32": True, "compile": "inductor"}
    assert old.key()["autocast"] is None and old.key() != s.key()


def test_mps_and_cpu_decisions():
    mps = decide("mps")
    assert (mps.autocast_dtype, mps.pin_memory, mps.non_blocking, mps.fused_adamw, mps.tf32) == (
        None,
        False,
        False,
        True,
        False,
    )
    assert mps.notes and mps.key() == {"device": "mps", "autocast": None, "tf32": False}
    cpu = decide("cpu")
    assert cpu == CPU and cpu.key() == {}  # the CPU default adds nothing to a training key
    assert decide("cpu", compile=True).key() == {"compile": "inductor"}


def test_this_machine_resolves_and_refuses_what_it_lacks():
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    with pytest.raises(UserError) as e:
        resolve_device("cuda")
    assert e.value.field == "training.device"
    assert device_setup(TrainingConfig()) == CPU  # the default: cpu
    assert resolve_device("auto").type in ("cpu", "mps")


def test_training_on_an_absent_cuda_fails_before_anything_is_written(corpus, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    with pytest.raises(UserError, match="cuda was asked for"):
        train(CFG, TRAIN.model_copy(update={"device": "cuda"}), corpus, TOKENS, 0, tmp_path / "run", "k")
    assert not (tmp_path / "run").exists()


def test_autocast_is_a_real_disabled_autocast_on_cpu():
    ctx = autocast(CPU)
    assert isinstance(ctx, torch.autocast) and not ctx._enabled
    model = build_model(CFG, seed=0)
    ids = torch.randint(0, 256, (2, 32))
    with autocast(CPU):
        logits = model.logits(ids)
    assert logits.dtype == torch.float32 and torch.equal(logits, model.logits(ids))
    # the same context with a dtype is a working autocast: the CPU one above is off, not absent
    with autocast(DeviceSetup("cpu", "bfloat16")):
        assert model.logits(ids).dtype == torch.bfloat16


def test_checkpoint_tensors_are_cpu_in_the_parameters_dtype(tmp_path):
    model = build_model(CFG, seed=0)
    path = save_model(model, tmp_path / "m.safetensors", spec_meta(CFG))
    assert {v.dtype for v in load_file(str(path)).values()} == {torch.float32}
    half = save_model(build_model(CFG, seed=0).to(torch.bfloat16), tmp_path / "h.safetensors", spec_meta(CFG))
    assert {v.dtype for v in load_file(str(half)).values()} == {torch.bfloat16}


def _interrupted(corpus, out, cfg=TRAIN):
    """Train to step 10 of 12 and stop: the resume state holds step 8."""

    def stop(done, total, info):
        if done >= 10 * 256:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CFG, cfg, corpus, TOKENS, 0, out, "k", stop)
    return json.loads((out / "resume.json").read_text())


def _resumed_state(out, dtype):
    """The resume state at ``out`` loaded into a model and optimizer of ``dtype``."""
    model = build_model(CFG, seed=0).to(dtype).train()
    opt = _optimizer(model, TRAIN)
    step, curve, seen = _load_resume(model, opt, out, "k")
    return model, opt, step, curve, seen


def _close_in_bf16(a, b):
    for k in a:  # bf16 keeps 8 mantissa bits; 4 more AdamW steps at lr 3e-3 move each weight by < 1.2e-2
        torch.testing.assert_close(a[k].float(), b[k].float(), atol=2e-2, rtol=1e-2)


def test_resume_saved_on_bf16_continues_a_float32_run(corpus, tmp_path):
    full = train(CFG, TRAIN, corpus, TOKENS, 0, tmp_path / "full", "k")
    meta = _interrupted(corpus, tmp_path / "cut")
    # what a bf16 device would have saved: the model and the AdamW moments cast to bfloat16
    model, opt, step, curve, seen = _resumed_state(tmp_path / "cut", torch.float32)
    model.to(torch.bfloat16)
    for st in opt.state.values():
        for name in ("exp_avg", "exp_avg_sq"):
            st[name] = st[name].to(torch.bfloat16)
    _save_resume(model, opt, step, curve, seen, tmp_path / "cut", "k")
    saved = load_file(str(tmp_path / "cut" / "resume.safetensors"))
    assert saved["model.wte.weight"].dtype == torch.bfloat16 and saved["opt.wte.weight.exp_avg"].dtype == torch.bfloat16
    assert step == meta["step"] == 8

    # loading casts to the float32 run's dtype, moments too; `step` as the fused optimizer expects it
    model32, opt32, step32, *_ = _resumed_state(tmp_path / "cut", torch.float32)
    st = opt32.state[model32.wte.weight]
    assert (model32.wte.weight.dtype, st["exp_avg"].dtype, st["step"].dtype) == (torch.float32,) * 3
    assert st["step"].device == model32.wte.weight.device and float(st["step"]) == 8

    resumed = train(CFG, TRAIN, corpus, TOKENS, 0, tmp_path / "cut", "k")
    assert resumed.steps == 12 and not (tmp_path / "cut" / "resume.json").exists()
    _close_in_bf16(load_file(str(full.checkpoint)), load_file(str(resumed.checkpoint)))
    assert resumed.curve[-1]["val_bpb"] == pytest.approx(full.curve[-1]["val_bpb"], abs=0.02)


def test_float32_resume_loads_into_a_bf16_run_and_continues(corpus, tmp_path):
    full = train(CFG, TRAIN, corpus, TOKENS, 0, tmp_path / "full", "k")
    _interrupted(corpus, tmp_path / "cut")
    model, opt, step, *_ = _resumed_state(tmp_path / "cut", torch.bfloat16)
    st = opt.state[model.wte.weight]
    assert model.wte.weight.dtype == st["exp_avg"].dtype == st["exp_avg_sq"].dtype == torch.bfloat16
    assert st["step"].dtype == torch.float32  # AdamW counts steps in float32 whatever the weights
    run = _Run(CFG, TRAIN, corpus, 0, 256, None, 12, setup=CPU)

    for s in range(step, 12):  # the rest of the cosine run, on bf16 weights
        _sgd_step(run, model, opt, s, lr_at(s, 12, TRAIN))
    _close_in_bf16(load_file(str(full.checkpoint)), model.state_dict())


def test_compile_trains_the_same_model_through_a_real_backend(corpus, tmp_path):
    """torch.compile for real. Inductor takes ~25 s to compile a tiny GPT on this 2-core host, so
    the test uses aot_eager: dynamo capture and AOTAutograd's joint graph, run by eager kernels."""
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = DeviceSetup("cpu", compile=True, compile_backend="aot_eager")
    cfg = TRAIN.model_copy(update={"schedule": "wsd", "cooled_fractions": [0.5, 1.0]})
    a = train(CFG, cfg, corpus, 256 * 8, 0, tmp_path / "a", "k", setup=compiled)
    b = train(CFG, cfg, corpus, 256 * 8, 0, tmp_path / "b", "k")
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured the forward
    assert a.device["compile"] and not b.device["compile"]
    wa, wb = load_file(str(a.checkpoint)), load_file(str(b.checkpoint))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_a_cpu_training_key_is_unchanged_and_another_device_gets_its_own(corpus):
    from edgescale.backends.torch_lm import TRAINER_REVISION, __version__, train_key
    from edgescale.models.backend import SizePlan
    from edgescale.models.gpt import accounting

    study = Study.model_validate(TINY)
    plan = SizePlan("a", CFG, accounting(CFG, 32), 20_480, "min_tokens")
    # the key exactly as it was built before training.device existed
    before = key_of(
        "train",
        model=CFG.to_dict(),
        training=study.training.model_dump(exclude={"seeds", "device", "compile"}),
        batch=None,
        tokens=20_480,
        seed=0,
        train_sha=corpus["train"].sha256,
        val_sha=corpus["validation"].sha256,
        val_sampling=("spread", 32),
        teacher=None,
        distill=None,
        v=__version__,
        trainer=TRAINER_REVISION,
    )
    assert set(TrainingConfig.model_fields) - set(study.training.model_dump(exclude={"device", "compile"})) == {
        "device",
        "compile",
    }
    assert train_key(study, corpus, plan, 0, None, True, device_setup(study.training)) == before
    auto = study.model_copy(update={"training": study.training.model_copy(update={"device": "auto"})})
    if not torch.cuda.is_available():  # auto resolves to this CPU: the same run, the same key
        assert train_key(auto, corpus, plan, 0, None, True, device_setup(auto.training)) == before
    gpu = train_key(study, corpus, plan, 0, None, True, decide("cuda", bf16_supported=True))
    fp32_gpu = train_key(study, corpus, plan, 0, None, True, decide("cuda", bf16_supported=False))
    compiled = train_key(study, corpus, plan, 0, None, True, decide("cpu", compile=True))
    assert len({before, gpu, fp32_gpu, compiled}) == 4


def test_recover_config_keeps_its_dump_at_the_cpu_default():
    from edgescale.train.recover import RecoverConfig

    assert "device" not in RecoverConfig().model_dump() and "compile" not in RecoverConfig().model_dump()
    assert RecoverConfig(device="cuda").model_dump()["device"] == "cuda"


@pytest.mark.parametrize(
    ("name", "flops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.5e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835.5e12),
        ("NVIDIA H200", 989.5e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA A10G", None),
        ("Tesla V100-SXM2-16GB", None),
    ],
)
def test_gpu_peaks_come_from_the_table_or_are_unknown(name, flops):
    got, what, source = gpu_peak(name)
    assert got == flops
    if flops:
        assert "datasheet" in source and "https://" in source and "dense BF16" in what
    else:
        assert what.startswith("unknown peak") and source == "none"


def test_cpu_peak_is_measured_once_per_process():
    flops, what, source = device_peak("cpu")
    assert flops > 1e8 and "measured" in source and "fp32" in what
    assert device_peak(torch.device("cpu"))[0] == flops  # cached: the same number, not a new measurement
    assert device_peak("mps")[0] is None
