"""Progress of a long loop: counts, elapsed time and an estimate of the time left.

On a terminal a tqdm bar shows it; in batch runs (logs to a file, Make, CI) :class:`Progress`
logs one line at most every ``every_s`` seconds and one at the end, e.g.
``attribute: 12/50 patches (24 %), 1 min 3 s elapsed, about 3 min 20 s left``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

log = logging.getLogger("pipeline.progress")


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 20 s"``, ``"1 h 5 min"`` (rounded down; negatives read 0 s)."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def eta(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the mean rate so far (``None`` before the first item is done)."""
    if done <= 0 or total <= 0:
        return None
    return elapsed / done * max(0, total - done)


def progress_line(what: str, done: int, total: int, unit: str, elapsed: float) -> str:
    """One progress line (see the module docstring)."""
    share = f" ({100 * done // total} %)" if total else ""
    left = eta(done, total, elapsed)
    tail = f", about {duration(left)} left" if left is not None and done < total else ""
    return f"{what}: {done}/{total} {unit}{share}, {duration(elapsed)} elapsed{tail}"


class Progress:
    """Count finished items of a known total and report them (a context manager).

    Args:
        what: Name of the work (the stage, or the stage and its step).
        total: Items to do.
        unit: What an item is (``patches``, ``farms``).
        every_s: Least seconds between two log lines (the last item always logs).
        bar: Show a tqdm bar instead of log lines; ``None``: when stderr is a terminal.
        clock: Injected for tests.
    """

    def __init__(
        self,
        what: str,
        total: int,
        unit: str,
        *,
        every_s: float = 15.0,
        bar: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.clock = clock
        self.start = self.last = clock()
        self.done = 0
        self._bar: Any = None
        if bar if bar is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit=unit.rstrip("s") or "it")

    def update(self, n: int = 1) -> None:
        """Count ``n`` more finished items."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if self.done >= self.total or now - self.last >= self.every_s:
            self.last = now
            log.info(progress_line(self.what, self.done, self.total, self.unit, now - self.start))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
