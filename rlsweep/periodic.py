"""A background thread that calls a function at a fixed interval while a `with` block runs."""

from __future__ import annotations

import threading
import time
from typing import Callable


class Periodic:
    """Call `tick()` every `interval_s` seconds in a daemon thread, from `__enter__` to
    `__exit__` (which waits for a tick in progress to finish).

    Ticks keep their schedule: one that overruns (a heartbeat waiting for a database lock) is
    followed by the next at once, not an interval after it ended, so a slow tick does not
    widen the gap between two successful ones by a whole interval.
    """

    def __init__(self, interval_s: float, tick: Callable[[], None]):
        self.interval_s, self.tick = interval_s, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        due = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            self.tick()
            due = max(due + self.interval_s, time.monotonic())

    def __enter__(self) -> "Periodic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
