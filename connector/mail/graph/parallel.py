"""Calls for many messages of one mailbox, a few at a time, answers in the order asked.

Outlook allows 4 concurrent requests per app and mailbox; the mailbox gate in http.py enforces that
for the whole process, and `ordered()` keeps at most `workers` calls in flight and `window` answers
in memory, so a batch of large mails cannot fill the memory while the caller stores the first ones.
On the first failure nothing more is started: the answers before it have been given, the error is
raised at its place, and calls already running are waited for (never abandoned mid-request).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered(items: Iterable[T], call: Callable[[T], R], workers: int = 4,
            window: int | None = None) -> Iterator[tuple[T, R]]:
    """(item, call(item)) in the order of `items`, with up to `workers` calls at once."""
    items = list(items)
    if not items:
        return
    workers = max(1, min(workers, len(items)))
    window = max(workers, window or workers * 2)
    pending: deque[tuple[T, Future[R]]] = deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="graph") as pool:
        try:
            for item in source:
                pending.append((item, pool.submit(call, item)))
                if len(pending) >= window:
                    break
            while pending:
                item, future = pending.popleft()
                result = future.result()  # raises the call's error at its place
                for more in source:
                    pending.append((more, pool.submit(call, more)))
                    break
                yield item, result
        finally:
            for _, future in pending:
                future.cancel()
