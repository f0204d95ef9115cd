"""IMAP IDLE read without blocking, so that one selector thread can watch every mailbox's connection.

IMAPClient's IDLE helpers read through imaplib with socket timeouts, one blocked thread per connection.
Here the IDLE command and its untagged responses go over the socket directly: `start()` sends IDLE and
reads the continuation, then the socket is non-blocking; `read_available()` takes what has arrived
(called when the selector says the socket is readable); `done()` ends IDLE and reads up to its tagged
answer, after which imaplib owns the connection again.

TLS: bytes already decrypted inside the SSL object do not make the socket readable, so `ready()`
also counts `pending()` and lines already buffered here; the selector asks it before it sleeps.
"""
from __future__ import annotations

import itertools
import re
import ssl

NEWS_RE = re.compile(rb"^\* \d+ (EXISTS|RECENT)\b", re.I)
LITERAL_RE = re.compile(rb"\{(\d+)\}\r?\n$")
_tags = itertools.count(1)


class IdleClosed(ConnectionError):
    """The server ended the connection (BYE or EOF) while idling."""


class IdleSession:
    """IDLE on one connection (`client`: an IMAPClient); not thread-safe, used by one thread at a time."""

    def __init__(self, client) -> None:
        self.imap = client._imap
        self.sock = self.imap.sock
        self.timeout = self.sock.gettimeout()
        self.buffer = b""
        self.skip = 0  # bytes of a literal still to pass over
        self.tag: bytes | None = None
        self.news = False
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def start(self) -> None:
        """Send IDLE and wait for the server's continuation; then the socket stops blocking.

        Anything imaplib had read ahead would be lost between the two readers: that counts as news (a pass
        reads it through imaplib), so the caller checks `news` after this."""
        if _read_ahead(self.imap.file, self.sock, self.timeout):
            self.news = True
            return
        self.tag = b"CI%d" % next(_tags)
        self.sock.settimeout(self.timeout)
        self.sock.sendall(self.tag + b" IDLE\r\n")
        while True:
            line = self._next_line_blocking()
            if line.startswith(b"+"):
                break
            if line.startswith(self.tag + b" "):
                self.tag = None
                raise ConnectionError(f"the server refused IDLE: {line.decode('ascii', 'replace').strip()}")
            self._note(line)
        # What came in the same read as the continuation is noted now: an EXISTS for mail that arrived
        # between the pass and this IDLE often does, and the socket will not turn readable for it again
        # (it waited for the next keep-alive or Dovecot's next mailbox check, seconds later).
        self._parse()
        self.sock.setblocking(False)

    def ready(self) -> bool:
        """Something to act on without waiting for the socket: news, a closed connection, decrypted bytes
        (lines already in `buffer` were noted by `start()` or `read_available()`)."""
        return self.news or self.closed or (getattr(self.sock, "pending", None) is not None and self.sock.pending() > 0)

    def read_available(self) -> None:
        """Read what has arrived without blocking and note news or the end of the connection."""
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                break
            except OSError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            self.buffer += data
            self._parse()

    def done(self) -> None:
        """End IDLE (DONE) and read up to its tagged answer; the connection is imaplib's again."""
        try:
            self.sock.settimeout(self.timeout)
            if self.tag is None or self.closed:
                return
            self.sock.sendall(b"DONE\r\n")
            while True:
                line = self._next_line_blocking()
                if line.startswith(self.tag + b" "):
                    break
                self._note(line)
            self.tag = None
            if self.buffer:  # the server said more after the tagged answer: imaplib never sees it
                self.news = True
        except OSError:
            self.closed = True
            raise IdleClosed("the IMAP connection broke while ending IDLE") from None

    # -- lines ---------------------------------------------------------------------------------------
    def _next_line_blocking(self) -> bytes:
        while True:
            line = self._pop_line()
            if line is not None:
                return line
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                raise IdleClosed("the IMAP server closed the connection during IDLE")
            self.buffer += data

    def _pop_line(self) -> bytes | None:
        while True:
            if self.skip:
                taken = min(self.skip, len(self.buffer))
                self.buffer, self.skip = self.buffer[taken:], self.skip - taken
                if self.skip:
                    return None
            end = self.buffer.find(b"\n")
            if end < 0:
                return None
            line, self.buffer = self.buffer[:end + 1], self.buffer[end + 1:]
            literal = LITERAL_RE.search(line)
            if literal:
                self.skip = int(literal.group(1))
            return line

    def _parse(self) -> None:
        while True:
            line = self._pop_line()
            if line is None:
                return
            self._note(line)

    def _note(self, line: bytes) -> None:
        if NEWS_RE.match(line):
            self.news = True
        elif line[:5].upper() == b"* BYE":
            self.closed = True


def _read_ahead(file, sock, timeout: float | None) -> bool:
    """Does imaplib's buffered reader hold bytes (or are some waiting)? Asked without blocking."""
    sock.settimeout(0.0)
    try:
        return len(file.peek(1)) > 0
    except (ssl.SSLWantReadError, BlockingIOError, ValueError):
        return False
    finally:
        sock.settimeout(timeout)
