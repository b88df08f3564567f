"""The one error tree of capture-engine.

Every error the engine raises on purpose derives from `EngineError` and names where it happened
(a URI, a line, an hour), so the CLI can print it as one line without a traceback::

    EngineError
    ├── OptionsError      invalid options or arguments (also a ValueError)
    ├── SourceError       a source cannot be listed or read (missing, denied, unreachable)
    ├── DecodeError       a record cannot be decoded (also a ValueError); normally turned into a reject
    ├── RejectLimitError  the share of rejected records exceeds --max-reject-ratio
    ├── NoDataError       the window held no data and data was required
    └── SinkError         the destination cannot be written or committed
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "EngineError",
    "NoDataError",
    "OptionsError",
    "RejectLimitError",
    "SinkError",
    "SourceError",
]


class EngineError(Exception):
    """Base class of every error capture-engine raises on purpose."""

    exit_code = 1


class OptionsError(EngineError, ValueError):
    """Options or arguments are invalid."""

    exit_code = 2


class SourceError(EngineError):
    """A source cannot be listed or read. The message names the URI."""

    def __init__(self, message: str, *, uri: str) -> None:
        super().__init__(f"{message}: {uri}")
        self.uri = uri


class DecodeError(EngineError, ValueError):
    """A record cannot be decoded. The message names the URI and line."""

    def __init__(self, message: str, *, uri: str, line: int | None = None) -> None:
        where = uri if line is None else f"{uri}:{line}"
        super().__init__(f"{message} at {where}")
        self.uri = uri
        self.line = line


class RejectLimitError(EngineError):
    """Too large a share of the records was rejected."""

    exit_code = 3


class NoDataError(EngineError):
    """The window held no data and `require_data` was set."""

    exit_code = 4


class SinkError(EngineError):
    """The destination cannot be written or committed. The message names the URI."""

    def __init__(self, message: str, *, uri: str) -> None:
        super().__init__(f"{message}: {uri}")
        self.uri = uri
