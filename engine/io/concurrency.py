"""Concurrency: the two shapes every job uses, bounded so memory follows the work in flight, not the input.

`ordered_map` runs a function over items on a thread pool and yields results in input order; `prefetch`
iterates a producer in a background thread a bounded number of items ahead. Both hand exceptions to the
consumer's thread, in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from queue import SimpleQueue
from typing import Any, TypeVar

__all__ = ["ordered_map", "prefetch"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, lookahead: int) -> Iterator[R]:
    """`map(fn, items)` on a thread pool, in order, with at most `lookahead` items in flight.

    The bound is what keeps memory proportional to the work in flight rather than to the input.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= lookahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate `items` in a background thread, at most `depth` items ahead; errors are raised here, in order.

    For producers that do I/O in the iterating thread (streamed objects, dataset scans): the consumer's
    thread is then free for its own work (decoding, writing) while the next items are read.
    """
    queue: SimpleQueue[tuple[bool, Any]] = SimpleQueue()
    slots = threading.Semaphore(depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        """Queue `entry` once a slot is free, unless the consumer has stopped (then False)."""
        while not stop.is_set():
            if slots.acquire(timeout=0.1):
                queue.put(entry)
                return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((False, exc))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = queue.get()
            slots.release()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()  # the producer notices `stop` within its acquire timeout
