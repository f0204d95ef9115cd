"""One pass over a mailbox: list what is new, fetch and parse it in batches, ingest each batch and commit it
with the new high-water mark (fenced by the lease), then queue its post-import action.

Speed, for a big first import: the fetching thread (fetcher.py) fetches batch n+1 and hands it to the
parser pool and to the pack writers (SQLite: raw mail goes to pack files, see blobs.py) while this thread
stores batch n; each batch is committed once its pack is durable. On PostgreSQL a backlog's raw mail is
committed the same way ahead of its batch, over connections of its own (raw_writer.py). A backlog (a batch of
`DEFER_BODIES_FROM` mails or more) is parsed whole as far as its memory allowance goes (`parse_whole`: with
the fast path of mail/fastpath.py that is cheaper than a second pass, and every mail is searchable once it is
a ticket); its bigger mails are parsed for their headers only, which is enough to dedup, thread and open
tickets, and their body and attachments are extracted from the stored raw mail afterwards (extract.py).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session

from .. import blobs, parse_pool, raw_writer
from ..ingest import FetchedMail, Ingested, ingest
from ..mail.parse import MailHeaders
from ..models import Account
from ..transport.base import Mailbox
from .errors import PassResult, SyncError
from .fetcher import Fetcher
from .post_import import ActionProgress, catch_up
from .quarantine import record_failure

log = logging.getLogger(__name__)
DEFER_BODIES_FROM = 32  # mails in one fetched batch: from this many, a backlog (see `parse_whole`)
# A backlog's mails up to this size could be parsed whole at import (searchable at once) ... Off (0): measured
# on the 10,000-mail benchmark, 4 MB made tickets come at 0.11 of the raw fetch rate instead of 0.39 and
# took the peak memory to 353 MB (over the 300 MB target) for a complete import only 15% faster
# (BENCHMARKS.md, section 1). Headers first, bodies extracted afterwards with the parser's fast path.
WHOLE_MAIL_BYTES = 0
WHOLE_BATCH_BYTES = 32 * 1024 * 1024  # ... while a batch's whole-parsed mails stay within this many bytes
PACK_WRITERS = 2  # pack files written at once: one fsync waits on the disk while the next pack is written


def parse_whole(raws: list[bytes]) -> list[bool]:
    """Which mails of a backlog batch are parsed whole at import: the fast path (mail/fastpath.py) makes that
    cheaper than extracting their bodies afterwards (no second read of the raw mail, no second write of the
    article), so they are searchable at once. Bigger mails, and those past the batch's byte allowance, are
    taken from their headers and extracted afterwards (extract.py), so a batch of big mails holds no more
    than `WHOLE_BATCH_BYTES` of parsed content in memory at once."""
    flags, held = [], 0
    for raw in raws:
        flag = len(raw) <= WHOLE_MAIL_BYTES and held + len(raw) <= WHOLE_BATCH_BYTES
        held += len(raw) if flag else 0
        flags.append(flag)
    return flags


def _headers_where_whole_failed(collect, raws: list[bytes], whole: list[bool], max_size: int, budget: float):
    """A backlog's mail parsed whole that overran the budget (or whose parser died) is taken from its headers
    instead, as a backlog's mails were before they were parsed whole: it becomes a ticket at once, and the
    extraction afterwards notes on it why its body is missing (a mail that fails even so is quarantined)."""
    def results() -> list:
        parsed = collect()
        failed = [i for i, (flag, one) in enumerate(zip(whole, parsed)) if flag and isinstance(one, BaseException)]
        if failed:
            again, _ = parse_pool.start([raws[i] for i in failed], headers_only=True, max_size=max_size, budget=budget)
            for i, one in zip(failed, again()):
                parsed[i] = one
        return parsed
    return results


class ImportPass:
    def __init__(self, rt, mailbox: Mailbox, fence, files: blobs.BlobFiles | None,
                 should_stop=lambda: False) -> None:
        self.rt, self.mailbox, self.fence, self.files = rt, mailbox, fence, files
        self.should_stop = should_stop  # asked after each committed batch: a stopping worker ends there
        self.result = PassResult()

    def run(self, session: Session, account: Account) -> PassResult:
        started = time.monotonic()
        state = self.mailbox.select(account.folder)
        if account.uidvalidity != state.uidvalidity:
            if account.uidvalidity is not None:
                log.warning("%s: UIDVALIDITY changed (%s -> %s); re-reading the folder, dedup by Message-ID",
                            account.address, account.uidvalidity, state.uidvalidity)
            account.uidvalidity = state.uidvalidity
            account.last_uid = 0
            account.post_import_done_uid = 0
            self.fence.commit(session)
        if catch_up(self.mailbox, account):
            self.fence.commit(session)
        resume = getattr(self.mailbox, "resume", None)  # a transport with a string cursor (Graph): base.py
        if resume is not None:
            resume(account.sync_cursor, account.last_uid)
        uids = self.mailbox.uids_after(account.last_uid)
        self.result.spent("list", time.monotonic() - started)
        if not uids:
            if self._position(account):
                self.fence.commit(session)
            return self.result
        batch_size = max(1, self.rt.settings.mail.fetch_batch_size)
        if min(batch_size, len(uids)) >= DEFER_BODIES_FROM:
            parse_pool.warm_up()  # a backlog: the parser processes start while the first batch is fetched
        account.sync_total, account.sync_done = len(uids), 0
        committing = time.monotonic()
        self.fence.commit(session)
        self.result.spent("store", time.monotonic() - committing)
        blocked = False  # a mail to retry stops last_uid from moving past it
        batches = [uids[start:start + batch_size] for start in range(0, len(uids), batch_size)]
        writer = ThreadPoolExecutor(PACK_WRITERS, thread_name_prefix=f"{threading.current_thread().name}-packs") \
            if self.files is not None else None
        self.progress = ActionProgress(self.mailbox, account)
        fetcher = Fetcher(self.mailbox, batches, lambda fetched: self._prepare(fetched, writer), self.progress)
        fetcher.start()
        try:
            waiting = time.monotonic()
            for batch, parsed in fetcher.parsed_batches():
                items = parsed()
                storing = time.monotonic()
                self.result.spent("fetch", storing - waiting)
                blocked = self._store(session, account, batch, items, blocked, len(uids), fetcher.actions)
                del items
                waiting = time.monotonic()
                self.result.spent("store", waiting - storing)
                del parsed
                parse_pool.release_memory()  # a batch's mail and what was parsed from it: back to the system
                if self.should_stop():
                    break
        finally:
            fetcher.finish()
            if writer is not None:
                writer.shutdown(wait=True)
        before = account.post_import_done_uid
        self.progress.mark(account, finished=True)  # every queued action has run (or one failed)
        if account.post_import_done_uid != before:
            self.fence.commit(session)
        return self.result

    def _position(self, account: Account) -> bool:
        """Set the string cursor that goes with `last_uid` (transports that have one); True if it moved."""
        cursor_at = getattr(self.mailbox, "cursor_at", None)
        if cursor_at is None:
            return False
        cursor = cursor_at(account.last_uid)
        moved, account.sync_cursor = cursor != account.sync_cursor, cursor
        return moved

    def _prepare(self, fetched: list[tuple[int, bytes]], writer: ThreadPoolExecutor | None):
        """In the fetching thread: start parsing (headers only for a backlog) and writing the raw mails to a pack
        file (SQLite). Returns a callable that gives the batch as [FetchedMail or (uid, raw, the exception
        parsing raised)], once the pack is durable."""
        mail = self.rt.settings.mail
        raws = [raw for _, raw in fetched]
        backlog = len(fetched) >= DEFER_BODIES_FROM
        whole = parse_whole(raws) if backlog else None
        collect, _ = parse_pool.start(raws, headers_only=backlog, whole=whole,
                                      max_size=mail.max_message_bytes, budget=mail.parse_timeout_seconds)
        if whole is not None:
            collect = _headers_where_whole_failed(collect, raws, whole, mail.max_message_bytes,
                                                  mail.parse_timeout_seconds)
        written = writer.submit(self.files.write_pack, raws) if writer is not None and fetched else None
        if written is None and backlog and self.rt.db.engine.dialect.name == "postgresql":
            written = raw_writer.submit(self.rt.db.engine, raws)  # committed before this batch is

        def results():
            packed: list = [None] * len(fetched)
            if written is not None:
                try:
                    packed = written.result()
                except OSError as exc:
                    raise SyncError(f"Could not store mail in {self.files.root}: {exc.strerror or exc}. Free disk "
                                    "space or fix the folder's permissions; the import resumes where it stopped.",
                                    retry_after=60) from None
                except raw_writer.NotStored as exc:
                    raise SyncError(f"Could not store raw mail in the database: {exc}. The import resumes "
                                    "where it stopped.", retry_after=60) from None
            return [(uid, raw, parsed) if isinstance(parsed, BaseException) else FetchedMail(raw, parsed, uid, where)
                    for (uid, raw), parsed, where in zip(fetched, collect(), packed)]
        return results

    def _store(self, session: Session, account: Account, batch: list[int], items: list, blocked: bool,
               total: int, actions) -> bool:
        """Ingest one parsed batch, commit it with the new high-water UID (fenced), then queue its action."""
        good = [item for item in items if isinstance(item, FetchedMail)]
        outcomes: dict[int, str] = {}
        if good:
            try:
                with session.begin_nested():
                    ingested = ingest(session, account, good)
            except Exception as exc:  # noqa: BLE001 - find the culprit the slow way: one mail at a time
                log.info("%s: batch import failed (%s: %s); importing one by one", account.address,
                         type(exc).__name__, exc)
                session.expire_all()
            else:
                outcomes = {mail.uid: self._count(one, mail) for mail, one in zip(good, ingested)}
        done_uids: list[int] = []
        for item in items:
            uid = item.uid if isinstance(item, FetchedMail) else item[0]
            if uid not in outcomes:
                outcomes[uid] = self._import_one(session, account, item)
            if outcomes[uid] == "retry":
                blocked = True
                continue
            done_uids.append(uid)
            if not blocked:
                account.last_uid = uid
        if not blocked:
            account.last_uid = max(account.last_uid, batch[-1])  # vanished mails count as done
        account.sync_done = min(total, (account.sync_done or 0) + len(batch))
        self._position(account)
        self.progress.mark(account)
        self.fence.commit(session)
        first = good[0].packed if good else None
        if first is not None and first.pack is not None \
                and not any(o in ("new_ticket", "follow_up") for o in outcomes.values()):
            self.files.delete_pack(first.pack)  # nothing new in it (a re-read folder): no row points there
        if done_uids:
            actions.put(done_uids)  # for the fetcher thread, which owns the connection during the pass
        return blocked

    def _import_one(self, session: Session, account: Account, item) -> str:
        if not isinstance(item, FetchedMail):
            uid, raw, exc = item
            return record_failure(session, account, uid, raw, exc, self.result, self._key_of(uid))
        try:
            with session.begin_nested():
                (ingested,) = ingest(session, account, [item])
        except Exception as exc:  # noqa: BLE001 - one bad mail must not stop the mailbox
            return record_failure(session, account, item.uid, item.raw, exc, self.result, self._key_of(item.uid))
        return self._count(ingested, item)

    def _key_of(self, uid: int) -> str | None:
        """The transport's own id of a mail whose number is not stable across passes (Graph), else None."""
        key_of = getattr(self.mailbox, "key_of", None)
        return key_of(uid) if key_of is not None else None

    def _count(self, ingested: Ingested, mail: FetchedMail) -> str:
        result = self.result
        if ingested.outcome == "duplicate":
            result.duplicates += 1
        elif ingested.outcome == "ignored":
            result.ignored += 1
        else:
            result.imported += 1
            result.deferred += isinstance(mail.parsed, MailHeaders)
            result.ticket_ids.add(ingested.ticket_id)
        return ingested.outcome
