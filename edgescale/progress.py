"""Console output of a run: rich progress bars for long work, one line per finished or reused unit."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

_ADVANCE: ContextVar[Callable[[int, int], None] | None] = ContextVar("edgescale_advance", default=None)


NO_SE = "—"  # a loss from a results file written before standard errors were recorded


def loss_text(bpb: float | None, se: float | None) -> str:
    """A held-out loss as every view shows it, "3.0239 ± 0.0078" (bits per byte ± its standard
    error), so a difference is never read without its noise; "–" with no loss, "± —" with no SE."""
    if bpb is None:
        return "–"
    return f"{bpb:.4f} ± {NO_SE if se is None or not math.isfinite(se) else f'{se:.4f}'}"


def advance(done: int, total: int) -> None:
    """Report progress of a long loop (``done`` of ``total`` units) to the status line around it, if any."""
    f = _ADVANCE.get()
    if f is not None:
        f(done, total)


class Reporter:
    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True, highlight=False)
        self._live: Progress | None = None  # the status display running now (statuses nest as rows)

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(f"  {msg}")

    def warn(self, msg: str) -> None:
        self.console.print(f"[yellow]warning[/] {msg}")

    def reuse(self, what: str, detail: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]reused[/] {what} [dim]({detail})[/]")

    def done(self, what: str, detail: str) -> None:
        if not self.quiet:
            self.console.print(f"[green]done[/] {what} [dim]({detail})[/]")

    @contextlib.contextmanager
    def status(self, what: str) -> Iterator[None]:
        """A line with a spinner and the elapsed time while ``what`` runs; work inside that reports
        through :func:`advance` (scoring windows, say) turns it into a bar with a time remaining."""
        if self.quiet:
            yield
            return
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        if self._live is not None:  # nested: one more row on the display already running
            yield from self._row(self._live, what)
            return
        with Progress(*columns, console=self.console, transient=True) as bar:
            self._live = bar
            try:
                yield from self._row(bar, what)
            finally:
                self._live = None

    @staticmethod
    def _row(bar: Progress, what: str) -> Iterator[None]:
        tid = bar.add_task(what, total=None, count="")
        token = _ADVANCE.set(lambda done, total: bar.update(tid, completed=done, total=total, count=f"{done}/{total}"))
        try:
            yield
        finally:
            _ADVANCE.reset(token)
            bar.remove_task(tid)

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
            TextColumn("{task.fields[loss]} bpb"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as bar:
            tid = bar.add_task(what, total=total, rate="", loss="")

            def tick(done: int, total: int, info: dict) -> None:
                bar.update(
                    tid, completed=done, total=total, rate=f"{info['tok_s']:,.0f} tok/s", loss=f"{info['bpb']:.3f}"
                )

            yield tick

    @staticmethod
    def _sizes_table(results: dict) -> Table:
        fp32 = {v["size"]: v for v in results["variants"] if v["recipe"] == results["variants"][0]["recipe"]}
        sizes = results["sizes"]
        eq = sizes[0].get("equal_tokens") if sizes else 0
        table = Table(title="loss falls with size: at each size's own budget, and at equal training tokens")
        for col in (
            "size",
            "shape (L×d, heads)",
            "N (non-emb.)",
            "train tokens",
            "val bpb ± SE (ONNX)",
            f"val bpb @ {eq:,} tok",
        ):
            table.add_column(col, justify="left" if col.startswith("s") else "right")
        for s in sizes:
            v = fp32.get(s["size"])
            at_eq = s.get("val_bpb_at_equal_tokens")
            table.add_row(
                s["size"],
                f"{s['n_layer']}×{s['n_embd']}, {s['n_head']}" if s.get("n_layer") else str(s.get("model")),
                f"{s['params_non_embedding']:,}",
                f"{s['train_tokens']:,}",
                _split_loss(v, "validation") if v else "",
                f"{at_eq:.4f}" if at_eq is not None else "",
            )
        return table

    def summary(self, results: dict, run_dir: Path) -> None:
        table = Table(title=f"edgescale · {results['study']} · validation loss (bits/byte) and host latency")
        for col in (
            "variant",
            "N (non-emb.)",
            "tokens",
            "file KB",
            "bytes/tok",
            "val bpb ± SE",
            "test bpb ± SE",
            "prefill ms",
            "decode ms",
            "decode speed-up",
            "front",
        ):
            table.add_column(col, justify="left" if col == "variant" else "right")
        for v in results["variants"]:
            host = v.get("latency", {}).get("host", {})
            sp = host.get("decode_speedup_vs_fp32")
            speed = ""
            if sp:
                flag = " ~" if sp["within_noise"] else " slower" if sp["slower"] else ""
                speed = f"{sp['speedup']:.2f} [{sp['low']:.2f}, {sp['high']:.2f}]{flag}"
            table.add_row(
                v["variant_id"],
                f"{v['params_non_embedding']:,}",
                f"{v['train_tokens']:,}",
                f"{v['file_bytes'] / 1024:.0f}",
                f"{v['cost']['bytes_per_decoded_token']:,}",
                _split_loss(v, "validation"),
                _split_loss(v, "test"),
                f"{host.get('prefill_ms_p50', float('nan')):.3f}",
                f"{host.get('decode_ms_p50', float('nan')):.3f}"
                + (" (full recompute)" if host.get("decode") == "full-recompute" else ""),
                speed,
                "✓" if v.get("on_frontier") else "",
            )
        out = Console(highlight=False, width=None if self.console.is_terminal else 170)
        out.print(self._sizes_table(results))
        falls = results.get("loss_falls_with_size", {})
        out.print(
            f"loss falls with size: at each size's own budget: {falls.get('at_own_budget')}; "
            f"at equal training tokens ({falls.get('equal_tokens', 0):,}): {falls.get('at_equal_tokens')}"
        )
        out.print(table)
        out.print(
            "decode speed-up: fp32 p50 / variant p50, 95% paired bootstrap CI; ~ = within noise (CI holds 1, "
            "or lies within the A/A noise floor)"
        )
        out.print(f"bpb ± SE: held-out loss ± its standard error, clustered by scoring window ({NO_SE}: not recorded)")
        out.print(f"run directory: {run_dir}  (results.json, report.html, summary.md, figures)")


def _split_loss(variant: dict, split: str) -> str:
    """``loss_text`` of one split of a results.json variant record (a split may be missing)."""
    rec = variant.get("loss", {}).get(split) or {}
    return loss_text(rec.get("bits_per_byte"), rec.get("se_bpb"))
