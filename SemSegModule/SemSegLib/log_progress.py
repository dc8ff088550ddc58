"""The command line's progress: tqdm's bar on a terminal, whole lines now and then in a log file.

Why not tqdm everywhere: written to a file (a cluster job's log, `semseg train ... 2> train.log`), tqdm's bar redraws
with carriage returns several times a second, and a 180 s training leaves hundreds of redraws run together in one
line of the log. There a line every `LOG_SECONDS` says the same, readable with `less` or `tail -f`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

LOG_SECONDS = 30.0


def progress_bar(total: int, unit: str, desc: str, file: TextIO | None = None):
    """tqdm's bar when `file` (stderr) is a terminal, else `LogProgress`; both take `n =`, `update`, `set_postfix`,
    `write` and `close`, and work as context managers."""
    file = sys.stderr if file is None else file
    if file.isatty():
        from tqdm import tqdm

        return tqdm(total=total, unit=unit, desc=desc, file=file, dynamic_ncols=True)
    return LogProgress(total, unit, desc, file)


class LogProgress:
    """tqdm's calls as whole lines: the first update, then at most one every `every` seconds, and the last."""

    def __init__(self, total: int, unit: str, desc: str, file: TextIO, every: float = LOG_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.unit, self.desc, self.file, self.every, self.clock = total, unit, desc, file, every, clock
        self.n = 0
        self._postfix = ""
        self._start = clock()
        self._logged_at: float | None = None
        self._logged_line = ""

    def update(self, count: int = 1) -> None:
        self.n += count
        self._log()

    def set_postfix(self, **values) -> None:
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())
        self._log()

    def write(self, message: str) -> None:
        print(message, file=self.file, flush=True)

    def close(self) -> None:
        self._log(last=True)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self) -> str:
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        postfix = f", {self._postfix}" if self._postfix else ""
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {self.clock() - self._start:.0f} s{postfix}"

    def _log(self, last: bool = False) -> None:
        now = self.clock()
        if not last and self._logged_at is not None and now - self._logged_at < self.every:
            return
        line = self._line()
        if last and line == self._logged_line:
            return
        print(line, file=self.file, flush=True)
        self._logged_at, self._logged_line = now, line
