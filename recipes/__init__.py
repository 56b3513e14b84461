"""The shipped recipe YAML files; packaging installs this folder as edgescale.recipes (see setup.py)."""
