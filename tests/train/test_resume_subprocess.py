"""A training process killed mid-run (SIGKILL, a real subprocess) resumes to the uninterrupted result."""

import json
import signal
import subprocess
import sys
import time

import pytest

SCRIPT = """
import sys
from pathlib import Path
from edgescale.config import CorpusConfig, TrainingConfig
from edgescale.data.corpus import load_corpus
from edgescale.models.gpt import GPTConfig
from edgescale.train.trainer import train
tc = TrainingConfig(batch_size=8, eval_every_tokens=256 * 10, eval_tokens=512, checkpoint_every_steps=5,
                    threads=1, learning_rate=1e-2, schedule="wsd", cooled_fractions=[0.5, 1.0])
res = train(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32), tc, load_corpus(CorpusConfig()),
            256 * 60, 0, Path(sys.argv[1]), "k")
print(res.curve[-1]["val_bpb"])
"""


def _run(out, **kw):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], stdout=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_sigkill_mid_training_then_resume(tmp_path):
    full = _run(tmp_path / "full")
    victim = _run(tmp_path / "cut")
    resume_file = tmp_path / "cut" / "resume.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (resume_file.exists() and json.loads(resume_file.read_text())["step"] >= 15):
        time.sleep(0.05)
    assert victim.poll() is None, "training finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    resumed = _run(tmp_path / "cut")
    a, b = full.communicate(timeout=300)[0], resumed.communicate(timeout=300)[0]
    assert full.returncode == 0 and resumed.returncode == 0
    assert float(b) == pytest.approx(float(a), rel=1e-5)
