"""The one seam to storage: fsspec URLs to filesystems, URIs for provenance, error translation."""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import fsspec
from fsspec.core import url_to_fs

from engine.errors import EngineError, OptionsError, SinkError, SourceError

__all__ = ["Location", "RedactingFilter", "open_location", "redact", "register_secrets", "translate_errors"]

# Credentials seen in storage options, URLs and the AWS environment: `redact` removes them from every message,
# log line (`RedactingFilter`, installed by the CLI on its handlers, so botocore's --debug logs too), report and
# reject the engine writes.
_SECRETS: set[str] = set()
_SECRET_OPTION = re.compile(r"(?i)secret|token|password|passwd|^key$|key_id|access_key")
_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@")
_AWS_CREDENTIAL = re.compile(r"(Credential=)[^/,\s'\"]+")
_MIN_SECRET = 4  # shorter values would blank out ordinary words


def register_secrets(options: Mapping[str, Any] | None = None, url: str | None = None) -> None:
    """Remember the credentials among `options` (nested), in `url`'s user info and in the AWS environment."""
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= _MIN_SECRET:
            _SECRETS.add(value)
    stack: list[Mapping[str, Any]] = [options or {}]
    while stack:
        for k, v in stack.pop().items():
            if isinstance(v, Mapping):
                stack.append(v)
            elif isinstance(v, str):
                if _SECRET_OPTION.search(str(k)) and len(v) >= _MIN_SECRET:
                    _SECRETS.add(v)
                _add_userinfo(v)
    if url:
        _add_userinfo(url)


def _add_userinfo(text: str) -> None:
    if "://" not in text or "@" not in text:
        return
    parts = urlsplit(text)
    for value in (parts.username, parts.password):
        if value and len(value) >= _MIN_SECRET:
            _SECRETS.add(value)


def redact(text: str) -> str:
    """`text` without the registered credentials, URL user info and AWS signature credentials."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _AWS_CREDENTIAL.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """Redacts every record that passes a handler, including other libraries' (botocore logs request headers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class Location:
    """A filesystem plus a root path in it, able to render full URIs for provenance."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.url = url
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.protocol = "file" if protocol in ("file", "local") else protocol

    def uri(self, path: str) -> str:
        """The full URI of `path` (``s3://bucket/key``, ``file:///abs/path``, ``memory://x``)."""
        if self.protocol == "file":
            return "file://" + path
        if self.protocol == "memory":
            return "memory://" + path.lstrip("/")
        return f"{self.protocol}://{path}"

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *(p.strip("/") for p in parts if p)])

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"


def open_location(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    kms_key_id: str | None = None,
    connections: int = 32,
) -> Location:
    """Open `url` (a local path or any fsspec URL) with the given storage options.

    `kms_key_id` asks S3 to encrypt every object written through this location with that KMS key
    (SSE-KMS), as SageMaker's ``KmsKeyId`` does for its own outputs. `connections` sizes the S3
    client's connection pool for that many requests at once (unless the options set it).
    """
    options = dict(storage_options or {})
    register_secrets(options, url)
    if urlsplit(url).scheme in ("s3", "s3a"):
        # botocore pools 10 connections by default: further concurrent GETs would wait for one.
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("max_pool_connections", max(10, connections))
        options["config_kwargs"] = config
    if kms_key_id:
        if urlsplit(url).scheme not in ("s3", "s3a"):
            raise OptionsError(f"--kms-key-id needs an s3:// destination, got {url}")
        extra = dict(options.get("s3_additional_kwargs") or {})
        extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_id)
        options["s3_additional_kwargs"] = extra
    try:
        fs, path = url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        # fsspec says which package a protocol needs (s3 -> s3fs); pass that on in one line.
        raise SourceError(f"cannot open storage ({exc})", uri=url) from exc
    return Location(fs, path, url)


# Object-store clients raise their own exception trees, not OSError: botocore (s3fs) raises
# EndpointConnectionError, NoCredentialsError, ReadTimeoutError..., aiohttp its ClientError family.
# They are recognised by module so that the optional clients need not be imported here.
_CLIENT_LIBRARIES = frozenset({"botocore", "aiobotocore", "aiohttp"})


def _is_client_error(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and any(
        cls.__module__.partition(".")[0] in _CLIENT_LIBRARIES for cls in type(exc).__mro__
    )


# Error codes with which object stores refuse a request for its rate: S3's SlowDown (HTTP 503), the Throttling
# family of other AWS services and S3-compatible stores, 429 Too Many Requests. A HEAD response has no body, so
# botocore knows only its status, which then is the code ("503").
_THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "503",
        "429",
    }
)


def _client_error_code(exc: BaseException) -> str | None:
    """The error code of the botocore ClientError behind `exc`, if there is one.

    s3fs turns a ClientError into an OSError by its code, several codes to one errno (EBUSY is SlowDown but also
    409 Conflict), and keeps the ClientError as the cause or context: only the code tells them apart.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None) if _is_client_error(current) else None
        error = response.get("Error") if isinstance(response, dict) else None
        if isinstance(error, dict) and error.get("Code"):
            return str(error["Code"])
        current = current.__cause__ or current.__context__
    return None


def _describe(exc: BaseException) -> str:
    kwargs = getattr(exc, "kwargs", None) if _is_client_error(exc) else None
    endpoint = kwargs.get("endpoint_url") if isinstance(kwargs, dict) else None
    if isinstance(endpoint, str) and "Connect" in type(exc).__name__:
        # botocore's message repeats the whole request URL; the endpoint is what the user can act on.
        parts = urlsplit(endpoint)
        return f"cannot connect to the object store at {parts.scheme}://{parts.netloc}"
    code = _client_error_code(exc)
    if code in _THROTTLING_CODES:
        # botocore (and s3fs, for SlowDown) have already retried with backoff: say so, so that the user lowers the
        # request rate (--fetch-concurrency) or raises the retries rather than rerunning at once.
        return f"throttled by the object store: {'HTTP ' + code if code.isdigit() else code} even after retries"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, PermissionError):
        return "access denied"
    if isinstance(exc, OSError) and exc.errno == errno.EBUSY and code is None:
        return "throttled by the object store"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


@contextmanager
def translate_errors(uri: str, *, sink: bool = False) -> Iterator[None]:
    """Turn storage exceptions raised inside the block into one-line engine errors naming `uri`."""
    try:
        yield
    except EngineError:
        raise
    except TypeError as exc:
        # s3fs hands storage options to its client only at the first request: a misspelt one surfaces here.
        if "unexpected keyword argument" not in str(exc):
            raise
        raise OptionsError(f"invalid --storage-option for {uri} ({exc})") from exc
    except Exception as exc:
        if not isinstance(exc, (OSError, ValueError, RuntimeError)) and not _is_client_error(exc):
            raise
        cls = SinkError if sink else SourceError
        verb = "cannot write" if sink else "cannot read"
        raise cls(f"{verb} ({_describe(exc)})", uri=uri) from exc
