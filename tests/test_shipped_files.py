"""Every YAML file the project ships validates with the same code `edgescale validate` runs."""

from pathlib import Path

import pytest

from edgescale.config import validate_file

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(
    [
        *REPO.glob("studies/*.yaml"),
        *REPO.glob("recipes/*.yaml"),
        *REPO.glob("edgescale/studies/*.yaml"),
        *REPO.glob("edgescale/recipes/*.yaml"),
        *REPO.glob("edgescale/devices/*.yaml"),
        *REPO.glob("devices/*.yaml"),
    ]
)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_yaml_validates(path):
    assert validate_file(path) in {"study", "recipe", "device"}


def test_something_is_shipped():
    assert len(SHIPPED) >= 6
