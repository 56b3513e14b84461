"""``edgescale corpus``: tokenize a corpus into the cache ahead of a run, and show its splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from edgescale.cli.common import app, check_range, emit, table_console
from edgescale.errors import UserError


@app.command()
def corpus(
    source: Annotated[str, typer.Argument(help="'shakespeare', or a .txt/.jsonl/.parquet file or a folder of them")],
    text_field: Annotated[str, typer.Option(help="the JSONL field or Parquet column of the text")] = "text",
    tokenizer: Annotated[
        str, typer.Option(help="'bytes', or a local tokenizer folder holding tokenizer.json")
    ] = "bytes",
    validation_fraction: Annotated[float, typer.Option(help="share of documents held out for selection")] = 0.1,
    test_fraction: Annotated[float, typer.Option(help="share of documents held out for the final answer")] = 0.1,
    cache_dir: Annotated[Path | None, typer.Option(help="the cache (default: $EDGESCALE_CORPUS_CACHE)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="no progress bar")] = False,
) -> None:
    """Tokenize a corpus once into memory-mapped token files (cached by content hash); print its splits."""
    from edgescale.config import CorpusConfig
    from edgescale.data.corpus import load_corpus

    check_range("--validation-fraction", validation_fraction, 0, 0.5, above=True)
    check_range("--test-fraction", test_fraction, 0, 0.5, above=True)
    try:
        cfg = CorpusConfig(
            source=source,
            text_field=text_field,
            tokenizer=tokenizer,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    except ValidationError as e:  # what check_range cannot say: a fraction of exactly 0.5, an empty field
        first = e.errors()[0]
        raise UserError(first["msg"], field="--" + str(first["loc"][0]).replace("_", "-")) from None
    c = load_corpus(cfg, Path("."), progress=(lambda done, total: None) if quiet else None)
    folder = Path(getattr(c["train"].tokens, "filename", "") or ".").parent
    out = {**c.describe(), "cache": str(folder)}
    if as_json:
        emit(out, True)
        return
    table = Table(title=f"{source}: {c.tokenizer} tokens (vocabulary {c.vocab_size:,}) in {folder}")
    for col in ("split", "documents", "tokens", "bytes", "sha256"):
        table.add_column(col)
    for name, s in out["splits"].items():
        table.add_row(name, f"{s['works']:,}", f"{s['tokens']:,}", f"{s['bytes']:,}", s["sha256"])
    table_console(140).print(table)
