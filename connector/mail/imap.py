"""An IMAP session for one mailbox: TLS, AUTHENTICATE XOAUTH2, fetch by UID, IDLE, post-import actions.

This module and imap_idle.py are the one place that talks IMAP; the sync reaches it through the transport
seam (transport/imap.py). Certificates are
always verified; there is no code path that authenticates over a connection without TLS.
"""
from __future__ import annotations

import functools
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Iterator

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError

from .imap_idle import IdleSession

THROTTLE_RE = re.compile(r"Suggested Backoff Time:\s*(\d+)\s*(?:ms|milliseconds)", re.I)
FETCH_ITEMS = [b"RFC822.SIZE", b"BODY.PEEK[]"]


class ImapError(Exception):
    """A failure with a sentence for people. `retry_after` (seconds) when the server said so."""

    def __init__(self, message: str, *, retry_after: float | None = None, auth_failed: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.auth_failed = auth_failed


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    exists: int
    uidnext: int | None


@functools.lru_cache(maxsize=8)
def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """One verifying context per CA setting, shared by every connection (thread-safe): a context with
    the system's CA store costs about half a megabyte, too much to build per mailbox with 1,000 of them."""
    context = ssl.create_default_context(cafile=ca_bundle or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def xoauth2_string(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response, before base64 (RFC-less, Google/Microsoft format)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def _throttle_seconds(text: str) -> float | None:
    match = THROTTLE_RE.search(text or "")
    return int(match.group(1)) / 1000 if match else None


class ImapMailbox:
    """One authenticated connection to one mailbox."""

    def __init__(self, host: str, port: int, ca_bundle: str | None, timeout: float = 60) -> None:
        self.host, self.port = host, port
        try:
            if port == 143:  # STARTTLS before anything else; never authenticate in plaintext
                self.client = imapclient.IMAPClient(host, port=port, ssl=False, timeout=timeout)
                self.client.starttls(tls_context(ca_bundle))
            else:
                self.client = imapclient.IMAPClient(host, port=port, ssl=True, ssl_context=tls_context(ca_bundle),
                                                    timeout=timeout)
        except ssl.SSLError as exc:
            raise ImapError(f"TLS with {host}:{port} failed ({exc.reason or exc}): the server must offer TLS with a "
                            "certificate we trust; check imap_host/imap_port and [tls] ca_bundle.") from None
        except (OSError, IMAPClientError) as exc:
            raise ImapError(f"Cannot reach the IMAP server {host}:{port} ({type(exc).__name__}: {exc}).") from None
        # IMAPClient turns on imaplib's debug formatting; it halves throughput and could log data.
        self.client._imap.debug = 0
        self.folder_state: FolderState | None = None

    def login(self, user: str, token: str) -> None:
        try:
            self.client.oauth2_login(user, token)
        except LoginError as exc:
            text = str(exc)
            retry = _throttle_seconds(text)
            if retry:
                raise ImapError("Exchange is throttling this mailbox; waiting as it asked.", retry_after=retry) \
                    from None
            raise ImapError(f"The IMAP server refused the sign-in for {user} (AUTHENTICATE XOAUTH2 failed). Check "
                            "that IMAP is enabled for the mailbox (Exchange admin center > Mailboxes > Email apps), "
                            "that the app has IMAP.AccessAsUser.All, and for a shared mailbox that the signed-in "
                            "user has Full Access; then reconnect.", auth_failed=True) from None
        except (OSError, IMAPClientError) as exc:
            raise ImapError(f"The IMAP connection failed during sign-in ({type(exc).__name__}).") from None

    def select(self, folder: str) -> FolderState:
        try:
            info = self.client.select_folder(folder, readonly=False)
        except IMAPClientError as exc:
            raise ImapError(f"The folder \"{folder}\" cannot be opened ({exc}): check the folder name in the "
                            "mailbox settings.") from None
        state = FolderState(int(info[b"UIDVALIDITY"]), int(info.get(b"EXISTS", 0)),
                            int(info[b"UIDNEXT"]) if b"UIDNEXT" in info else None)
        self.folder_state = state
        # SELECT's own count is not news; an EXISTS announced after this (during SEARCH/FETCH) is.
        self.client._imap.untagged_responses.pop("EXISTS", None)
        return state

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs greater than `last_uid`, ascending (`N:*` also returns the newest mail if all are older)."""
        found = self.client.search(["UID", f"{last_uid + 1}:*"])
        return sorted(uid for uid in found if uid > last_uid)

    def fetch(self, uids: list[int]) -> Iterator[tuple[int, bytes]]:
        """Raw messages in UID order; a message that vanished meanwhile is skipped."""
        if not uids:
            return
        response = self.client.fetch(uids, FETCH_ITEMS)
        for uid in uids:
            data = response.get(uid)
            if data is None:
                continue
            raw = data.get(b"BODY[]")
            if raw is None:
                continue
            yield uid, raw

    def mark_read(self, uids: list[int]) -> None:
        if uids:
            self.client.add_flags(uids, [imapclient.SEEN], silent=True)

    def move(self, uids: list[int], folder: str) -> None:
        if not uids:
            return
        if not self.client.folder_exists(folder):
            self.client.create_folder(folder)
        if self.client.has_capability("MOVE"):
            self.client.move(uids, folder)
        else:
            self.client.copy(uids, folder)
            self._delete(uids)

    def delete(self, uids: list[int]) -> None:
        if uids:
            self._delete(uids)

    def _delete(self, uids: list[int]) -> None:
        self.client.add_flags(uids, [imapclient.DELETED], silent=True)
        if self.client.has_capability("UIDPLUS"):
            self.client.uid_expunge(uids)
        else:
            self.client.expunge()

    def pending_news(self) -> bool:
        """Did the server announce new mail since the last SELECT (during a fetch), or does it now (NOOP)?

        A mail delivered while a pass runs is not announced again once IDLE starts: Dovecot, for one,
        reports it only at its next periodic check. Asking before each IDLE closes that gap.
        """
        announced = bool(self.client._imap.untagged_responses.pop("EXISTS", None))
        _, responses = self.client.noop()
        return announced or any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses)

    def supports_idle(self) -> bool:
        return self.client.has_capability("IDLE")

    def idle_session(self) -> IdleSession:
        """IDLE read without blocking, for the worker's selector (imap_idle.py)."""
        return IdleSession(self.client)

    def find_message_id(self, message_id: str) -> bool:
        """Is a mail with this Message-ID in the sent folder(s)? (The outbox's check after a crash.)"""
        for folder in self.sent_folders():
            self.client.select_folder(folder, readonly=True)
            if self.client.search(["HEADER", "Message-ID", message_id]):
                return True
        return False

    def sent_folders(self) -> list[str]:
        """The server's sent folder(s): special-use \\Sent first, then the usual names."""
        names = [name for flags, _delim, name in self.client.list_folders() if b"\\Sent" in flags]
        for candidate in ("Sent Items", "Sent"):
            if candidate not in names and self.client.folder_exists(candidate):
                names.append(candidate)
        return names

    def noop(self) -> None:
        self.client.noop()

    def close(self) -> None:
        try:
            self.client.logout()
        except Exception:  # noqa: BLE001 - a dead connection is closed either way
            try:
                self.client.shutdown()
            except Exception:  # noqa: BLE001
                pass

    def abort(self) -> None:
        """Break a blocking read from another thread (used on shutdown)."""
        try:
            self.client.socket().shutdown(socket.SHUT_RDWR)
        except Exception:  # noqa: BLE001
            pass
