"""Packaging installs the one copy of the shipped YAML files (the top-level studies/, recipes/, devices/)
inside the package, where an installed edgescale finds them."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("studies", "recipes", "devices")


# builds a wheel without installing anything: about 5 s
def test_wheel_holds_the_top_level_yaml_files(tmp_path):
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("edgescale", *SHIPPED):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("edgescale-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in SHIPPED:
        expected = {f"edgescale/{kind}/{p.name}" for p in (REPO / kind).glob("*.yaml")}
        assert expected and expected <= names, kind
    assert "edgescale/config.py" in names and not any(n.startswith(SHIPPED) for n in names)
