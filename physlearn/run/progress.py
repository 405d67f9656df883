"""How a campaign tells a person where it is.

On a terminal a progress bar (tqdm); without one -- ``nohup``, a CI log, a lab PC's service --
one line every ``every`` seconds on standard output, flushed at once::

    physlearn: quickstart step 40/420 (10 %) loss=0.3121 test_acc=0.956 52.1 step/s, 7s left

plus a last line when the campaign stops. ``physlearn run --progress lines|bar|off`` chooses
(default: bar on a terminal, lines otherwise); ``--progress-every SECONDS`` sets the interval.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Literal, TextIO

Mode = Literal["bar", "lines", "off"]


@dataclass(frozen=True)
class ProgressSpec:
    """``mode``: a tqdm bar, timed lines, or nothing; ``every``: seconds between lines."""

    mode: Mode = "off"
    every: float = 30.0

    @staticmethod
    def default(every: float = 30.0) -> ProgressSpec:
        """A bar on a terminal (standard error), timed lines otherwise."""
        return ProgressSpec("bar" if sys.stderr.isatty() else "lines", every)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """Progress of ``total`` steps from ``start`` (see the module docstring)."""

    def __init__(
        self, spec: ProgressSpec, name: str, total: int, start: int, out: TextIO | None = None
    ) -> None:
        self.spec, self.name, self.total, self.start = spec, name, total, start
        self.out = sys.stdout if out is None else out
        self.done = start
        self.t0 = self.last = time.monotonic()
        self.postfix: dict[str, str] = {}
        self.bar: Any = None
        if spec.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, desc=name)

    def update(self, done: int, postfix: dict[str, str]) -> None:
        """``done`` steps are complete; ``postfix``: the latest metrics, already formatted."""
        advanced, self.done, self.postfix = done - self.done, done, postfix
        if self.bar is not None:
            self.bar.update(advanced)
            self.bar.set_postfix(postfix, refresh=False)
        elif self.spec.mode == "lines" and time.monotonic() - self.last >= self.spec.every:
            self.line()

    def line(self, status: str = "") -> None:
        now = time.monotonic()
        self.last = now
        rate = (self.done - self.start) / max(now - self.t0, 1e-9)
        pct = 100 * self.done / max(self.total, 1)
        text = [f"physlearn: {self.name} step {self.done}/{self.total} ({pct:.0f} %)"]
        text += [f"{k}={v}" for k, v in self.postfix.items()]
        if rate > 0:
            text.append(f"{rate:.3g} step/s")
            if self.done < self.total and not status:
                text[-1] += f", {_duration((self.total - self.done) / rate)} left"
        if status:
            text.append(status)
        print(" ".join(text), file=self.out, flush=True)

    def close(self, status: str) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.spec.mode == "lines":
            self.line(status)
