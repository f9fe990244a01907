"""Printing: human text or JSON on stdout, progress bars on a terminal's stderr."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from multibackup.engine.progress import Progress


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def shown(name: str) -> str:
    """A key or file name for a line of text: control characters (a newline in a file
    name would start a line of its own) and undecodable bytes come out escaped."""
    if name.isprintable():
        return name
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape",
                                                        "backslashreplace").decode("ascii")
                   for ch in name)


def bar_words(progress: Progress, unit_bytes: bool) -> str:
    """The words beside a progress bar's counts: the files done where it counts bytes,
    and "still listing" while the totals grow (an ETA is only a guess then)."""
    words = [f"{progress.done_items} files"] if unit_bytes else []
    if progress.counting:
        words.append("still listing")
    return ", ".join(words)


class Printer:
    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json = json_mode
        self.quiet = quiet

    def line(self, text: str = "") -> None:
        if not self.json and not self.quiet:
            print(text, flush=True)

    def result(self, text: str) -> None:
        """Output the user asked for (listings): printed even with --quiet."""
        if not self.json:
            print(text, flush=True)

    def emit(self, doc: Any) -> None:
        if self.json:
            print(json.dumps(doc, default=str), flush=True)

    def warn(self, text: str) -> None:
        if not self.quiet or self.json:
            print(text, file=sys.stderr, flush=True)

    def problem(self, text: str) -> None:
        """A problem the exit code alone does not name (a destination that failed):
        printed to stderr even with --quiet, as errors are."""
        print(text, file=sys.stderr, flush=True)

    @property
    def interactive(self) -> bool:
        return not self.quiet and not self.json and sys.stderr.isatty()

    @contextmanager
    def progress(self, progress: Progress, description: str, unit_bytes: bool = True) -> Iterator[None]:
        """Draw a rich progress bar from ``progress`` while the block runs (terminals only)."""
        if not self.interactive:
            yield
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar
        from rich.text import Text

        class Rate(ProgressColumn):
            """Bytes per second in the units of every other size shown (KiB, MiB); the
            average so far until rich has two samples to estimate from (a run of under
            a second may never have them)."""

            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed or (
                    task.completed / task.elapsed if task.completed and task.elapsed else None)
                return Text(f"{human_bytes(speed)}/s" if speed else "?",
                            style="progress.data.speed")

        columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn()]
        columns += ([DownloadColumn(binary_units=True), Rate()] if unit_bytes
                    else [MofNCompleteColumn()])
        columns += [TextColumn("{task.fields[items]}"), TimeElapsedColumn(), TimeRemainingColumn()]
        stop = threading.Event()
        with Bar(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=None, items="")

            def sync() -> None:
                total = progress.total_bytes if unit_bytes else progress.total_items
                done = progress.done_bytes if unit_bytes else progress.done_items
                bar.update(task, total=total or None, completed=done,
                           items=bar_words(progress, unit_bytes))

            def refresh() -> None:
                while not stop.wait(0.2):
                    sync()

            t = threading.Thread(target=refresh, daemon=True)
            t.start()
            try:
                yield
            finally:
                stop.set()
                t.join()
                sync()  # the last frame shows the end, also of a job shorter than a poll
