"""The Microsoft Graph transport: `Mailbox` and `Submitter` over mail/graph/, for the same sync and outbox.

The sync counts in integers (a high-water mark in `accounts.last_uid`, committed with each batch); Graph
has a delta link and string ids. `GraphTransport` maps one onto the other:

- `select(folder)`: the folder's "UIDVALIDITY" is a number derived from its Graph id, so a changed folder
  setting starts that folder afresh (Message-ID dedup keeps it free of duplicates);
- `uids_after(last_uid)` reads delta pages from the stored cursor (`accounts.sync_cursor`, handed in by
  `resume()`), numbers the new mails last_uid+1, last_uid+2, ... and remembers their Graph ids;
- `cursor_at(last_uid)`: the cursor to commit with that high-water mark: the link after the last page
  whose mails are all imported, else the link that reads the unfinished page again. A crash between two
  commits re-reads at most one page, and dedup drops what was imported already. An expired delta token
  restarts the folder (delta.py), again without duplicates.
- A pass lists at most `MAX_LISTED` mails; `has_news()` is then true and the next pass goes on.

Throttling (429/503 + Retry-After) fails this mailbox's pass with `retry_after`: the worker backs off
this mailbox only. A delta poll is one request, so a mailbox without change notifications is polled every
`POLL_SECONDS`; with them (public HTTPS base_url, own mailbox) the poll is a slow safety net.
"""
from __future__ import annotations

import functools
import logging
import time
import zlib
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32, default as default_policy
from email.utils import getaddresses
from typing import Callable, Iterator

from ..mail.graph import GraphError, GraphMailbox
from ..mail.imap import FolderState
from ..mail.smtp import SendFailure
from .base import MailboxError

log = logging.getLogger(__name__)

MAX_LISTED = 5000  # mails listed in one pass; a bigger backlog continues in the next pass at once
POLL_SECONDS = 5  # a delta poll without notifications: one request, 120 per 10 minutes of the 10,000 allowed
CATCH_UP_LIMIT = 10_000  # mails of the folder listed when catching up a post-import action
SENT_LOOKUP_WAITS = (1.0, 2.0, 4.0, 8.0)  # after a lost sendMail answer: Exchange files the copy within seconds


def mailbox_error(exc: GraphError) -> MailboxError:
    retry = exc.retry_after
    if retry is None and not exc.reconnect:
        retry = 600.0 if exc.permanent else None
    return MailboxError(exc.message, retry_after=retry, reconnect=exc.reconnect, auth_failed=False,
                        broken=exc.code == "Unreachable")


def _classified(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except GraphError as exc:
            raise mailbox_error(exc) from None
    return call


@dataclass
class _Page:
    start: str | None  # the cursor that reads this page (None: the folder from its start)
    end: str  # the cursor after it
    last_key: int  # the highest key of its mails; the key before it when it has none


class GraphTransport:
    """One mailbox over Graph as the sync uses it (see the module's docstring)."""

    def __init__(self, graph: GraphMailbox, *, news: Callable[[], bool] = lambda: False,
                 known: Callable[[list[str]], set[str]] = lambda ids: set(),
                 settle: Callable[[list[str]], None] = lambda ids: None,
                 push: Callable[[str], float | None] = lambda folder: None,
                 max_listed: int = MAX_LISTED) -> None:
        self.graph = graph
        self.news = news  # did a change notification arrive (notify_store), taken at each call
        self.known = known  # which of these Message-IDs the mailbox has imported: not fetched again
        self.settle = settle  # runs the post-import action on known mails still in the folder (graph ids)
        self.push = push  # keeps change notifications alive for the folder; the poll interval they allow
        self.max_listed = max_listed
        self.folder = "Inbox"
        self.poll_seconds: float = POLL_SECONDS
        self._cursor: str | None = None
        self._resumed_at = 0
        self._pages: list[_Page] = []
        self._ids: dict[int, str] = {}
        self._message_ids: dict[int, str] = {}
        self._more = False  # the last listing stopped before the end of the round

    # -- reading ------------------------------------------------------------------------------
    @_classified
    def select(self, folder: str) -> FolderState:
        self.folder = folder or "Inbox"
        folder_id = self.graph.folder_id(self.folder)
        self.poll_seconds = self.push(self.folder) or POLL_SECONDS
        return FolderState(uidvalidity=zlib.crc32(folder_id.encode()) or 1, exists=0, uidnext=None)

    def resume(self, cursor: str | None, last_uid: int) -> None:
        """Where the committed state stands: the stored cursor and the high-water mark it belongs to."""
        self._cursor, self._resumed_at = cursor, last_uid
        self._pages, self._ids, self._message_ids = [], {}, {}

    @_classified
    def uids_after(self, last_uid: int) -> list[int]:
        if last_uid != self._resumed_at:
            self.resume(self._cursor, last_uid)
        self.news()  # taken before reading: notifications arriving during the pass count for the next one
        key, start = last_uid, self._cursor
        self._pages, self._ids, self._message_ids, self._more = [], {}, {}, False
        for page in self.graph.delta_pages(self.folder, self._cursor):
            if page.restarted and start is not None and not self._pages:
                log.info("%s: the delta cursor is expired or of another folder; reading %s again (dedup by "
                         "Message-ID)", self.graph.address, self.folder)
                start = None
            for message in page.messages:
                key += 1
                self._ids[key] = message.id
                if message.internet_message_id:
                    self._message_ids[key] = message.internet_message_id
            self._pages.append(_Page(start, page.cursor, key))
            start = page.cursor
            if len(self._ids) >= self.max_listed and not page.done:
                self._more = True
                break
        return list(self._ids)

    def key_of(self, uid: int) -> str | None:
        """The Graph id of the mail listed as `uid` in this pass: what an import failure is keyed by, since the
        numbering starts again at each pass."""
        return self._ids.get(uid)

    def cursor_at(self, last_uid: int) -> str | None:
        """The cursor to commit with high-water mark `last_uid`."""
        if not self._pages:
            return self._cursor
        position = self._cursor
        for page in self._pages:
            if page.last_key <= last_uid:
                position = page.end
            else:
                return page.start
        return position

    @_classified
    def fetch(self, uids: list[int]) -> Iterator[tuple[int, bytes]]:
        """Mails imported already (a restarted round, a crash before the cursor moved, a switch from IMAP)
        are not downloaded again: they count as done, and get the post-import action (`settle`)."""
        known = self.known([self._message_ids[uid] for uid in uids if uid in self._message_ids])
        keys = {self._ids[uid]: uid for uid in uids
                if uid in self._ids and self._message_ids.get(uid) not in known}
        if known:  # imported before a crash that came before their action (or moved back in): act now, as
            # the sync does for a mail it finds known
            self.settle([self._ids[uid] for uid in uids if self._message_ids.get(uid) in known])
        return [(keys[graph_id], raw) for graph_id, raw in self.graph.fetch_mime(list(keys))]

    @_classified
    def after_import(self, uids: list[int], action: str, folder: str) -> None:
        if not uids or action == "keep":
            return
        self.graph.after_import([self._ids[uid] for uid in uids if uid in self._ids], action, folder)

    def settle_folder(self, action: str, folder: str, limit: int = CATCH_UP_LIMIT) -> bool:
        """The post-import action for imported mails still in the folder (a worker killed between a commit and
        its move or delete): the delta cursor is past them, so the folder itself is listed, which is short when
        the action empties it. Called by sync/post_import.py's catch-up; False if it could not run."""
        if action not in ("move", "delete"):
            return True
        try:
            left = self.graph.list_folder(self.folder, limit)
            known = self.known([mid for _, mid in left if mid])
            stale = [graph_id for graph_id, mid in left if mid in known]
            if stale:
                log.info("%s: %s imported mail(s) still in %s (their post-import %s did not run): running it now",
                         self.graph.address, len(stale), self.folder, action)
                self.graph.after_import(stale, action, folder)
        except GraphError as exc:
            log.warning("%s: catching up the post-import %s failed: %s", self.graph.address, action, exc.message)
            return False
        return True

    def has_news(self) -> bool:
        return self._more or self.news()

    def watch(self):
        return None  # polled every `poll_seconds`; change notifications wake the mailbox (worker/loop.py)

    @_classified
    def find_message_id(self, message_id: str) -> bool:
        return self.graph.find_sent(message_id)

    def close(self) -> None:
        self.graph.close()


def header_recipients(raw: bytes) -> set[str]:
    """The addresses in To, Cc and Bcc: sendMail with MIME sends to these, whatever the envelope says."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    values = [str(v) for name in ("To", "Cc", "Bcc") for v in headers.get_all(name) or []]
    return {address.lower() for _, address in getaddresses(values) if address}


def message_id_of(raw: bytes) -> str:
    return str(BytesHeaderParser(policy=default_policy).parsebytes(raw).get("Message-ID") or "").strip()


class GraphSubmitter:
    """The outbox's `Submitter` over Graph's sendMail with the MIME body (Exchange keeps the headers).

    sendMail is never retried blindly: when its answer is lost (network, 500, 502, 504), Sent Items is asked
    for the Message-ID for a few seconds; found means sent. Not found yet is `maybe_sent`: the outbox leaves
    the item "sending", and once its lease runs out the recovery (outbox/recovery.py) asks Sent Items again
    (found: sent; not found: queued), so a copy that Exchange files late is never sent a second time. A 503
    (the service did not take the request) not found in Sent Items is an ordinary transient failure."""

    def __init__(self, graph: GraphMailbox, sleep: Callable[[float], None] = time.sleep) -> None:
        self.graph = graph
        self.connected = True
        self.sleep = sleep

    def send(self, mail_from: str, rcpt_to: list[str], raw: bytes) -> str:
        missing = {r.lower() for r in rcpt_to} - header_recipients(raw)
        if missing:
            raise SendFailure(f"This mail names recipients only in its envelope ({', '.join(sorted(missing))}); "
                              "Microsoft Graph sends to the To, Cc and Bcc headers only. Write the reply again.",
                              True)
        try:
            self.graph.send_mime(raw)
        except GraphError as exc:
            answer_lost = exc.status in (None, 500, 502, 503, 504) and not exc.throttled and not exc.permanent
            if answer_lost and self._was_sent(raw):
                return "202 Accepted (the answer was lost; found in Sent Items)"
            if answer_lost and exc.status != 503:
                raise SendFailure(f"{exc.message} Microsoft Graph may have taken the mail, so it is not sent again "
                                  "until Sent Items has been checked for it once more.", False, code=exc.status,
                                  reply=exc.code, maybe_sent=True) from None
            raise SendFailure(exc.message, exc.permanent or exc.reconnect, code=exc.status, reply=exc.code,
                              auth=exc.reconnect or exc.auth) from None
        return "202 Accepted by Microsoft Graph (sendMail)"

    def _was_sent(self, raw: bytes) -> bool:
        message_id = message_id_of(raw)
        if not message_id:
            return False
        for wait in SENT_LOOKUP_WAITS:
            self.sleep(wait)
            try:
                if self.graph.find_sent(message_id):
                    return True
            except GraphError:
                continue
        return False

    def dispose(self) -> None:
        self.connected = False
        self.graph.close()
