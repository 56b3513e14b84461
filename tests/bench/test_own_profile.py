"""A profile from the user's own device: calibrate --quick writes it, --device PATH and a study use it,
bench adds measured anchors that refit its efficiencies (docs/devices.md, "A profile from your own board")."""

import json
import shutil

import pytest
import yaml
from cli_runner import run_cli

from edgescale.config import builtin_dir
from edgescale.errors import UserError

PI5_CPUINFO = (
    "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
        f"asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n\n"
        for i in range(4)
    )
    + "Revision\t: d04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
)


def test_an_arm_board_is_read_from_cpuinfo(tmp_path):
    from edgescale.bench.own_profile import read_cpuinfo

    cpu = read_cpuinfo(PI5_CPUINFO, sysfs=tmp_path)  # no cpufreq in this sysfs: clock unknown
    assert cpu.model == "Raspberry Pi 5 Model B Rev 1.0" and cpu.clusters == (("cortex-a76", 4, 0.0),)
    for i in range(4):  # big.LITTLE-style clocks from sysfs
        (tmp_path / f"cpu{i}" / "cpufreq").mkdir(parents=True)
        (tmp_path / f"cpu{i}" / "cpufreq" / "cpuinfo_max_freq").write_text("2400000\n")
    assert read_cpuinfo(PI5_CPUINFO, sysfs=tmp_path).clusters == (("cortex-a76", 4, 2.4),)
    x86 = "".join(f"processor\t: {i}\nmodel name\t: Intel(R) Xeon(R)\ncpu MHz\t\t: 2600.000\n\n" for i in range(2))
    assert read_cpuinfo(x86, sysfs=tmp_path / "none").clusters == (("Intel(R) Xeon(R)", 2, 2.6),)


def test_calibrate_refuses_a_bad_profile_name_before_measuring(tmp_path):
    from edgescale.bench.own_profile import profile_target

    assert profile_target("my-pi", None, tmp_path / "cal.yaml", None) == ("my-pi", tmp_path / "my-pi.yaml")
    assert profile_target(None, tmp_path / "pi.yaml", tmp_path / "cal.yaml", "sbc")[0] == "pi"
    with pytest.raises(UserError, match="file stem is its id"):
        profile_target("pi", tmp_path / "other.yaml", tmp_path / "cal.yaml", None)
    with pytest.raises(UserError, match="not a profile id"):
        profile_target("My Pi", None, tmp_path / "cal.yaml", None)
    r = run_cli("calibrate", "--device-name", "My Pi", "--out", tmp_path / "c.yaml", cwd=tmp_path)
    assert r.returncode != 0 and "--device-name" in r.stderr and not (tmp_path / "c.yaml").exists()


def test_anchors_are_appended_once_and_refit_the_efficiencies(tmp_path):
    from edgescale.bench.own_profile import add_anchors
    from edgescale.profiles import Anchor, load_device_file

    path = tmp_path / "rpi5-8gb.yaml"
    shutil.copy(builtin_dir("devices") / "rpi5-8gb.yaml", path)
    before = load_device_file(path)
    anchor = Anchor(workload="decode", model="m", params=1e9, bits_per_weight=4.5, tokens_per_s=9.0,
                    runtime="onnxruntime CPU", source="measured by edgescale bench on test")  # fmt: skip
    out = add_anchors(path, [anchor])
    after = load_device_file(path)
    assert after.calibration == [*before.calibration, anchor] and after.validation == before.validation
    assert out["efficiency"]["bw"]["before"] != out["efficiency"]["bw"]["after"]
    assert out["efficiency"]["compute"]["before"] == pytest.approx(out["efficiency"]["compute"]["after"], rel=1e-6)
    again = add_anchors(path, [anchor])  # the same measurement twice is not two anchors
    assert again["added"] == [] and len(again["already_there"]) == 1
    assert load_device_file(path).calibration == after.calibration


def test_a_study_names_a_profile_file(tmp_path):
    from tiny_study import TINY

    from edgescale.inputs import load_study

    shutil.copy(builtin_dir("devices") / "rpi5-8gb.yaml", tmp_path / "rpi5-8gb.yaml")
    study_path = tmp_path / "s.yaml"
    study_path.write_text(yaml.safe_dump({**TINY, "devices": ["host", "rpi5-8gb.yaml"]}))
    study, _ = load_study(study_path)
    assert study.devices == ["host", str((tmp_path / "rpi5-8gb.yaml").resolve())]
    (tmp_path / "bad.yaml").write_text("id: bad\n")
    for dev, message in (("bad.yaml", "bad.yaml"), ("missing.yaml", "not found")):
        study_path.write_text(yaml.safe_dump({**TINY, "devices": [dev]}))
        with pytest.raises(UserError, match=message):
            load_study(study_path)


@pytest.mark.slow
def test_own_device_workflow_end_to_end(tmp_path, tiny_onnx):
    """calibrate --quick → profile → predict --device PATH and a study's devices → bench adds anchors."""
    from tiny_study import TINY

    from edgescale.bench.devices import get_device
    from edgescale.inputs import load_study
    from edgescale.profiles import load_device_file
    from edgescale.results.assemble import _device_latency

    # the fewest repeats calibrate accepts and one thread: the workflow, not the numbers, is checked here
    # (default places: runs/host-calibration.yaml and runs/mybox.yaml, where bench --device-name looks)
    r = run_cli("calibrate", "--quick", "--repeats", "3", "--threads", "1", "--device-name", "mybox", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "runs" / "mybox.yaml"
    profile = load_device_file(path)
    assert profile.id == "mybox" and profile.memory.effective_gbps.kind == "measured"
    assert "edgescale calibrate on" in profile.peak_gops.fp32.source and profile.calibration == []

    r = run_cli("predict", "--device", path, "--params", "1e8", "--bits", "4", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["device"] == "mybox"

    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**TINY, "devices": ["host", "runs/mybox.yaml"]}))
    study, _ = load_study(tmp_path / "study.yaml")
    pred = _device_latency(tiny_onnx, study.devices, study.measurement)  # what a run does per variant
    assert pred[str(path.resolve())]["decode_ms"] > 0

    before = get_device(str(path)).efficiency
    r = run_cli("bench", tiny_onnx, "--no-loss", "--repeats", "3", "--threads", "1", "--prompt-len", "8",
                "--decode-context", "16", "--device-name", "mybox", "--json", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["profile"]["added"]) == 2
    refined = load_device_file(path)
    assert [a.workload for a in refined.calibration] == ["decode", "prefill"]
    decode = refined.calibration[0]
    assert decode.model == tiny_onnx.name and 30 < decode.bits_per_weight <= 32  # an fp32 export
    assert decode.runtime.startswith("onnxruntime ") and "measured by edgescale bench on" in decode.source
    after = get_device(str(path)).efficiency
    assert after.bw.value != before.bw.value and after.compute.value != before.compute.value
    assert after.bw.formula.startswith("fitted:")
