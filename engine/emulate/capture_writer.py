"""Capture for self-hosted endpoints: SageMaker's real-time capture layout written from any Python server.

`CaptureWriter` takes invocations (request and response bodies, their content types, the inference ID and
custom attributes) on the request path and writes them, from a background thread, as SageMaker's capture
objects ``{dest}/{endpoint}/{variant}/yyyy/mm/dd/hh/{MM}-{SS}-{mmm}-{uuid4}.jsonl`` through fsspec (a local
path, ``s3://``, ``memory://``...). `engine.emulate.middleware` wraps an ASGI or WSGI app with it.

The request path never waits for storage: `record` checks the budget, appends to a queue under a lock and
returns. The writer thread encodes (`engine.formats.capture`) and keeps one object per UTC hour in memory
until it rolls (``max_object_bytes`` reached, ``max_object_seconds`` after its first record, `flush`, `close`),
then writes it in one request; a local object is written under a dot-name and renamed, an object store's
appears whole at its PUT, so a reader never sees half an object. SageMaker was seen rolling about once a
minute, hence the 60 s default; a size roll is our addition.

Memory is bounded: events waiting in the queue hold at most ``max_buffer_bytes`` of bodies (and at most
``max_buffer_events`` events), and at most ``max_open_objects`` objects of at most ``max_object_bytes`` plus
one record are open at once. Loss policy, under back-pressure or failure, never blocking the request:

* the queue is full (storage slower than traffic): the event is dropped and counted (``dropped_buffer_full``);
  SageMaker likewise "stops capturing requests at high levels of disk usage". Nothing spills to local disk.
* a body above ``max_payload_bytes`` (InvokeEndpoint's 6 MB by default): dropped and counted
  (``dropped_too_large``).
* after `close`: dropped and counted (``dropped_closed``).
* an object that cannot be written after ``write_attempts`` tries: its events are lost and counted
  (``lost_write_errors``, ``write_errors``); the writer goes on with the next object. While it retries the
  queue may fill, and the drops above are counted.

`stats` returns every counter; drops are also logged as a warning, at most once a minute. The writer is
flushed and closed by `close`, by leaving its ``with`` block, by the ASGI middleware at lifespan shutdown, and
at a normal interpreter exit (atexit) for writers still open. A process killed by a signal runs no atexit
hook: uvicorn re-raises the SIGTERM it shut down on (the lifespan has closed the writer by then), gunicorn's
workers exit normally, but a bare ``wsgiref`` or Flask development server dies with what it held unless the
application closes the writer in a SIGTERM handler of its own. After ``os.fork`` the child starts empty, with
its own thread and its own event ID generator.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Literal

from engine.emulate.capture_settings import CaptureConfig, CaptureStats
from engine.errors import OptionsError
from engine.formats.capture import (
    CaptureEvent,
    CapturePayload,
    ContentTypeHeader,
    encode_event,
    object_key,
    parse_capture_modes,
    valid_custom_attributes,
    valid_inference_id,
)
from engine.io.storage import open_location, redact

__all__ = ["CaptureConfig", "CaptureStats", "CaptureWriter", "Clock", "DiscardReason"]

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
DiscardReason = Literal["status", "incomplete", "too_large"]

_EVENT_OVERHEAD = 256  # bytes an event costs in the queue besides its bodies (ids, times, the object itself)
_DROP_LOG_SECONDS = 60.0
_POLL_SECONDS = 0.05  # how often a writer with open objects looks for events and at the age of its objects


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


# Event IDs come from a generator of the writer's own, seeded by the OS (and again in a forked child): uuid4()
# reads the OS's random source on every call, a system call that can cost tens of microseconds per request.
_IDS = random.Random()


def _event_id() -> str:
    """A random (version 4) UUID."""
    return str(uuid.UUID(int=_IDS.getrandbits(128), version=4))


def _queued_size(event: CaptureEvent) -> int:
    """What an event counts against ``max_buffer_bytes``: its bodies and a fixed overhead."""
    size = _EVENT_OVERHEAD
    size += len(event.input.data) if event.input else 0
    size += len(event.output.data) if event.output else 0
    return size


class _Object:
    """One capture object being filled: its hour, its name and its lines."""

    __slots__ = ("events", "first", "hour", "lines", "size", "unique")

    def __init__(self, hour: datetime, first: datetime) -> None:
        self.hour = hour
        self.first = first
        self.unique = str(uuid.uuid4())
        self.lines: list[bytes] = []
        self.size = 0
        self.events = 0


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_LIVE: weakref.WeakSet[CaptureWriter] = weakref.WeakSet()


class CaptureWriter:
    """Writes sampled invocations as SageMaker real-time capture under `dest` (see the module docs).

    Use `capture` for one invocation (samples, then records), or `sample` and then `record` to decide before
    reading the bodies (the middleware does so). Thread-safe; `record` never blocks on storage.

    Args:
        dest: The capture destination (SageMaker's ``DestinationS3Uri``): a local path or an fsspec URL.
        endpoint: The endpoint name in the keys.
        clock: Returns the current time (aware UTC); the writer's time source for inference times and
            object ages, injectable for tests.
        **settings: `CaptureConfig` fields (``sampling_percentage``, ``capture_modes``, ``csv_content_types``,
            ``json_content_types``, ``max_object_bytes``...).

    Raises:
        OptionsError: An invalid setting. SourceError: `dest` cannot be opened.
    """

    def __init__(self, dest: str, *, endpoint: str, clock: Clock | None = None, **settings: Any) -> None:
        known = {f.name for f in fields(CaptureConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise OptionsError(f"unknown CaptureWriter setting {unknown[0]!r}")
        self.config = CaptureConfig(endpoint=endpoint, **settings)
        self.dest = dest
        c = self.config
        self._loc = open_location(dest, c.storage_options, kms_key_id=c.kms_key_id, connections=4)
        self._header = ContentTypeHeader(csv_content_types=c.csv_content_types, json_content_types=c.json_content_types)
        sides = parse_capture_modes(c.capture_modes)
        self.captures_input = "Input" in sides
        self.captures_output = "Output" in sides
        self._clock: Clock = clock or _utc_now
        self._rng = random.Random(c.seed)
        self._threshold = c.sampling_percentage / 100.0
        self._counts = dict.fromkeys((f.name for f in fields(CaptureStats)), 0)
        self._closed = False
        self._init_thread_state()
        _LIVE.add(self)

    # -- request path -------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The writer's current time (its clock's)."""
        return self._clock()

    def sample(self) -> bool:
        """Draws whether to capture one invocation (``sampling_percentage``)."""
        with self._lock:
            self._counts["requests"] += 1
            hit = self._rng.random() < self._threshold
            if hit:
                self._counts["sampled"] += 1
        return hit

    def capture(self, **invocation: Any) -> bool:
        """`sample`, then `record` the invocation if sampled; returns whether it was captured."""
        return self.sample() and self.record(**invocation)

    def record(
        self,
        *,
        request: bytes | None = None,
        request_content_type: str | None = None,
        response: bytes | None = None,
        response_content_type: str | None = None,
        inference_id: str | None = None,
        custom_attributes: str | None = None,
        inference_time: datetime | None = None,
        event_id: str | None = None,
    ) -> bool:
        """Queues one sampled invocation for writing; returns False if it was dropped (and counted).

        A side the capture modes leave out is not kept. `inference_time` defaults to now; `event_id` to a
        new uuid4. An inference ID or custom attributes that InvokeEndpoint would refuse are left out (and
        counted as ``invalid_metadata``); the event itself is kept.
        """
        inp = CapturePayload(data=request, content_type=request_content_type) if request is not None else None
        out = CapturePayload(data=response, content_type=response_content_type) if response is not None else None
        inp = inp if self.captures_input else None
        out = out if self.captures_output else None
        invalid = 0
        if inference_id is not None and not valid_inference_id(inference_id):
            inference_id, invalid = None, invalid + 1
        if custom_attributes is not None and not valid_custom_attributes(custom_attributes):
            custom_attributes, invalid = None, invalid + 1
        event = CaptureEvent(
            event_id=event_id or _event_id(),
            inference_time=inference_time or self._clock(),
            input=inp,
            output=out,
            inference_id=inference_id,
            custom_attributes=custom_attributes,
        )
        size = _queued_size(event)
        with self._lock:
            counts = self._counts
            counts["invalid_metadata"] += invalid
            if self._closed:
                counts["dropped_closed"] += 1
                return False
            if max(len(inp.data) if inp else 0, len(out.data) if out else 0) > self.config.max_payload_bytes:
                counts["dropped_too_large"] += 1
                return False
            if (
                counts["queued_bytes"] + size > self.config.max_buffer_bytes
                or len(self._queue) >= self.config.max_buffer_events
            ):
                counts["dropped_buffer_full"] += 1
                return False
            self._queue.append(event)
            counts["captured"] += 1
            counts["queued_bytes"] += size
            counts["peak_queued_bytes"] = max(counts["peak_queued_bytes"], counts["queued_bytes"])
            # A busy writer polls the queue: waking it for every event would cost a thread switch per request.
            # It is woken only from its idle sleep, or early when the queue fills half of its budget.
            if (
                self._idle
                or 2 * counts["queued_bytes"] > self.config.max_buffer_bytes
                or (2 * len(self._queue) > self.config.max_buffer_events)
            ):
                self._cond.notify()
        return True

    def discard(self, reason: DiscardReason) -> None:
        """Counts a sampled invocation that is not recorded: ``status`` (not 2xx), ``incomplete`` (the
        exchange did not finish) or ``too_large`` (a body above ``max_payload_bytes``)."""
        key = {"status": "skipped_status", "incomplete": "skipped_incomplete", "too_large": "dropped_too_large"}
        with self._lock:
            self._counts[key[reason]] += 1

    # -- control ------------------------------------------------------------------------------------------

    @property
    def stats(self) -> CaptureStats:
        """The counters now (see `CaptureStats`)."""
        with self._lock:
            counts = dict(self._counts)
            counts["queued_events"] = sum(isinstance(e, CaptureEvent) for e in self._queue) + self._in_hand
        return CaptureStats(**counts)

    @property
    def closed(self) -> bool:
        return self._closed

    def flush(self, timeout: float | None = None) -> bool:
        """Writes everything recorded so far, open objects included; returns False on timeout."""
        with self._lock:
            if self._closed:
                return not self._thread.is_alive()
            marker = _Flush()
            self._queue.append(marker)
            self._cond.notify()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Stops capturing, writes what is left and stops the thread; returns False on timeout. Idempotent."""
        with self._lock:
            self._closed = True
            self._cond.notify()
        _LIVE.discard(self)
        if self._thread is threading.current_thread():
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CaptureWriter({self.dest!r}, endpoint={self.config.endpoint!r}, variant={self.config.variant!r})"

    # -- writer thread ------------------------------------------------------------------------------------

    def _init_thread_state(self) -> None:
        """A fresh queue, lock and thread: at construction, and in a forked child (whose parent keeps its own
        events: the child must not write them twice)."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[CaptureEvent | _Flush] = deque()
        self._open: dict[datetime, _Object] = {}
        self._in_hand = 0
        self._idle = False
        self._counts["queued_bytes"] = self._counts["open_events"] = 0
        self._last_drop_log = (0, float("-inf"))
        self._thread = threading.Thread(target=self._run, name=f"capture-writer-{self.config.endpoint}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._closed:
                    wait = self._idle_wait()
                    self._idle = wait is None
                    self._cond.wait(wait)
                    self._idle = False
                items = list(self._queue)
                self._queue.clear()
                self._in_hand = sum(isinstance(e, CaptureEvent) for e in items)
                stopping = self._closed
            # Objects that aged out while the thread waited are written before new events could join them.
            self._roll_expired()
            size = 0
            for item in items:
                if isinstance(item, _Flush):
                    self._commit_all()
                    item.done.set()
                    continue
                size += _queued_size(item)
                try:
                    self._append(item)
                except Exception:  # a bug or an unencodable field: lose this event, never the thread
                    logger.exception("captured event %s could not be encoded", item.event_id)
                    with self._lock:
                        self._counts["lost_write_errors"] += 1
            with self._lock:
                self._counts["queued_bytes"] -= size
                self._in_hand = 0
            self._roll_expired()
            self._log_drops()
            if stopping and not items:
                self._commit_all()
                return

    def _idle_wait(self) -> float | None:
        """How long to wait for events: until woken (None) when nothing is open, else one poll, or less if an
        object ages out sooner."""
        if not self._open:
            return None
        now = self._clock()
        age = max((now - o.first).total_seconds() for o in self._open.values())
        return min(_POLL_SECONDS, max(0.001, self.config.max_object_seconds - age))

    def _append(self, event: CaptureEvent) -> None:
        """Adds `event` to its hour's object, rolling that by size, or first by age.

        An object spans at most ``max_object_seconds`` of inference times from its first record on, whatever
        order the writer thread meets the events in; a late event of that span still joins it.
        """
        line = encode_event(event, self._header) + b"\n"
        t = event.inference_time
        t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
        hour = t.replace(minute=0, second=0, microsecond=0)
        obj = self._open.get(hour)
        if obj is not None and (t - obj.first).total_seconds() >= self.config.max_object_seconds:
            self._commit(obj)
            obj = None
        if obj is None:
            if len(self._open) >= self.config.max_open_objects:
                self._commit(min(self._open.values(), key=lambda o: o.first))
            obj = self._open[hour] = _Object(hour, t)
        obj.lines.append(line)
        obj.size += len(line)
        obj.events += 1
        with self._lock:
            self._counts["open_events"] += 1
        if obj.size >= self.config.max_object_bytes:
            self._commit(obj)

    def _roll_expired(self) -> None:
        if not self._open:
            return
        limit = self._clock() - timedelta(seconds=self.config.max_object_seconds)
        for obj in [o for o in self._open.values() if o.first <= limit]:
            self._commit(obj)

    def _commit_all(self) -> None:
        for obj in list(self._open.values()):
            self._commit(obj)

    def _commit(self, obj: _Object) -> None:
        """Writes one object (retrying), then forgets it; its events count as written or lost."""
        del self._open[obj.hour]
        c = self.config
        key = object_key(c.endpoint, c.variant, obj.first, obj.unique)
        path = self._loc.join(key)
        data = b"".join(obj.lines)
        obj.lines = []
        for attempt in range(1, c.write_attempts + 1):
            try:
                self._put(path, data)
            except Exception as exc:  # any storage failure: the request path must never see it
                logger.warning(
                    "capture object %s not written (attempt %d of %d): %s",
                    redact(self._loc.uri(path)),
                    attempt,
                    c.write_attempts,
                    redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__),
                )
                if attempt < c.write_attempts:
                    time.sleep(0.2 * 2 ** (attempt - 1))
                continue
            with self._lock:
                self._counts["open_events"] -= obj.events
                self._counts["written"] += obj.events
                self._counts["objects"] += 1
                self._counts["bytes_written"] += len(data)
            return
        logger.error("lost %d captured events: %s could not be written", obj.events, self._loc.uri(path))
        with self._lock:
            self._counts["open_events"] -= obj.events
            self._counts["lost_write_errors"] += obj.events
            self._counts["write_errors"] += 1

    def _put(self, path: str, data: bytes) -> None:
        fs = self._loc.fs
        if self._loc.is_local:
            # Written under a name readers skip, then renamed: a local reader never meets half an object.
            parent, _, name = path.rpartition("/")
            fs.makedirs(parent, exist_ok=True)
            partial = f"{parent}/.{name}.partial"
            fs.pipe_file(partial, data)
            os.replace(partial, path)
        else:
            fs.pipe_file(path, data)

    def _log_drops(self) -> None:
        with self._lock:
            dropped = self._counts["dropped_buffer_full"] + self._counts["dropped_too_large"]
        last, at = self._last_drop_log
        now = time.monotonic()
        if dropped > last and now - at >= _DROP_LOG_SECONDS:
            logger.warning(
                "capture for %s dropped %d events so far (buffer full or body too large); see CaptureWriter.stats",
                self.config.endpoint,
                dropped,
            )
            self._last_drop_log = (dropped, now)


@atexit.register
def _close_at_exit() -> None:
    """Flushes the writers still open when the interpreter exits (their threads are daemons)."""
    for writer in list(_LIVE):
        writer.close(timeout=30)


def _after_fork_in_child() -> None:
    _IDS.seed()  # from the OS: a child must not draw its parent's IDs
    for writer in list(_LIVE):
        if not writer.closed:
            writer._init_thread_state()


os.register_at_fork(after_in_child=_after_fork_in_child)
