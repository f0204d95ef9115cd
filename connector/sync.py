"""One mailbox's sync: fetch new UIDs in batches, import each mail, remember how far we got.

Crash safety comes from the order of writes: the articles of a batch and the new `last_uid` are
committed in one transaction, the post-import action (mark read, move, delete) runs only after that
commit, and Message-ID dedup makes any re-fetch harmless. A mail that fails three times is
quarantined with its raw bytes so the sync moves on.
"""
from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import accounts, registration, tickets
from .crypto import DecryptionError
from .identity.microsoft import IdentityError
from .mail.imap import ImapError, ImapMailbox
from .mail.parse import parse_message
from .models import Account, Article, ImportFailure, Ticket, utcnow
from .runtime import Runtime

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
POOL_MIN_BATCH = 32  # smaller batches (new mail, not a first import) are parsed in process: no hand-over latency
POOL_SIZE = max(1, min(4, os.cpu_count() or 1))
POOL_DEPTH = 2  # batches being parsed while the next is fetched (each about fetch_batch_size mails)
_pool = None
_pool_lock = threading.Lock()


def _parse_many(raws: list[bytes], max_size: int) -> list:
    """In a pool process: parse each mail; an exception is returned in its place (it is that mail's failure)."""
    out = []
    for raw in raws:
        try:
            out.append(parse_message(raw, max_size=max_size))
        except Exception as exc:  # noqa: BLE001
            out.append(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return out


def _parse_pool():
    """The process pool that parses big batches (first imports) on every core; None on one core.

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
            atexit.register(_reset_pool, True)
        return _pool


def _reset_pool(wait: bool = False) -> None:
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=wait, cancel_futures=True)


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
        account.sync_total, account.sync_done = len(uids), 0
        session.commit()
        blocked = False  # a mail to retry stops last_uid from moving past it
        batches = [uids[start:start + batch_size] for start in range(0, len(uids), batch_size)]
        parsing: collections.deque = collections.deque()  # batches in the parser pool, oldest first
        for batch in batches:
            fetched = list(mailbox.fetch(batch))
            parse, pooled = self._parse_async(fetched)  # in the pool, parsing runs while earlier batches are stored
            if pooled:  # keep the pool busy: store the oldest only once POOL_DEPTH batches are queued
                parsing.append((batch, parse))
                while len(parsing) > POOL_DEPTH:
                    blocked = self._store(session, account, *parsing.popleft(), result, blocked, len(uids))
            else:  # in order: whatever the pool still has, then this batch
                while parsing:
                    blocked = self._store(session, account, *parsing.popleft(), result, blocked, len(uids))
                blocked = self._store(session, account, batch, parse, result, blocked, len(uids))
        while parsing:
            blocked = self._store(session, account, *parsing.popleft(), result, blocked, len(uids))
        return result

    # -- parsing and storing a batch ----------------------------------------------------------------------
    def _parse_async(self, fetched: list[tuple[int, bytes]]):
        """Start parsing a batch: in the process pool when it is big enough, else right here.

        Returns (a callable that gives [(uid, raw, ParsedMail or the exception parsing raised)], pooled).
        """
        max_size = self.rt.settings.mail.max_message_bytes
        pool = _parse_pool() if len(fetched) >= POOL_MIN_BATCH else None
        if pool is None:
            def inline():
                out = []
                for uid, raw in fetched:
                    try:
                        out.append((uid, raw, parse_message(raw, max_size=max_size)))
                    except Exception as exc:  # noqa: BLE001 - recorded as this mail's failure
                        out.append((uid, raw, exc))
                return out
            return inline, False
        chunk = max(1, len(fetched) // (2 * POOL_SIZE))
        futures = [pool.submit(_parse_many, [raw for _, raw in fetched[i:i + chunk]], max_size)
                   for i in range(0, len(fetched), chunk)]

        def collect():
            out = []
            for i, future in zip(range(0, len(fetched), chunk), futures):
                part = fetched[i:i + chunk]
                try:
                    parsed = future.result()
                except Exception:  # noqa: BLE001 - a broken pool: parse this part here instead
                    log.warning("the parser pool failed; parsing %s mails in process", len(part))
                    _reset_pool()
                    parsed = []
                    for _, raw in part:
                        try:
                            parsed.append(parse_message(raw, max_size=max_size))
                        except Exception as exc:  # noqa: BLE001
                            parsed.append(exc)
                out.extend((uid, raw, p) for (uid, raw), p in zip(part, parsed))
            return out
        return collect, True

    def _store(self, session: Session, account: Account, batch: list[int], parsed_batch, result: PassResult,
               blocked: bool, total: int) -> bool:
        """Ingest one parsed batch, commit it with the new high-water UID, then run the post-import action."""
        items = parsed_batch()
        done_uids: list[int] = []
        good = [(uid, raw, parsed) for uid, raw, parsed in items if not isinstance(parsed, BaseException)]
        outcomes: dict[int, str] = {}
        if good:
            try:
                with session.begin_nested():
                    ingested = tickets.ingest_batch(session, account, [(raw, parsed, uid) for uid, raw, parsed in good])
            except Exception as exc:  # noqa: BLE001 - find the culprit the slow way: one mail at a time
                log.info("%s: batch import failed (%s: %s); importing one by one", account.address,
                         type(exc).__name__, exc)
                session.expire_all()
            else:
                for obj in list(session.identity_map.values()):  # written behind the ORM's back
                    if isinstance(obj, (Ticket, Article)):
                        session.expire(obj)
                for (uid, _, _), one in zip(good, ingested):
                    outcomes[uid] = self._count(one, result)
        for uid, raw, parsed in items:
            if uid not in outcomes:
                if isinstance(parsed, BaseException):
                    outcomes[uid] = self._record_failure(session, account, uid, raw, parsed, result)
                else:
                    outcomes[uid] = self._import_one(session, account, uid, raw, result, parsed)
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
        self._after_import(account, done_uids)
        return blocked

    @staticmethod
    def _count(ingested, result: PassResult) -> str:
        if ingested.outcome == "duplicate":
            result.duplicates += 1
        elif ingested.outcome == "ignored":
            result.ignored += 1
        else:
            result.imported += 1
            result.ticket_ids.add(ingested.ticket_id)
        return ingested.outcome

    def _import_one(self, session: Session, account: Account, uid: int, raw: bytes, result: PassResult,
                    parsed=None) -> str:
        try:
            with session.begin_nested():
                if parsed is None:
                    parsed = parse_message(raw, max_size=self.rt.settings.mail.max_message_bytes)
                ingested = tickets.ingest(session, account, raw, parsed, uid)
        except Exception as exc:  # noqa: BLE001 - one bad mail must not stop the mailbox
            return self._record_failure(session, account, uid, raw, exc, result)
        return self._count(ingested, result)

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
        if row.attempts >= MAX_ATTEMPTS:
            row.quarantined = True
            row.raw_sha256 = tickets.store_blob(session, raw)
            result.quarantined += 1
            log.error("%s: UID %s quarantined after %s attempts", account.address, uid, row.attempts)
            return "quarantined"
        result.failed += 1
        return "retry"

    def _after_import(self, account: Account, uids: list[int]) -> None:
        """The account's post-import action, only for mails whose import is committed."""
        if not uids or account.post_import_action == "keep":
            return
        try:
            if account.post_import_action == "mark_read":
                self.mailbox.mark_read(uids)
            elif account.post_import_action == "move" and account.move_to_folder:
                self.mailbox.move(uids, account.move_to_folder)
            elif account.post_import_action == "delete":
                self.mailbox.delete(uids)
        except Exception as exc:  # noqa: BLE001 - the mail is imported; the action is retried by the user
            log.warning("%s: post-import action %s failed: %s", account.address, account.post_import_action, exc)

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


def _is_connection_error(exc: BaseException) -> bool:
    """Network trouble and protocol aborts (the server went away), as opposed to our own bugs."""
    return isinstance(exc, (OSError, EOFError)) or type(exc).__module__.startswith(("imaplib", "imapclient"))
