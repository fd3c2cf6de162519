"""Progress of long data jobs (packing, batch prediction): a tqdm bar, or lines in a log.

On a terminal the bar is tqdm's (count, rate in images/s, elapsed and ETA). When the stream is
not a terminal (a log file, CI, nohup) a bar redrawn with carriage returns would be one endless
line, so a plain line is written every ``interval`` seconds and once at the end instead.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class Progress:
    """``with Progress(total, "pack") as bar: bar.update(n)``.

    Args:
        total: the number of items expected (None when unknown: no percentage or ETA).
        desc: what is being done, the line's first word.
        unit: what is counted (``"img"``).
        stream: where to write (default stderr, so results on stdout stay clean).
        enabled: False writes nothing (library calls that did not ask for progress).
        interval: seconds between lines when ``stream`` is not a terminal.
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "img",
                 stream: IO[str] | None = None, enabled: bool = True,
                 interval: float = 10.0) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self.n = 0
        self._t0 = time.perf_counter()
        self._last = self._t0
        self._bar: Any = None
        isatty = getattr(self.stream, "isatty", None)
        if enabled and isatty is not None and isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream,
                             unit_scale=False, dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def _line(self, final: bool = False) -> None:
        elapsed = time.perf_counter() - self._t0
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n:,}" + (f"/{self.total:,}" if self.total is not None else "")
        text = f"{self.desc}: {done} {self.unit}, {rate:,.0f} {self.unit}/s, {elapsed:.0f} s"
        if not final and self.total and rate > 0:
            text += f", ETA {max(self.total - self.n, 0) / rate:.0f} s"
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            self._line(final=True)
        self.enabled = False

    @property
    def rate(self) -> float:
        """Items per second so far."""
        elapsed = time.perf_counter() - self._t0
        return self.n / elapsed if elapsed > 0 else 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
