"""Progress people can read: a short console line per long job, and job logs without bars.

Every job writes its output to its log file (:func:`peftbench.core.workflow.redirect_log`), so
on its own the console shows only Snakemake's job lines. A long job (training, the embedded
models' builders) also writes a few lines to the terminal it inherited, each starting with the
job's label::

    [math lora/rank8-qv seed0] started
    [math lora/rank8-qv seed0] step 40/80 loss 0.5230 valid accuracy 0.350 (1 min 12 s)
    [math lora/rank8-qv seed0] done in 2 min 05 s: success, test_accuracy 0.325

Step lines come at most every ``PEFTBENCH_PROGRESS`` seconds (default 15); ``0`` (or
``off``) turns the console lines off, and so does a SLURM job unless the variable is set (a
cluster job's stderr is a file nobody watches live). The variable is not read when the
libraries load, so the local worker takes a job whatever its value.

:class:`PlainLog` is the other half: the log file's stream, which turns carriage-return
progress bars (tqdm's, in transformers, datasets, diffusers) into plain lines.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import TextIO

#: Seconds between a job's step lines on the console; 0 or "off": no console lines at all.
ENV = "PEFTBENCH_PROGRESS"
DEFAULT_INTERVAL_S = 15.0
_OFF = {"0", "off", "false", "no"}
_ON = {"", "1", "on", "true", "yes"}


def interval_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between step lines on the console, or None when the console lines are off."""
    value = environ.get(ENV)
    if value is None:
        # A cluster job's stderr is a file of its own: periodic lines there are noise.
        return None if environ.get("SLURM_JOB_ID") else DEFAULT_INTERVAL_S
    value = value.strip().lower()
    if value in _OFF:
        return None
    if value in _ON and value != "1":  # "1" is a number: one line a second at most
        return DEFAULT_INTERVAL_S
    try:
        seconds = float(value)
    except ValueError:
        return DEFAULT_INTERVAL_S  # a typo must not fail a job; the default is harmless
    return seconds if seconds > 0 else None


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: readable at a glance, never a float."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Console:
    """One job's lines on the terminal it inherited, rate-limited except start and end."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.stream, self.every_s, self.clock = label, stream, every_s, clock
        self.started = self.last = clock()
        self.finished = False

    def elapsed(self) -> float:
        return self.clock() - self.started

    def line(self, text: str, force: bool = False) -> bool:
        """Write ``[label] text``; unless ``force``, only if the last line is ``every_s`` old.
        Whether it was written."""
        now = self.clock()
        if self.finished or (not force and now - self.last < self.every_s):
            return False
        self.last = now
        try:
            # One write of one short line: jobs that share the terminal never split each other's.
            self.stream.write(f"[{self.label}] {text}\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # the terminal is gone (Snakemake killed): the job itself goes on
        return True

    def step(
        self, step: int, max_steps: int, loss: float | None, valid: Mapping[str, float] | None
    ) -> None:
        """A training step: shown every ``every_s``; the last one also once the job has run
        that long (what follows, e.g. the test evaluation, may take a while)."""
        last = step == max_steps and self.elapsed() >= self.every_s
        parts = [f"step {step}/{max_steps}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        for key, value in (valid or {}).items():
            if key != "step" and isinstance(value, int | float):
                parts.append(f"valid {key} {value:.3f}")
        self.line(f"{' '.join(parts)} ({duration(self.elapsed())})", force=last)

    def finish(self, text: str) -> None:
        """The job's last line (``text``: its outcome and headline figure); later ones are
        dropped, so a script's own end line wins over the generic one at exit."""
        self.line(text, force=True)
        self.finished = True


#: The running job's console, when it has one (:func:`start`).
_current: Console | None = None


def start(label: str, stream: TextIO, environ: Mapping[str, str] = os.environ) -> Console | None:
    """Give this job a console (unless they are off: :func:`interval_s`) and say it started."""
    global _current
    every = interval_s(environ)
    if every is None or stream is None:
        _current = None
        return None
    _current = Console(label, stream, every)
    _current.line("started", force=True)
    return _current


def current() -> Console | None:
    """This job's console, or None (no job, or console lines off)."""
    return _current


def report_step(
    step: int, max_steps: int, loss: float | None, valid: Mapping[str, float] | None = None
) -> None:
    """Report a training step to the job's console, if it has one (the training loop calls
    this every step; the console decides what is shown)."""
    if _current is not None:
        _current.step(step, max_steps, loss, valid)


def report(text: str) -> None:
    """A status line of a long phase other than training (e.g. ``evaluating 320/1319``), shown
    at most every interval, if the job has a console."""
    if _current is not None:
        _current.line(f"{text} ({duration(_current.elapsed())})")


def note(text: str) -> None:
    """A line the user should see at once (e.g. a resumed run), if the job has a console."""
    if _current is not None:
        _current.line(text, force=True)


def finish(text: str, ok: bool = True) -> None:
    """The job's end line, ``text`` its headline figure (or where to look when not ``ok``),
    if the job has a console."""
    if _current is not None:
        took = duration(_current.elapsed())
        _current.finish(f"done in {took}: {text}" if ok else f"failed after {took}: {text}")


class PlainLog(io.TextIOBase):
    """A log file's text stream that writes carriage-return progress bars as plain lines.

    A bar redraws its line after a ``\\r`` many times a second; here those states replace each
    other in memory and only the last one becomes a line, when the bar ends (its newline), plus
    one line every ``every_s`` seconds while a long bar runs. A bar cleared on close (``leave``
    false: blanks after ``\\r``) leaves nothing. Everything else passes through unchanged, a
    whole line at a time (a line still open is written by :meth:`finish`)."""

    def __init__(
        self, raw: TextIO, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.raw, self.every_s, self.clock = raw, every_s, clock
        self._line = ""
        self._redrawn = False  # the open line was redrawn after a \r: a bar
        self._after_cr = False  # the next text replaces the open line
        self._shown = ""  # the bar state last written as a line, not to write it twice
        self._since = clock()
        # tqdm may draw from its monitor thread while the job writes.
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.raw.encoding

    def write(self, text: str) -> int:
        with self._lock:
            for piece in re.split(r"([\r\n])", text):
                if piece == "\n":
                    self._end_line()
                elif piece == "\r":
                    if not self._redrawn:  # a bar starts: its first state waits its turn
                        self._since = self.clock()
                    self._after_cr = self._redrawn = True
                elif piece:
                    self._line = piece if self._after_cr else self._line + piece
                    self._after_cr = False
            if self._redrawn and self._line.strip() and self.clock() - self._since >= self.every_s:
                self._emit(self._line.rstrip())  # a long bar: one line now and then
        return len(text)

    def _emit(self, line: str) -> None:
        if line != self._shown:
            self.raw.write(line + "\n")
        self._shown, self._since = line, self.clock()

    def _end_line(self) -> None:
        line = self._line.rstrip() if self._redrawn else self._line
        if not (self._redrawn and not line.strip()):  # a cleared bar leaves nothing
            if self._redrawn:
                self._emit(line)
            else:
                self.raw.write(line + "\n")
        self._line, self._redrawn, self._after_cr, self._shown = "", False, False, ""

    def flush(self) -> None:
        # The open line stays open: a bar flushes after every redraw.
        with self._lock:
            self.raw.flush()

    def finish(self) -> None:
        """Write the line still open (a job's last words without a newline, a bar cut short)."""
        with self._lock:
            if self._line.strip():
                self._end_line()
            self.raw.flush()
