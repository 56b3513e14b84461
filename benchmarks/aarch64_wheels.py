"""Does ``pip install edgescale`` work on an aarch64 Linux board? Every pinned requirement, asked for as
a manylinux aarch64 wheel on the package index.

    .venv/bin/python benchmarks/aarch64_wheels.py                         # the runtime pins, CPython 3.11
    .venv/bin/python benchmarks/aarch64_wheels.py --extras hf --python-version 3.10

For each pin of ``pyproject.toml`` (``[project].dependencies``, plus the optional groups named)
it runs ``pip download --no-deps --only-binary=:all: --platform manylinux2014_aarch64 --platform
manylinux_2_17_aarch64 ... --platform manylinux_2_31_aarch64 --python-version X.Y`` into a temporary
folder, deleted afterwards, and prints a table: pin, wheel found, file name. glibc 2.31 is the floor
of the boards the docs name (Ubuntu 20.04 under JetPack 5; Raspberry Pi OS bookworm has 2.36,
JetPack 6 2.35); every older manylinux tag is listed because pip (23.2) does not widen a
``--platform`` to older glibc versions itself. pip runs ``--isolated`` against the public index,
so this machine's local wheel folders and constraints cannot answer for it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://pypi.org/simple"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # the system's CAs (isolated pip reads no config)


def pins(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    out = list(project["dependencies"])
    for extra in extras:
        out += [p for p in optional[extra] if not p.startswith("edgescale[")]
    return out


def platforms(glibc_minor: int) -> list[str]:
    """--platform values: every manylinux aarch64 tag a board with glibc 2.<glibc_minor> runs."""
    return ["manylinux2014_aarch64", *(f"manylinux_2_{m}_aarch64" for m in range(17, glibc_minor + 1))]


def find_wheel(pin: str, glibc_minor: int, python: str) -> tuple[bool, str]:
    """(found, wheel file name or pip's last error line) for one pin."""
    with tempfile.TemporaryDirectory(prefix="edgescale-aarch64-") as d:
        cmd = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "download", "--no-deps",
               "--only-binary=:all:", "-q", "--python-version", python, "--index-url", INDEX, "-d", d, pin]  # fmt: skip
        cmd += [arg for p in platforms(glibc_minor) for arg in ("--platform", p)]
        if CA_BUNDLE.is_file():
            cmd[4:4] = ["--cert", str(CA_BUNDLE)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        wheels = sorted(p.name for p in Path(d).glob("*.whl"))
        if r.returncode == 0 and wheels:
            return True, wheels[0]
        errors = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.startswith("ERROR")]
        return False, errors[-1][:160] if errors else f"pip exited {r.returncode}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extras", nargs="*", default=[], help="optional groups of pyproject.toml to check too")
    ap.add_argument("--python-version", default="3.11", help="CPython version of the board (3.11: Pi OS bookworm)")
    ap.add_argument("--glibc", type=int, default=31, help="the board's glibc 2.N (default 31: Ubuntu 20.04)")
    args = ap.parse_args()
    table = Table(
        title=f"aarch64 wheels on {INDEX} (manylinux, glibc <= 2.{args.glibc}, CPython {args.python_version})"
    )
    for col in ("pin", "wheel found", "file"):
        table.add_column(col)
    missing = 0
    for pin in pins(args.extras):
        found, name = find_wheel(pin, args.glibc, args.python_version)
        missing += not found
        table.add_row(pin, "yes" if found else "NO", name)
    Console(width=200).print(table)
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
