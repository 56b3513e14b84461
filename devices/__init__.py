"""The shipped device YAML files; packaging installs this folder as edgescale.devices (see setup.py)."""
