"""Parsing fetched mail on every core: a process pool for big batches, in process for small ones.

Used by the sync (headers of a big import, or whole mails of a small one) and by body extraction
(whole mails, after a big import). Small batches are parsed in process: new mail should not wait
for a hand-over to another process.
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import logging
import os
import threading
from typing import Callable, Union

from .mail.parse import MailHeaders, ParsedMail, header_slice, parse_headers, parse_message

log = logging.getLogger(__name__)
POOL_MIN_BATCH = 32  # smaller batches are parsed in process
POOL_SIZE = max(1, min(4, os.cpu_count() or 1))
POOL_DEPTH = 2  # batches a caller keeps in the pool while it fetches or stores the next

Parsed = Union[ParsedMail, MailHeaders, Exception]  # an exception is that mail's failure
_pool = None
_pool_lock = threading.Lock()


def _parse_all(raws: list[bytes], max_size: int) -> list[Parsed]:
    out: list[Parsed] = []
    for raw in raws:
        try:
            out.append(parse_message(raw, max_size=max_size))
        except Exception as exc:  # noqa: BLE001 - recorded as this mail's failure
            out.append(exc)
    return out


def _headers_all(slices: list[tuple[bytes, int]]) -> list[Parsed]:
    return [parse_headers(block, size=size) for block, size in slices]


def _in_pool(task: Callable[[list], list[Parsed]], part: list) -> list[Parsed]:
    """Run `task` in a pool process; exceptions are flattened so that any of them pickles."""
    try:
        return [RuntimeError(f"{type(p).__name__}: {p}") if isinstance(p, Exception) else p for p in task(part)]
    finally:
        release_memory()


def release_memory() -> None:
    """Give freed heap back to the system (glibc keeps it otherwise): mails are parsed in bursts of large
    objects, and what a burst leaves behind would count against the import's memory for good."""
    if _malloc_trim is not None:
        _malloc_trim(0)


try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (AttributeError, OSError):  # pragma: no cover - not glibc
    _malloc_trim = None


def pool():
    """The process pool; None on one core.

    Processes come from a fork server, not from a fork of this process: the worker has many threads,
    and a fork copies their locks. The fork server imports this module once, so each process starts
    at once instead of importing the whole app again (as `spawn` would).
    """
    global _pool
    if POOL_SIZE < 2:
        return None
    with _pool_lock:
        if _pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            _pool = ProcessPoolExecutor(POOL_SIZE, mp_context=context)
            atexit.register(reset_pool, True)
        return _pool


def warm_up() -> None:
    """Start the pool's processes now (they start on first use otherwise), e.g. while a big import
    fetches its first batch."""
    executor = pool()
    if executor is not None:
        for _ in range(POOL_SIZE):
            executor.submit(_headers_all, [])


def reset_pool(wait: bool = False) -> None:
    global _pool
    with _pool_lock:
        old, _pool = _pool, None
    if old is not None:
        old.shutdown(wait=wait, cancel_futures=True)


def start(raws: list[bytes], *, headers_only: bool, max_size: int) -> tuple[Callable[[], list[Parsed]], bool]:
    """Begin parsing `raws`: headers only (`MailHeaders`) or whole mails (`ParsedMail`).

    Returns (a callable giving one result per mail, in order, pooled). Headers-only work hands the
    pool only `header_slice` of each mail, a few KB instead of the whole message.
    """
    if headers_only:
        work: list = [(header_slice(raw), len(raw)) for raw in raws]
        task: Callable[[list], list[Parsed]] = _headers_all
    else:
        work, task = raws, functools.partial(_parse_all, max_size=max_size)
    executor = pool() if len(raws) >= POOL_MIN_BATCH else None
    if executor is None:
        return (lambda: task(work)), False
    chunk = max(1, len(work) // (2 * POOL_SIZE))
    parts = [work[i:i + chunk] for i in range(0, len(work), chunk)]
    futures = [executor.submit(_in_pool, task, part) for part in parts]

    def collect() -> list[Parsed]:
        out: list[Parsed] = []
        for part, future in zip(parts, futures):
            try:
                out.extend(future.result())
            except Exception:  # noqa: BLE001 - a broken pool: parse this part here instead
                log.warning("the parser pool failed; parsing %s mails in process", len(part))
                reset_pool()
                out.extend(task(part))
        return out
    return collect, True
