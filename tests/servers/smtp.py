"""An SMTP submission server (aiosmtpd) that answers like smtp.office365.com:587.

Dovecot's own submission service cannot stand in: it refuses command lines over ~1 KB, and a
real `AUTH XOAUTH2 <base64 JWT>` line is 2-4 KB. This one takes long AUTH lines, requires STARTTLS
before AUTH, checks the bearer token at the test IdP over verified HTTPS, enforces "send as", and
can be told to fail the next attempts with Exchange's codes.

A message is taken (delivered, filed in Sent Items, listed in `received`) in one step that completes
even if the client goes away meanwhile, as a real server's queue commit does. `on_data(received)`, when
set, is called right after that step and before the 250 is written (which waits for it): a fault test
can kill the sending client exactly there, after the server took the mail and before the client can
know it did. The hook must not raise.

Delegation as at Exchange: `AUTH XOAUTH2` as a shared mailbox with a delegate's token needs Full
Access (the IdP's introspection answers for that login); mail from an address other than the
token owner's own needs "Send As" on it (the IdP's `send_as`), else 554 5.2.0 SendAsDenied after DATA.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import threading
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Callable, NamedTuple

import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from tests.support.net import free_port
from tests.support.tls import TestCA

MAX_MESSAGE_SIZE = 35 * 1024 * 1024  # Exchange Online's default send limit
MAX_COMMAND_LINE = 16 * 1024  # an AUTH line with a JWT is 2-4 KB; aiosmtpd's default is 512
RFC_LINE_LIMIT = 1001  # DATA lines keep RFC 5321's limit

STAGES = ("auth", "mail", "rcpt", "data")

AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_FAILED = "535 5.7.3 Authentication unsuccessful"
AUTH_TEMPFAIL = "454 4.7.0 Temporary authentication failure"
SEND_AS_DENIED = (
    "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; "
    "Failed to process message due to a permanent exception with message Cannot submit message."
)

# aiosmtpd's built-in answers, reworded to what Exchange Online says.
_EXCHANGE_WORDING = {
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "530 5.7.0 Authentication required": "530 5.7.57 Client not authenticated to send mail",
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds fixed maximum message size",
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size",
}


class Received(NamedTuple):
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    auth_login: str


class SignedIn(NamedTuple):
    """What a successful AUTH leaves on the session: the login, and whom the token may send as."""
    login: str
    senders: frozenset[str]


class _ExchangeSMTP(SMTP):
    """aiosmtpd's SMTP with long AUTH lines and Exchange's wording."""

    def __init__(self, handler: object, **kwargs: object) -> None:
        # The StreamReader's limit is taken from line_length_limit during __init__: raise it for
        # the AUTH line (and the line after a 334 prompt), then restore RFC 5321's limit for DATA.
        self.line_length_limit = MAX_COMMAND_LINE
        super().__init__(handler, **kwargs)  # type: ignore[arg-type]
        self.line_length_limit = RFC_LINE_LIMIT
        # aiosmtpd keeps these limits in a dict shared by all instances; give this one its own.
        self.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit, {"AUTH": MAX_COMMAND_LINE}
        )

    async def push(self, status: str) -> None:  # type: ignore[override]
        await super().push(_EXCHANGE_WORDING.get(status, status))


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _ExchangeSMTP(self.handler, **self.SMTP_kwargs)


class SmtpServer:
    """Submission server on 127.0.0.1; restartable on the same port."""

    def __init__(
        self,
        ca: TestCA,
        introspection_url: str,
        deliver: Callable[[str, bytes], None] | None = None,
        *,
        save_sent: Callable[[str, bytes], None] | None = None,
        port: int | None = None,
    ) -> None:
        """`deliver(rcpt, raw)` is called per recipient of an accepted message (e.g. dovecot.deliver);
        `save_sent(login, raw)`, if given, files a copy for the sender as Exchange does in Sent Items."""
        self.ca = ca
        self.introspection_url = introspection_url
        self.deliver = deliver
        self.save_sent = save_sent
        self.port = port or free_port()
        self.received: list[Received] = []
        self.auth_count = 0
        self.on_data: Callable[[Received], None] | None = None  # see the module doc
        self._failures: dict[str, collections.deque[str]] = {s: collections.deque() for s in STAGES}
        self._lock = threading.Lock()
        self._controller: _Controller | None = None
        self._tls_context = ca.server_context("smtp")
        self._http = requests.Session()
        self._http.trust_env = False  # no proxies, no REQUESTS_CA_BUNDLE: trust exactly the TestCA

    def start(self) -> None:
        if self._controller is not None:
            return
        controller = _Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="smtp.test.invalid",
            tls_context=self._tls_context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],  # Exchange with modern auth: XOAUTH2 only
            data_size_limit=MAX_MESSAGE_SIZE,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> "SmtpServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, code: int, message: str, *, stage: str = "auth", times: int = 1) -> None:
        """Answer `code message` at `stage` for the next `times` attempts, e.g.
        (535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant")."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        with self._lock:
            self._failures[stage].extend([f"{code} {message}"] * times)

    def _take_failure(self, stage: str) -> str | None:
        with self._lock:
            queue = self._failures[stage]
            return queue.popleft() if queue else None

    def _token_valid(self, login: str, token: str) -> SignedIn | bool | None:
        """SignedIn or False from the IdP; None if the IdP could not be asked (a temporary failure)."""
        try:
            response = self._http.post(
                self.introspection_url,
                params={"user": login},
                data={"token": token},
                verify=str(self.ca.ca_path),
                timeout=10,
            )
            response.raise_for_status()
            answer = response.json()
        except (requests.RequestException, ValueError):
            return None
        username = str(answer.get("username", ""))
        if answer.get("active") is not True or username.lower() != login.lower():
            return False
        # Whom the token's owner may send as: its own address and Send As grants (the IdP says);
        # an introspection server that does not say allows the login only.
        senders = str(answer.get("send_as") or login).lower().split()
        return SignedIn(login, frozenset(senders))


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def auth_XOAUTH2(self, smtp: SMTP, args: list[str]) -> AuthResult:
        """`AUTH XOAUTH2 <b64>` or `AUTH XOAUTH2`, `334 `, `<b64>`: both forms Exchange accepts."""
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True) if args[1] != "=" else b""
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode base64")
        else:
            response = await smtp.challenge_auth(b"", encode_to_b64=False)
            if not isinstance(response, bytes):
                return AuthResult(success=False, handled=True)  # aborted or bad base64, answered
            blob = response
        failure = self.server._take_failure("auth")
        if failure:
            return AuthResult(success=False, handled=False, message=failure)
        login, token = _parse_xoauth2(blob)
        if not login or not token:
            return AuthResult(success=False, handled=False, message=AUTH_FAILED)
        loop = asyncio.get_running_loop()
        valid = await loop.run_in_executor(None, self.server._token_valid, login, token)
        if valid is None:
            return AuthResult(success=False, handled=False, message=AUTH_TEMPFAIL)
        if not valid:
            return AuthResult(success=False, handled=False, message=AUTH_FAILED)
        with self.server._lock:
            self.server.auth_count += 1
        return AuthResult(success=True, auth_data=valid, message=AUTH_OK)

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        failure = self.server._take_failure("mail")
        if failure:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        failure = self.server._take_failure("rcpt")
        if failure:
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        """Exchange decides "send as" after the data, so SendAsDenied comes here, not at MAIL FROM."""
        failure = self.server._take_failure("data")
        if failure:
            return failure
        signed_in = session.auth_data
        if not isinstance(signed_in, SignedIn):
            return "530 5.7.57 Client not authenticated to send mail"
        login = signed_in.login
        raw = bytes(envelope.original_content or b"")
        mail_from = envelope.mail_from or ""
        if not _may_send_as(signed_in.senders, mail_from, raw):
            return SEND_AS_DENIED
        rcpt_tos = list(envelope.rcpt_tos)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._take, login, mail_from, rcpt_tos, raw)
        except Exception as error:  # a delivery problem is a server-side temporary failure
            return f"451 4.3.0 Delivery failed: {type(error).__name__}: {error}"[:500]
        return "250 2.0.0 OK Queued"

    def _take(self, login: str, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        """Deliver, file the sender's copy, record it: in the executor, so it completes even when the client
        goes away meanwhile (aiosmtpd then cancels the session's coroutine, not this thread)."""
        if self.server.deliver is not None:
            for rcpt in rcpt_tos:
                self.server.deliver(rcpt, raw)
        if self.server.save_sent is not None:
            self.server.save_sent(login, raw)
        received = Received(mail_from, rcpt_tos, raw, login)
        self.server.received.append(received)  # taken: the mail is out, whatever happens to this session now
        hook = self.server.on_data
        if hook is not None:
            hook(received)


def _parse_xoauth2(blob: bytes) -> tuple[str, str]:
    """`user=<login>\\x01auth=Bearer <token>\\x01\\x01` -> (login, token); empty strings if malformed."""
    fields: dict[str, str] = {}
    for part in blob.decode("utf-8", errors="replace").split("\x01"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip().lower()] = value
    auth = fields.get("auth", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer":
        return fields.get("user", ""), ""
    return fields.get("user", ""), token.strip()


def _may_send_as(senders: frozenset[str], mail_from: str, raw: bytes) -> bool:
    """The envelope sender and every From: address must be one the token may send as."""
    if mail_from.lower() not in senders:
        return False
    headers = BytesHeaderParser().parsebytes(raw)
    from_values = headers.get_all("From") or []
    return all(addr.lower() in senders for _, addr in getaddresses([str(v) for v in from_values]))
