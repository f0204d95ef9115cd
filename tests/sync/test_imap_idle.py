"""IDLE read without blocking (connector/mail/imap_idle.py), against a scripted IMAP server on a real socket.

Dovecot decides itself how it splits its answers into writes, so the case where news comes in the same
read as IDLE's continuation ("+ idling" and "* 2 EXISTS" together: mail that arrived between a pass and
the IDLE that follows it) happens there only now and then. Here the server writes them together, every
time: the session must know it has news at once, because the socket will not turn readable for it again
(the watcher would wait for the next keep-alive or the server's next mailbox check, seconds later).
"""
from __future__ import annotations

import selectors
import socket
import threading

import imapclient
import pytest

from connector.mail.imap_idle import IdleSession


class ScriptedServer(threading.Thread):
    """Answers any command with OK; answers IDLE with `on_idle` in one write, and DONE with OK."""

    def __init__(self, on_idle: bytes) -> None:
        super().__init__(daemon=True)
        self.on_idle = on_idle
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
            idle_tag = None
            for line in lines:
                if line.strip() == b"DONE":
                    conn.sendall(idle_tag + b" OK IDLE done\r\n")
                    continue
                tag, _, command = line.strip().partition(b" ")
                if command.upper() == b"IDLE":
                    idle_tag = tag
                    conn.sendall(self.on_idle)
                elif command.upper() == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    conn.sendall(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + b" OK done\r\n")


@pytest.fixture
def session_with(request):
    clients = []

    def open_session(on_idle: bytes) -> IdleSession:
        server = ScriptedServer(on_idle)
        server.start()
        client = imapclient.IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=5)
        clients.append(client)
        return IdleSession(client)
    yield open_session
    for client in clients:
        try:
            client.logout()
        except Exception:  # noqa: BLE001
            pass


def _readable_within(session: IdleSession, seconds: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(session.fileno(), selectors.EVENT_READ)
        return bool(selector.select(seconds))


def test_news_in_the_same_read_as_the_continuation_is_news_at_once(session_with):
    session = session_with(b"+ idling\r\n* 2 EXISTS\r\n")
    session.start()
    assert session.ready() and session.news  # what the watcher asks before it sleeps on the socket
    assert not _readable_within(session, 0.3)  # ... and the socket would never have told it
    session.done()
    assert session.tag is None


def test_a_quiet_idle_is_not_news(session_with):
    session = session_with(b"+ idling\r\n* OK Still here\r\n")
    session.start()
    assert not session.ready() and not session.news and not session.closed
    session.done()
