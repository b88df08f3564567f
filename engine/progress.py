"""What the command line shows while a job runs: a status line on a terminal, log lines elsewhere.

Only the CLI uses this module (the library only logs): `configure_logging` sets up the process's
logging (text or JSON lines), `Progress` is the callback the jobs call as they read.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone
from typing import IO, Any

import orjson

from engine.io.storage import RedactingFilter
from engine.report import RunReport

__all__ = ["JsonFormatter", "Progress", "configure_logging"]

# Progress lines are written whatever --log-level says: a processing job's log must show life.
progress_logger = logging.getLogger("engine.progress")
progress_logger.setLevel(logging.INFO)

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_RECORD_FIELDS = set(vars(logging.makeLogRecord({})))  # what every LogRecord has; the rest are `extra=`
_TTY_EVERY = 0.2  # seconds between redraws of the status line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS and k != "message"})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str, fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Configure the root logger once for the process: `level` and ``text`` or ``json`` lines on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(RedactingFilter())  # credentials never reach a log line, --debug or not
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Called by a job with its report as it reads: bytes done of bytes total, percentage, ETA.

    On a terminal one status line is redrawn in place and cleared by `done` (before the summary); elsewhere
    (a container's log) a plain log line is written at most every `interval` seconds.
    """

    def __init__(self, *, tty: bool, interval: float, enabled: bool = True, stream: IO[str] | None = None) -> None:
        self.tty = tty
        self.enabled = enabled
        self.interval = _TTY_EVERY if tty else interval
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.drawn = False

    def __call__(self, report: RunReport, total_objects: int = 0) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < self.interval:
            return
        self.last = now
        done, total = report.bytes_read, report.bytes_total
        elapsed = now - self.t0
        fields: dict[str, Any] = {"bytes_done": done, "bytes_total": total or None, "records": report.records}
        text = f"{done / 1e6:,.1f} MB"
        if total:
            share = min(done / total, 1.0)
            fields["percent"] = round(100 * share, 1)
            text += f" of {total / 1e6:,.1f} MB ({share:.0%})"
            if 0 < share < 1:
                eta = elapsed * (1 - share) / share
                fields["eta_seconds"] = round(eta, 1)
                text += f", ETA {_duration(eta)}"
        text += f" | {report.records:,} records"
        if report.rejected:
            text += f" | {report.rejected:,} rejected"
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self.drawn = True
        else:
            progress_logger.info("progress: %s", text, extra=fields)

    def done(self) -> None:
        """Clear the status line, so that the summary starts on a clean line."""
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False
