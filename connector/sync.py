"""One mailbox's sync: fetch new UIDs in batches, import each mail, remember how far we got.

Crash safety comes from the order of writes: the articles of a batch and the new `last_uid` are
committed in one transaction, the post-import action (mark read, move, delete) runs only after that
commit, and Message-ID dedup makes any re-fetch harmless. A mail that fails three times, or whose parse
overruns its time budget once (parsing.py), is quarantined with its raw bytes so the sync moves on.

Speed, for a big first import: a fetching thread (`_Fetcher`) fetches batch n+1 and hands it to
the parser pool and to the pack writers (SQLite: raw mail goes to pack files, see blobs.py) while
this thread stores batch n; each batch is committed once its pack is durable. A backlog (a batch
of `DEFER_BODIES_FROM` mails or more) is parsed for its headers only, which is enough to dedup,
thread and open tickets; body and attachments are extracted from the stored raw mail afterwards
(bodies.py). New mail arrives in small batches and is parsed whole.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import accounts, blobs, parsing, registration, tickets
from .crypto import DecryptionError
from .identity.microsoft import IdentityError
from .mail.imap import ImapError, ImapMailbox
from .mail.parse import MailHeaders
from .models import Account, ImportFailure, utcnow
from .runtime import Runtime

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
DEFER_BODIES_FROM = 32  # mails in one fetched batch: from this many, headers now and bodies afterwards
PACK_WRITERS = 2  # pack files written at once: one fsync waits on the disk while the next pack is written


class SyncError(Exception):
    """A pass could not run; `message` is for people, `retry_after` in seconds, `reconnect` if tokens are gone."""

    def __init__(self, message: str, *, retry_after: float | None = None, reconnect: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reconnect = reconnect


@dataclass
class PassResult:
    imported: int = 0
    duplicates: int = 0
    ignored: int = 0
    quarantined: int = 0
    failed: int = 0
    deferred: int = 0  # of the imported, how many wait for their body to be extracted (bodies.py)
    ticket_ids: set[int] = field(default_factory=set)

    def summary(self) -> str:
        return (f"{self.imported} imported, {self.duplicates} already known, {self.ignored} ignored, "
                f"{self.quarantined} quarantined, {self.failed} to retry")


class AccountSync:
    """Keeps one IMAP connection for one mailbox across passes (log in once, then IDLE)."""

    def __init__(self, rt: Runtime, account_id: int,
                 mailbox_factory: Callable[..., ImapMailbox] = ImapMailbox) -> None:
        self.rt = rt
        self.account_id = account_id
        self.mailbox_factory = mailbox_factory
        self.mailbox: ImapMailbox | None = None
        self.folder: str | None = None
        self.files = blobs.BlobFiles.for_bind(rt.db.engine)  # where raw mail goes on SQLite (None: the table)
        parsing.warm_up()  # in the background: the first new mail should not wait for a parser process to start

    # -- connection ----------------------------------------------------------------------------------
    def connect(self, session: Session, account: Account) -> ImapMailbox:
        """Log in with the cached token; if the server refuses it, refresh once and try again."""
        try:
            identity = self.rt.identity(session)
        except DecryptionError as exc:  # the encryption key changed: say so, do not crash the worker
            raise SyncError(str(exc), retry_after=300) from None
        session.commit()  # the token refresh and the login below are network calls
        if identity is None:
            raise SyncError(registration.NOT_REGISTERED, retry_after=60)
        ms = self.rt.settings.microsoft
        for force_refresh in (False, True):
            try:
                token = accounts.mail_access_token(session, self.rt.vault, identity, account,
                                                   force_refresh=force_refresh)
            except IdentityError as exc:
                raise SyncError(exc.explained.message, reconnect=exc.needs_reconnect,
                                retry_after=None if exc.needs_reconnect else 30) from None
            mailbox = None
            try:
                mailbox = self.mailbox_factory(ms.imap_host, ms.imap_port, self.rt.settings.ca_bundle)
                mailbox.login(account.address, token)
            except ImapError as exc:
                if mailbox is not None:
                    mailbox.close()
                if exc.auth_failed and not force_refresh:
                    log.info("%s: IMAP refused the cached token; refreshing it once", account.address)
                    continue
                raise SyncError(str(exc), retry_after=exc.retry_after) from None
            self.mailbox = mailbox
            self.folder = None
            return mailbox
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.mailbox is not None:
            self.mailbox.close()
            self.mailbox = None

    # -- one pass --------------------------------------------------------------------------------------
    def run_pass(self) -> PassResult:
        """Import everything new; raises SyncError for failures of the whole pass."""
        with self.rt.db.sessionmaker() as session:
            account = session.get(Account, self.account_id)
            if account is None or account.status in ("disabled", "needs_reconnect") or not account.token_cache_enc:
                raise SyncError("The mailbox is not connected.", reconnect=account is not None
                                and account.status == "needs_reconnect")
            session.commit()  # never hold a transaction (SQLite's write lock) across network calls
            try:
                if self.mailbox is None:
                    self.connect(session, account)
                result = self._import_new(session, account)
            except SyncError:
                self.close()
                raise
            except ImapError as exc:
                self.close()
                raise SyncError(str(exc), retry_after=exc.retry_after) from None
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _is_connection_error(exc):
                    raise
                self.close()
                raise SyncError(f"The IMAP connection broke ({type(exc).__name__}); reconnecting.") from None
            account.status = "connected"
            account.last_error = None
            account.last_sync_at = utcnow()
            account.failure_count = 0
            account.next_attempt_at = None
            session.commit()
            return result

    def _import_new(self, session: Session, account: Account) -> PassResult:
        mailbox = self.mailbox
        state = mailbox.select(account.folder)
        self.folder = account.folder
        if account.uidvalidity != state.uidvalidity:
            if account.uidvalidity is not None:
                log.warning("%s: UIDVALIDITY changed (%s -> %s); re-reading the folder, dedup by Message-ID",
                            account.address, account.uidvalidity, state.uidvalidity)
            account.uidvalidity = state.uidvalidity
            account.last_uid = 0
            session.commit()
        uids = mailbox.uids_after(account.last_uid)
        result = PassResult()
        if not uids:
            return result
        batch_size = max(1, self.rt.settings.mail.fetch_batch_size)
        if min(batch_size, len(uids)) >= DEFER_BODIES_FROM:
            parsing.warm_up()  # a backlog: the parser processes start while the first batch is fetched
        account.sync_total, account.sync_done = len(uids), 0
        session.commit()
        blocked = False  # a mail to retry stops last_uid from moving past it
        batches = [uids[start:start + batch_size] for start in range(0, len(uids), batch_size)]
        writer = ThreadPoolExecutor(PACK_WRITERS, thread_name_prefix=f"{threading.current_thread().name}-packs") \
            if self.files is not None else None
        fetcher = _Fetcher(mailbox, batches, lambda fetched: self._prepare(fetched, writer),
                           self._after_import_of(account))
        fetcher.start()
        try:
            for batch, parse in fetcher.parsed_batches():
                blocked = self._store(session, account, batch, parse, result, blocked, len(uids), fetcher.actions)
        finally:
            fetcher.finish()
            if writer is not None:
                writer.shutdown(wait=True)
        return result

    # -- parsing and storing a batch ----------------------------------------------------------------------
    def _prepare(self, fetched: list[tuple[int, bytes]], writer: ThreadPoolExecutor | None):
        """In the fetching thread: start parsing (headers only for a backlog, whole mails otherwise; see
        the module doc) and writing the raw mails to a pack file (SQLite, see blobs.py). The pack is
        written and fsynced by `writer` while the next batch is fetched; the storing side waits for it
        before it commits anything that points into it.

        Returns a callable that gives [(uid, raw, ParsedMail or MailHeaders or the exception parsing
        raised, where the raw mail is in a pack or None)].
        """
        mail = self.rt.settings.mail
        collect, _ = parsing.start([raw for _, raw in fetched], headers_only=len(fetched) >= DEFER_BODIES_FROM,
                                   max_size=mail.max_message_bytes, budget=mail.parse_timeout_seconds)
        written = writer.submit(self.files.write_pack, [raw for _, raw in fetched]) \
            if writer is not None and fetched else None

        def results():
            packed: list = [None] * len(fetched)
            if written is not None:
                try:
                    packed = written.result()
                except OSError as exc:
                    raise SyncError(f"Could not store mail in {self.files.root}: {exc.strerror or exc}. Free disk "
                                    "space or fix the folder's permissions; the import resumes where it stopped.",
                                    retry_after=60) from None
            return [(uid, raw, parsed, where) for (uid, raw), parsed, where in zip(fetched, collect(), packed)]
        return results

    def _store(self, session: Session, account: Account, batch: list[int], parsed_batch, result: PassResult,
               blocked: bool, total: int, actions: "queue.SimpleQueue[list[int]]") -> bool:
        """Ingest one parsed batch, commit it with the new high-water UID, then queue its post-import action."""
        items = parsed_batch()
        done_uids: list[int] = []
        good = [item for item in items if not isinstance(item[2], BaseException)]
        outcomes: dict[int, str] = {}
        if good:
            try:
                with session.begin_nested():
                    ingested = tickets.ingest_batch(session, account, [(raw, parsed, uid) for uid, raw, parsed, _ in good],
                                                    raw_packed=[where for *_, where in good] if self.files else None)
            except Exception as exc:  # noqa: BLE001 - find the culprit the slow way: one mail at a time
                log.info("%s: batch import failed (%s: %s); importing one by one", account.address,
                         type(exc).__name__, exc)
                session.expire_all()
            else:
                for (uid, _, parsed, _), one in zip(good, ingested):
                    outcomes[uid] = self._count(one, result, parsed)
        for uid, raw, parsed, where in items:
            if uid not in outcomes:
                if isinstance(parsed, BaseException):
                    outcomes[uid] = self._record_failure(session, account, uid, raw, parsed, result)
                else:
                    outcomes[uid] = self._import_one(session, account, uid, raw, result, parsed, where)
            if outcomes[uid] == "retry":
                blocked = True
                continue
            done_uids.append(uid)
            if not blocked:
                account.last_uid = uid
        if not blocked:
            account.last_uid = max(account.last_uid, batch[-1])  # vanished mails count as done
        account.sync_done = min(total, (account.sync_done or 0) + len(batch))
        session.commit()
        if items and items[0][3] is not None and not any(o in ("new_ticket", "follow_up") for o in outcomes.values()):
            self.files.delete_pack(items[0][3].pack)  # nothing new in it (a re-read folder): no row points there
        if done_uids:
            actions.put(done_uids)  # for the fetcher thread, which owns the IMAP connection during the pass
        return blocked

    @staticmethod
    def _count(ingested, result: PassResult, parsed) -> str:
        if ingested.outcome == "duplicate":
            result.duplicates += 1
        elif ingested.outcome == "ignored":
            result.ignored += 1
        else:
            result.imported += 1
            result.deferred += isinstance(parsed, MailHeaders)
            result.ticket_ids.add(ingested.ticket_id)
        return ingested.outcome

    def _import_one(self, session: Session, account: Account, uid: int, raw: bytes, result: PassResult,
                    parsed, where: blobs.Packed | None) -> str:
        try:
            with session.begin_nested():
                ingested = tickets.ingest(session, account, raw, parsed, uid, raw_packed=where)
        except Exception as exc:  # noqa: BLE001 - one bad mail must not stop the mailbox
            return self._record_failure(session, account, uid, raw, exc, result)
        return self._count(ingested, result, parsed)

    def _record_failure(self, session: Session, account: Account, uid: int, raw: bytes, exc: Exception,
                        result: PassResult) -> str:
        log.warning("%s: UID %s failed to import: %s: %s", account.address, uid, type(exc).__name__, exc)
        row = session.scalar(select(ImportFailure).where(ImportFailure.account_id == account.id,
                                                         ImportFailure.uidvalidity == account.uidvalidity,
                                                         ImportFailure.uid == uid))
        if row is None:
            row = ImportFailure(account_id=account.id, uidvalidity=account.uidvalidity, uid=uid, attempts=0)
            session.add(row)
        row.attempts += 1
        row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        row.updated_at = utcnow()
        # A parse over the time budget is quarantined at once: parsing is deterministic, so a retry takes as
        # long again and holds the mailbox back for another budget (nothing is lost: "Import again" exists).
        if row.attempts >= MAX_ATTEMPTS or isinstance(exc, parsing.ParseTimeout):
            row.quarantined = True
            row.raw_sha256 = tickets.store_blob(session, raw)
            result.quarantined += 1
            log.error("%s: UID %s quarantined after %s attempt(s): %s", account.address, uid, row.attempts, exc)
            return "quarantined"
        result.failed += 1
        return "retry"

    def _after_import_of(self, account: Account) -> Callable[[list[int]], None]:
        """The account's post-import action, for mails whose import is committed."""
        action, folder, address = account.post_import_action, account.move_to_folder, account.address

        def run(uids: list[int]) -> None:
            if not uids or action == "keep":
                return
            try:
                if action == "mark_read":
                    self.mailbox.mark_read(uids)
                elif action == "move" and folder:
                    self.mailbox.move(uids, folder)
                elif action == "delete":
                    self.mailbox.delete(uids)
            except Exception as exc:  # noqa: BLE001 - the mail is imported; the action is retried by the user
                log.warning("%s: post-import action %s failed: %s", address, action, exc)
        return run

    # -- waiting for new mail --------------------------------------------------------------------------
    def wait_for_mail(self, timeout: float, should_stop: Callable[[], bool], use_idle: bool,
                      idle_slice: float = 1.0) -> bool:
        """Block until the server reports new mail (IDLE), `timeout` passes, or `should_stop()`.

        Returns True if the server reported something. Without IDLE, just waits (polling).
        """
        deadline = time.monotonic() + timeout
        if not use_idle or self.mailbox is None or not self.mailbox.supports_idle():
            while time.monotonic() < deadline and not should_stop():
                time.sleep(min(idle_slice, max(0.0, deadline - time.monotonic())))
            return False
        mailbox = self.mailbox
        try:
            if mailbox.pending_news():  # arrived during the last pass: go fetch it now, not at the next check
                return True
            mailbox.idle_start()
            try:
                while time.monotonic() < deadline and not should_stop():
                    if mailbox.idle_wait(min(idle_slice, max(0.05, deadline - time.monotonic()))):
                        return True
                return False
            finally:
                mailbox.idle_stop()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not _is_connection_error(exc):
                raise
            self.close()
            raise SyncError(f"The IMAP connection broke while waiting for mail ({type(exc).__name__}); "
                            "reconnecting.") from None


class _Fetcher(threading.Thread):
    """Fetches the batches of a pass and starts parsing them, ahead of the storing, in its own thread.

    Network reads and SQLite writes both release the GIL, so fetching batch n+1 overlaps storing
    batch n. `POOL_DEPTH` batches wait at most (memory stays bounded). The thread owns the IMAP
    connection for the pass, so it also runs the post-import actions that the storing side queues
    after each commit; `finish()` runs what is left once it has stopped.
    """

    def __init__(self, mailbox: ImapMailbox, batches: list[list[int]], prepare,
                 after_import: Callable[[list[int]], None]) -> None:
        super().__init__(name=f"{threading.current_thread().name}-fetch", daemon=True)
        self.mailbox, self.batches, self.prepare, self.after_import = mailbox, batches, prepare, after_import
        self.ready: queue.Queue = queue.Queue(maxsize=parsing.POOL_DEPTH)
        self.actions: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            for batch in self.batches:
                self._run_actions()
                if self.stopped.is_set():
                    return
                self._hand_over((batch, self.prepare(list(self.mailbox.fetch(batch)))))
            self._hand_over(None)
        except BaseException as exc:  # noqa: BLE001 - raised again on the storing side
            self._hand_over(exc)

    def _hand_over(self, item) -> None:
        while not self.stopped.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return
            except queue.Full:
                self._run_actions()

    def _run_actions(self) -> None:
        while True:
            try:
                uids = self.actions.get_nowait()
            except queue.Empty:
                return
            self.after_import(uids)

    def parsed_batches(self):
        """(batch, callable giving its parsed mails), in order; raises what fetching raised."""
        while True:
            item = self.ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def finish(self) -> None:
        self.stopped.set()
        self.join()
        self._run_actions()


def _is_connection_error(exc: BaseException) -> bool:
    """Network trouble and protocol aborts (the server went away), as opposed to our own bugs."""
    return isinstance(exc, (OSError, EOFError)) or type(exc).__module__.startswith(("imaplib", "imapclient"))
