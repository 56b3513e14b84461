"""Packaging hook (the metadata is in pyproject.toml): the shipped YAML files live once, in the repository's
top-level studies/, recipes/ and devices/, and are installed as the packages edgescale.studies,
edgescale.recipes and edgescale.devices. An editable install maps those names to the top-level folders, so
edgescale.config.builtin_dir finds them by package name in a checkout and in an installed wheel alike. (Each
folder holds an empty __init__.py because setuptools' editable finder does not map a namespace package nested
in a regular one.)"""

from setuptools import find_namespace_packages, setup

SHIPPED = ("studies", "recipes", "devices")

setup(
    packages=[*find_namespace_packages(include=["edgescale", "edgescale.*"]), *(f"edgescale.{d}" for d in SHIPPED)],
    package_dir={f"edgescale.{d}": d for d in SHIPPED},
    package_data={"edgescale": ["bench/*.py"], **{f"edgescale.{d}": ["*.yaml"] for d in SHIPPED}},
)
