"""Parsing fetched mail on every core, each mail under a time budget.

Used by the sync (headers of a big import, or whole mails of new mail) and by body extraction (whole
mails, after a big import, in the background or when someone opens the ticket). Every mail is parsed in
a worker process of `mail.budget`, whatever the batch size: a mail built to make the parser hang is
stopped after `[mail] parse_timeout_seconds` and comes back as `ParseTimeout`, so its mailbox moves on
(the sync quarantines it) instead of stalling. A warm process takes a mail in well under a millisecond,
so new mail loses nothing by the hand-over.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import Callable, Union

from .mail import budget as _budget
from .mail.fastpath import parse_mail
from .mail.parse import MailHeaders, ParsedMail, header_slice, parse_headers

log = logging.getLogger(__name__)
POOL_SIZE = _budget.DEFAULT_SIZE
POOL_DEPTH = 2  # batches a caller keeps in the pool while it fetches or stores the next
DEFAULT_BUDGET = 10.0  # seconds; the setting is [mail] parse_timeout_seconds
HEADER_SLICE = 256  # header blocks a worker process takes at once (cheap, so fewer hand-overs)
MAIL_SLICE = 8  # whole mails a worker process takes at once

Parsed = Union[ParsedMail, MailHeaders, Exception, None]  # an exception is that mail's failure; None: see StoredMail
release_memory = _budget.release_memory


class ParseTimeout(_budget.Overrun):
    """Parsing one mail took longer than the budget; the process was stopped. Not retried: the same bytes
    take as long again, and a retry would hold the mailbox back for another budget."""

    def __init__(self, budget: float) -> None:
        Exception.__init__(self, f"parsing this mail took longer than the {budget:g} s budget "
                                 "([mail] parse_timeout_seconds) and was stopped")
        self.budget = budget


class ParserDied(_budget.WorkerLost):
    """The parser process died on this mail (a crash, or the system ran out of memory)."""


@dataclass(frozen=True)
class StoredMail:
    """A raw mail in a pack file (blobs.py), handed to a parser process instead of its bytes: the process reads
    it and checks its SHA-256 itself, so the caller neither reads, hashes nor sends the mail (for body
    extraction after a big import, 438 MB for the 10,000-mail benchmark: BENCHMARKS.md, section 1)."""

    path: str
    offset: int
    size: int
    sha256: str

    def read(self) -> bytes | None:
        """The mail, or None if the pack is missing or the bytes do not match their SHA-256 (as `BlobFiles.read`)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except OSError:
            return None
        return data if len(data) == self.size and hashlib.sha256(data).hexdigest() == self.sha256 else None


def _parse_one(raw: bytes, max_size: int, headers: bool = True) -> ParsedMail:
    return parse_mail(raw, max_size=max_size, headers=headers)


def _stored_or_raw(item: bytes | StoredMail, parse: Callable[[bytes], ParsedMail]) -> ParsedMail | None:
    """A whole mail given as bytes, or as where it is stored (None if it is missing or damaged there)."""
    if isinstance(item, StoredMail):
        raw = item.read()
        return None if raw is None else parse(raw)
    return parse(item)


def _headers_one(block_and_size: tuple[bytes, int]) -> MailHeaders:
    block, size = block_and_size
    return parse_headers(block, size=size)


def _whole_or_headers(item: bytes | tuple[bytes, int], parse: Callable[[bytes], ParsedMail]) -> Parsed:
    """A big import's mail: whole (`bytes`) or, when it is too big to parse now, its headers (a tuple)."""
    return _headers_one(item) if isinstance(item, tuple) else parse(item)


def pool() -> _budget.BudgetPool:
    return _budget.shared_pool(POOL_SIZE)


def warm_up() -> None:
    """Start the parser processes now, in the background (e.g. while a big import fetches its first batch,
    or when a mailbox connects, so the first new mail does not wait for a process to start)."""
    try:
        pool().warm_up()
    except _budget.PoolUnavailable:
        pass


def reset_pool() -> None:
    _budget.reset_shared_pool()


def start(raws: list[bytes] | list[bytes | StoredMail], *, headers_only: bool, max_size: int,
          budget: float = DEFAULT_BUDGET, whole: list[bool] | None = None,
          body_only: bool = False) -> tuple[Callable[[], list[Parsed]], bool]:
    """Begin parsing `raws`: headers only (`MailHeaders`) or whole mails (`ParsedMail`), each within `budget`
    seconds. With `headers_only` and `whole` (a flag per mail), the flagged mails are parsed whole all the same
    (a big import parses whole what it can afford to hold in memory, see sync/import_pass.py). Whole mails may
    be given as `StoredMail` (where they are stored); one missing or damaged there comes back as None.
    `body_only`: whole mails whose headers are not wanted (`ParsedMail.headers` is None; body extraction).

    Returns (a callable giving one result per mail, in order, pooled). Headers-only work hands the processes
    only `header_slice` of each mail, a few KB instead of the whole message. A mail over the budget comes
    back as `ParseTimeout`, one whose process died as `ParserDied`.
    """
    whole_one = functools.partial(_parse_one, max_size=max_size, **({"headers": False} if body_only else {}))
    if headers_only and whole is not None and any(whole):
        work: list = [raw if flag else (header_slice(raw), len(raw)) for raw, flag in zip(raws, whole)]
        task: Callable = functools.partial(_whole_or_headers, parse=whole_one)
        per_slice = MAIL_SLICE
    elif headers_only:
        work = [(header_slice(raw), len(raw)) for raw in raws]
        task = _headers_one
        per_slice = HEADER_SLICE
    elif any(isinstance(raw, StoredMail) for raw in raws):
        work, task, per_slice = raws, functools.partial(_stored_or_raw, parse=whole_one), MAIL_SLICE
    else:
        work, task, per_slice = raws, whole_one, MAIL_SLICE
    # Small batches go one mail per process hand-over, so that they spread over every process.
    per_slice = max(1, min(per_slice, len(work) // (2 * POOL_SIZE)))
    try:
        job = pool().map(task, work, budget=float(budget) if budget > 0 else DEFAULT_BUDGET, slice_size=per_slice)
    except _budget.PoolUnavailable as exc:
        return functools.partial(_in_process, task, work, exc), False

    def collect() -> list[Parsed]:
        out: list[Parsed] = []
        for item, result in zip(work, job.result()):
            if isinstance(result, _budget.PoolUnavailable):
                result = _in_process(task, [item], result)[0]
            elif isinstance(result, _budget.Overrun):
                result = ParseTimeout(result.budget)
            elif isinstance(result, _budget.WorkerLost):
                result = ParserDied(str(result))
            out.append(result)
        return out
    return collect, True


def _in_process(task: Callable, work: list, why: Exception) -> list[Parsed]:
    """Last resort when no process can be started here: parse in this process, without a budget."""
    log.error("parsing %s mails in process, without a time budget: %s", len(work), why)
    out: list[Parsed] = []
    for item in work:
        try:
            out.append(task(item))
        except Exception as exc:  # noqa: BLE001 - recorded as this mail's failure
            out.append(exc)
    return out
