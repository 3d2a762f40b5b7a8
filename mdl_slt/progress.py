"""Progress of long work, where the user can see it.

On a terminal: rich progress bars with an ETA. Anywhere else (a file, nohup, Slurm, CI): one
plain line per finished item with counts, elapsed time and an ETA, so a batch job's log shows
where it stands while it runs, not only at the end.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Tracker:
    """Counts finished items of `total` (`done` already finished before this run) and shows them."""

    def __init__(self, console, noun: str, total: int, done: int = 0, bars=None):
        self.console, self.noun, self.total, self.done = console, noun, total, done
        self.start, self.finished_here = time.perf_counter(), 0
        self.bars, self.bar = bars, None
        if bars is not None:
            self.bar = bars.add_task(noun, total=total, completed=done)

    def eta(self) -> float | None:
        if not self.finished_here:
            return None
        return (time.perf_counter() - self.start) / self.finished_here * (self.total - self.done)

    def step(self, message: str) -> None:
        """One more item finished: `message` says which (and how it went)."""
        self.done += 1
        self.finished_here += 1
        if self.bar is not None:
            self.bars.update(self.bar, advance=1, description=message)
            return
        eta = self.eta()
        self.console.print(f"[{self.done}/{self.total} {self.noun}] {message}; "
                           f"{_clock(time.perf_counter() - self.start)} elapsed"
                           + (f", eta {_clock(eta)}" if eta is not None and self.done < self.total else ""),
                           markup=False, highlight=False, soft_wrap=True)


@contextmanager
def tracking(console, noun: str, total: int, done: int = 0):
    """A Tracker with bars on a terminal, plain lines elsewhere."""
    if not console.is_terminal:
        yield Tracker(console, noun, total, done)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console) as bars:
        yield Tracker(console, noun, total, done, bars)


@contextmanager
def phase(console, label: str, total: int):
    """One phase of a one-shot command (sampling, a critical search): a bar on a terminal, advanced by
    calling the yielded function with the work done so far; in a log, a line when it starts and
    one when it ends."""
    start = time.perf_counter()
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bars:
            task = bars.add_task(label, total=total)
            yield lambda done: bars.update(task, completed=done)
    else:
        console.print(f"{label}…", markup=False, highlight=False)
        yield lambda done: None
    console.print(f"{label}: done in {_clock(time.perf_counter() - start)}", markup=False, highlight=False)
