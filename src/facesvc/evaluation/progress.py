"""Progress of a long evaluation: a rich bar on a terminal, periodic log lines elsewhere.

Rich draws nothing until the end when its console is not a terminal (CI logs, ``nohup``,
``| tee``), so there the reporter prints one line every ``interval`` seconds instead.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressReporter:
    """``with ProgressReporter("embedding", total) as p: ... p.advance(1)``."""

    def __init__(
        self,
        description: str,
        total: int,
        *,
        console: Console | None = None,
        interval: float = 15.0,
    ) -> None:
        self.description = description
        self.total = total
        self.console = console or Console(stderr=True)
        self.interval = interval
        self.done = 0
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._start = 0.0
        self._last_line = 0.0
        self._skipped = 0

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def __enter__(self) -> ProgressReporter:
        self._start = self._last_line = time.monotonic()
        if self.interactive:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        else:
            self._log(f"{self.description}: {self.total} to do")
        return self

    def skip(self, count: int) -> None:
        """Count work done elsewhere (cache hits): it moves the bar but not the rate."""
        self._skipped += count
        self.advance(count)

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, count)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._log(self.line(now))

    def _log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.console.print(f"[{stamp}] {text}", soft_wrap=True, markup=False, highlight=False)

    def line(self, now: float) -> str:
        elapsed = now - self._start
        rate = (self.done - self._skipped) / elapsed if elapsed > 0 else 0.0
        share = self.done / self.total if self.total else 1.0
        text = (
            f"{self.description}: {self.done}/{self.total} ({share:.0%}), "
            f"{rate:.1f}/s, {elapsed:.0f} s elapsed"
        )
        if self.done < self.total and rate > 0:
            text += f", about {(self.total - self.done) / rate:.0f} s left"
        return text

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        else:
            self._log(self.line(time.monotonic()))
