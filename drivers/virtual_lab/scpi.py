"""SCPI parsing for the virtual lab's instruments: headers, parameters, channel lists, errors.

Everything here refuses bad input with a :class:`ScpiError` (an SCPI-99 error code and its
standard message, a detail after ``;``), never with another exception, and checks sizes before
it builds anything: a channel list is validated element by element against the instrument's
channels and its length computed arithmetically before a single channel is expanded, so a
30-byte ``(@101:30000000)`` costs nothing.

The error codes used (SCPI-99 chapter 21; the stock dialects also use -102 Syntax error, -200
Execution error, -211 Trigger ignored, -214 Trigger deadlock, -220 Parameter error and -410
Query INTERRUPTED):

* -104 Data type error (a malformed number, boolean or channel list);
* -109 Missing parameter;
* -113 Undefined header; -114 Header suffix out of range (a channel that does not exist);
* -221 Settings conflict; -222 Data out of range; -223 Too much data; -224 Illegal parameter
  value;
* -300 Device-specific error (an internal failure of the simulation, logged by the server);
* -350 Queue overflow; -363 Input buffer overrun (a line longer than the server accepts).

:class:`ErrorQueue` is the instrument's error/event queue as SCPI-99 21.8 defines it.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterator

#: the standard message of each error code used here (SCPI-99 21.8)
MESSAGES = {
    -102: "Syntax error",
    -104: "Data type error",
    -109: "Missing parameter",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -200: "Execution error",
    -211: "Trigger ignored",
    -214: "Trigger deadlock",
    -220: "Parameter error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -300: "Device-specific error",
    -350: "Queue overflow",
    -363: "Input buffer overrun",
    -410: "Query INTERRUPTED",
}
#: entries of an instrument's error queue
QUEUE_SIZE = 32
#: digits a channel number or header suffix may have (more is out of range, never converted)
MAX_DIGITS = 9


class ScpiError(Exception):
    """An SCPI error queued by an instrument: ``code`` (negative, SCPI-99) and ``message``
    (the standard text, then ``; detail`` if given)."""

    def __init__(self, code: int, detail: str = "") -> None:
        standard = MESSAGES.get(code, "Error")
        message = f"{standard}; {detail}" if detail else standard
        super().__init__(f'{code},"{message}"')
        self.code = code
        self.message = message


class ErrorQueue:
    """An instrument's error queue (SCPI-99 21.8): first in, first out, ``QUEUE_SIZE`` entries.

    When an error arrives at a full queue, the last (most recent) entry is replaced by
    ``-350,"Queue overflow"`` and the new error is discarded; the oldest errors are kept. Reading
    an entry frees a slot; reading an empty queue gives ``0,"No error"``; ``*CLS`` clears it.
    """

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self.size = size
        self._entries: deque[ScpiError] = deque()

    def push(self, error: ScpiError) -> None:
        if len(self._entries) < self.size:
            self._entries.append(error)
        else:
            self._entries[-1] = ScpiError(-350)

    def pop(self) -> str:
        """The oldest entry as ``<code>,"<message>"`` (``0,"No error"`` when empty)."""
        if not self._entries:
            return '0,"No error"'
        e = self._entries.popleft()
        text = e.message.replace('"', '""')  # an SCPI string doubles its quotes
        return f'{e.code},"{text}"'

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ScpiError]:
        return iter(self._entries)


def header_pattern(spec: str) -> str:
    """Regex of an SCPI header: ``"SOURce#:VOLTage[:LEVel]"`` -> short/long forms, ``#`` a
    numeric suffix (captured; see :func:`suffix`), ``[...]`` optional."""
    out = []
    i = 0
    while i < len(spec):
        ch = spec[i]
        if ch == "[":
            j = spec.index("]", i)
            out.append(f"(?:{header_pattern(spec[i + 1 : j])})?")
            i = j + 1
            continue
        if ch == "#":
            out.append(r"([0-9]+)")
            i += 1
            continue
        if ch in ":*":
            out.append(re.escape(ch))
            i += 1
            continue
        j = i
        while j < len(spec) and spec[j].isalpha():
            j += 1
        word = spec[i:j]
        short = "".join(c for c in word if c.isupper())
        rest = word[len(short) :]
        out.append(short + (f"(?:{rest.upper()})?" if rest else ""))
        i = j
    return "".join(out)


def suffix(digits: str, count: int, what: str) -> int:
    """A header's numeric suffix ``1..count`` as a 0-based index (-114 otherwise)."""
    if len(digits) > MAX_DIGITS or not 1 <= int(digits) <= count:
        raise ScpiError(-114, f"{what} {_short(digits)} does not exist (1..{count})")
    return int(digits) - 1


_CHANNEL_LIST = re.compile(r"\s*\(@(.*)\)\s*", re.DOTALL)
_ELEMENT = re.compile(r"\s*([0-9]+)\s*(?::\s*([0-9]+)\s*)?")


def channel_list(text: str | None, first: int, last: int, max_count: int) -> list[int]:
    """``"(@1,3:5)"`` -> ``[1, 3, 4, 5]``, each channel in ``first..last``, at most ``max_count``
    channels in all; a range ``a:b`` with ``b < a`` counts down. ``(@)`` is the empty list.

    Checked before expanded: malformed -> -104, no list -> -109, a channel outside
    ``first..last`` -> -222, more than ``max_count`` channels -> -223.
    """
    if text is None or not text.strip():
        raise ScpiError(-109, "expected a channel list (@...)")
    m = _CHANNEL_LIST.fullmatch(text)
    if m is None:
        raise ScpiError(-104, f"expected a channel list (@...), got {_short(text.strip())}")
    body = m.group(1)
    if not body.strip():
        return []
    spans: list[tuple[int, int]] = []
    count = 0
    for element in body.split(","):
        e = _ELEMENT.fullmatch(element)
        if e is None:
            raise ScpiError(
                -104, f"{_short(element.strip())} is not a channel or a range a:b in {_short(text)}"
            )
        a = _channel(e.group(1), first, last)
        b = a if e.group(2) is None else _channel(e.group(2), first, last)
        spans.append((a, b))
        count += abs(b - a) + 1
        if count > max_count:
            raise ScpiError(-223, f"more than {max_count} channels in {_short(text)}")
    out: list[int] = []
    for a, b in spans:
        out.extend(range(a, b + 1) if b >= a else range(a, b - 1, -1))
    return out


def _channel(digits: str, first: int, last: int) -> int:
    if len(digits) > MAX_DIGITS or not first <= int(digits) <= last:
        raise ScpiError(-222, f"channel {_short(digits)} does not exist ({first}..{last})")
    return int(digits)


def format_channels(chs: list[int]) -> str:
    return "(@" + ",".join(str(c) for c in chs) + ")"


def number(text: str | None) -> float:
    """A finite decimal number (-109 missing, -104 not a number, -222 not finite)."""
    if text is None or not text.strip():
        raise ScpiError(-109)
    try:
        v = float(text)
    except ValueError:
        raise ScpiError(-104, f"{_short(text)} is not a number") from None
    if not math.isfinite(v):
        raise ScpiError(-222, f"{_short(text)} is not finite")
    return v


def integer(text: str | None) -> int:
    v = number(text)
    if v != int(v):
        raise ScpiError(-104, f"{_short(text or '')} is not an integer")
    return int(v)


def boolean(text: str | None) -> bool:
    if text is None:
        raise ScpiError(-109)
    t = text.strip().upper()
    if t in ("ON", "1"):
        return True
    if t in ("OFF", "0"):
        return False
    raise ScpiError(-104, f"{_short(text)} is not ON/OFF/1/0")


def fmt(v: float) -> str:
    """A float as SCPI text, exact (shortest repr that round-trips)."""
    return repr(float(v))


def _short(text: str, limit: int = 40) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters (queue entries stay
    small whatever the client sent)."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
