"""The shipped study YAML files; packaging installs this folder as edgescale.studies (see setup.py)."""
