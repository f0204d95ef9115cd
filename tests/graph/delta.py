"""Delta query on a mail folder: rounds of pages with $skiptoken, ending in a $deltatoken.

https://learn.microsoft.com/graph/api/message-delta and /graph/delta-query-messages,
/graph/delta-query-overview:
- The first round returns what is in the folder; later rounds (from the deltaLink) return only
  messages created or updated since, and `@removed` {"reason": "deleted"} for those that left.
- Query options ($select, changeType, $filter on receivedDateTime, $orderby receivedDateTime desc)
  are given once and encoded in the tokens; the page size comes from `Prefer:
  odata.maxpagesize` (default 10) on each request.
- Outlook delta tokens have no fixed lifetime; the service keeps a cache and drops the oldest.
  An expired token answers a 40X error with code syncStateNotFound (the stand-in uses 410 Gone);
  a reset answers 410 with a Location header holding the initial URL and code resyncRequired.
Tokens are opaque random strings kept here, so any token not issued (or evicted) is expired.
"""
from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from . import errors
from .clock import iso
from .model import Mailbox

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class DeltaQuery:
    address: str
    folder_id: str
    select: list[str] | None
    change_type: str | None  # created | updated | deleted
    newest_first: bool
    received_filter: Callable[[dict[str, Any]], bool] | None
    generation: int


@dataclass(eq=False)
class Round:
    """One round's answer, fixed when it starts; pages are slices of it (a page can be fetched
    again with the same $skiptoken, e.g. after a 429)."""

    query: DeltaQuery
    entries: list[tuple[str, str, str]]  # (kind "message"|"removed", immutable id, rest id)
    end_seq: int


class DeltaError(Exception):
    def __init__(self, error: errors.GraphError, resync: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.resync = resync


class DeltaTracker:
    def __init__(self, capacity: int = 500) -> None:
        self.capacity = capacity  # delta tokens kept per mailbox before the oldest are dropped
        self.expired_status = 410
        self.lock = threading.Lock()
        self._deltas: OrderedDict[str, tuple[DeltaQuery, int]] = OrderedDict()
        self._pages: dict[str, tuple[Round, int]] = {}  # skiptoken -> (round, offset)
        self._generation: dict[str, int] = {}
        self._reset: dict[str, bool] = {}  # address -> the next failure is a resync (Location)

    def generation(self, address: str) -> int:
        with self.lock:
            return self._generation.get(address, 0)

    def expire(self, address: str, resync: bool = False) -> None:
        """Every token of this mailbox stops working (test control)."""
        with self.lock:
            self._generation[address] = self._generation.get(address, 0) + 1
            self._reset[address] = resync

    def _stale(self, query: DeltaQuery | None, address: str, folder_id: str) -> DeltaError | None:
        if query is not None and query.address == address and query.folder_id == folder_id \
                and query.generation == self._generation.get(address, 0):
            return None
        if self._reset.get(address):
            return DeltaError(errors.GraphError(410, "resyncRequired", "Resync is required."),
                              resync=True)
        return DeltaError(errors.GraphError(
            self.expired_status, "syncStateNotFound", "The sync state generation is not found. "
            "The delta token is expired and data must be synchronized again."), resync=False)

    def start(self, box: Mailbox, query: DeltaQuery, since: int | None) -> Round:
        """A new round: everything (since=None) or the changes after sequence `since`."""
        entries: list[tuple[str, str, str, float]] = []
        present = set()
        for message in box.in_folder(query.folder_id):
            present.add(message.rest_id)
            if since is not None and message.changed_seq <= since:
                continue
            if query.received_filter and \
                    not query.received_filter({"receivedDateTime": iso(message.received)}):
                continue
            kind = "created" if since is None or message.entered_seq > since else "updated"
            if since is not None and query.change_type not in (None, kind):
                continue
            entries.append(("message", message.immutable_id, message.rest_id,
                            message.received.timestamp()))
        if query.newest_first:
            entries.sort(key=lambda e: -e[3])
        removed: list[tuple[str, str, str]] = []
        if since is not None and query.change_type in (None, "deleted"):
            seen = set(present)
            for removal in box.removals:
                if removal.seq > since and removal.folder_id == query.folder_id \
                        and removal.rest_id not in seen:
                    seen.add(removal.rest_id)
                    removed.append(("removed", removal.immutable_id, removal.rest_id))
        # Removals first: a message that left and came back is removed, then listed again.
        return Round(query, removed + [e[:3] for e in entries], box.seq)

    def begin(self, box: Mailbox, query: DeltaQuery) -> tuple[Round, int]:
        return self.start(box, query, None), 0

    def resume(self, box: Mailbox, folder_id: str, token: str) -> tuple[Round, int]:
        with self.lock:
            found = self._deltas.get(token)
            stale = self._stale(found[0] if found else None, box.address, folder_id)
            if stale:
                raise stale
            query, since = found  # type: ignore[misc]
        return self.start(box, query, since), 0

    def next_page(self, box: Mailbox, folder_id: str, token: str) -> tuple[Round, int]:
        with self.lock:
            found = self._pages.get(token)
            stale = self._stale(found[0].query if found else None, box.address, folder_id)
            if stale:
                raise stale
            return found  # type: ignore[return-value]

    def page(self, round_: Round, offset: int, size: int
             ) -> tuple[list[tuple[str, str, str]], str | None, str | None]:
        """(entries, skiptoken for the next page or None, deltatoken when the round is over)."""
        chunk = round_.entries[offset:offset + size]
        token = secrets.token_urlsafe(48)
        with self.lock:
            if offset + len(chunk) < len(round_.entries):
                self._pages[token] = (round_, offset + len(chunk))
                return chunk, token, None
            self._deltas[token] = (round_.query, round_.end_seq)
            mine = [t for t, (q, _) in self._deltas.items() if q.address == round_.query.address]
            for old in mine[:max(0, len(mine) - self.capacity)]:
                self._deltas.pop(old, None)
            return chunk, None, token
