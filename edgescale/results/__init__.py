"""``results.json``: its typed, versioned schema, the one reader and writer, and its assembly."""

from edgescale.results.io import parse_results, read_results, write_results
from edgescale.results.schema import SCHEMA_VERSION, Results

__all__ = ["SCHEMA_VERSION", "Results", "parse_results", "read_results", "write_results"]
