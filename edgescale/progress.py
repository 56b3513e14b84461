"""Console output of a run: rich progress bars for long work, one line per finished or reused unit."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class Reporter:
    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True, highlight=False)

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(f"  {msg}")

    def reuse(self, what: str, detail: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]reused[/] {what} [dim]({detail})[/]")

    def done(self, what: str, detail: str) -> None:
        if not self.quiet:
            self.console.print(f"[green]done[/] {what} [dim]({detail})[/]")

    @contextlib.contextmanager
    def status(self, what: str) -> Iterator[None]:
        if self.quiet:
            yield
            return
        with self.console.status(what):
            yield

    @contextlib.contextmanager
    def task(self, what: str, total: int) -> Iterator[Callable[[int, int, dict], None]]:
        """A progress bar over tokens; yields the callback the trainer calls."""
        if self.quiet:
            yield lambda done, total, info: None
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} tok"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as bar:
            tid = bar.add_task(what, total=total, rate="", loss="")

            def tick(done: int, total: int, info: dict) -> None:
                bar.update(
                    tid, completed=done, total=total, rate=f"{info['tok_s']:,.0f} tok/s", loss=f"{info['loss']:.3f}"
                )

            yield tick

    def summary(self, results: dict, run_dir: Path) -> None:
        table = Table(title=f"edgescale · {results['study']} · validation loss (bits/byte) and host latency")
        for col in (
            "variant",
            "N (non-emb.)",
            "tokens",
            "file KB",
            "bytes/tok",
            "val bpb",
            "test bpb",
            "prefill ms",
            "decode ms",
            "decode speed-up",
            "front",
        ):
            table.add_column(col, justify="left" if col == "variant" else "right")
        for v in results["variants"]:
            host = v.get("latency", {}).get("host", {})
            sp = host.get("decode_speedup_vs_fp32")
            speed = (
                ""
                if not sp
                else f"{sp['speedup']:.2f} [{sp['low']:.2f}, {sp['high']:.2f}]" + (" ~" if sp["within_noise"] else "")
            )
            table.add_row(
                v["variant_id"],
                f"{v['params_non_embedding']:,}",
                f"{v['train_tokens']:,}",
                f"{v['file_bytes'] / 1024:.0f}",
                f"{v['cost']['bytes_per_decoded_token']:,}",
                f"{v['loss']['validation']['bits_per_byte']:.4f}",
                f"{v['loss']['test']['bits_per_byte']:.4f}",
                f"{host.get('prefill_ms_p50', float('nan')):.3f}",
                f"{host.get('decode_ms_p50', float('nan')):.3f}",
                speed,
                "✓" if v.get("on_frontier") else "",
            )
        out = Console(highlight=False)
        out.print(table)
        out.print("~ = within noise (95% bootstrap CI of the ratio includes 1)")
        out.print(f"run directory: {run_dir}  (results.json, frontier.png, report.html)")
