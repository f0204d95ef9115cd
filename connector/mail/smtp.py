"""SMTP submission with STARTTLS and AUTH XOAUTH2 (aiosmtplib), and what SMTP errors mean.

STARTTLS is required and the certificate verified before any AUTH; a server that does not offer
STARTTLS is refused, never used in plaintext. The XOAUTH2 response goes on the AUTH line (as Exchange
takes it); a server that refuses the long line ("line too long") gets it after a 334 prompt instead.

Once a message's DATA has begun, a failure without an answer from the server (the connection broke, or
no answer came in time) is `maybe_sent`: the server may have taken the message and filed it in Sent
Items, so the outbox must not send it again blindly; the sent-folder lookup decides (outbox/recovery.py).
"""
from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib import SMTPException, SMTPResponseException

from .imap import tls_context, xoauth2_string


@dataclass(frozen=True)
class SendFailure(Exception):
    """`permanent` failures are not retried; `message` is a sentence for the agent."""
    message: str
    permanent: bool
    code: int | None = None
    reply: str = ""
    auth: bool = False  # the token or mailbox is the problem
    maybe_sent: bool = False  # the message was handed over and no answer came: it may have gone

    def __str__(self) -> str:
        return self.message


def explain_smtp(code: int | None, text: str, address: str = "") -> SendFailure:
    """A sentence with the fix for the SMTP answers Exchange Online gives."""
    reply = f"{code} {text}".strip() if code else text
    lowered = text.lower()
    if code == 535 and "5.7.139" in text:
        return SendFailure(f"SMTP AUTH is disabled for {address or 'this mailbox'} or the tenant (535 5.7.139): an "
                           "Exchange admin can enable it in the Microsoft 365 admin center (Users > the user > Mail > "
                           "Manage email apps > Authenticated SMTP) or with Set-CASMailbox -SmtpClientAuthenticationDisabled "
                           "$false, and the tenant setting under Settings > Org settings > Mail.", True, code, reply, True)
    if "sendasdenied" in lowered.replace(" ", "") or (code == 554 and "5.2.0" in text):
        return SendFailure(f"The signed-in user may not send as {address or 'this mailbox'} (554 5.2.0 SendAsDenied): "
                           "grant them \"Send As\" on the mailbox in the Exchange admin center, then Retry.",
                           True, code, reply, False)
    if code == 535 or (code == 530 and "5.7" in text):
        return SendFailure("The SMTP server refused the mailbox's sign-in (535): reconnect the mailbox on the "
                           "Mailboxes page, then Retry.", True, code, reply, True)
    if code in (552, 523) or "5.3.4" in text:
        return SendFailure("The message is too large for the mail server (552): send smaller attachments or a link.",
                           True, code, reply)
    if code == 550 or code == 553 or code == 501:
        return SendFailure(f"The mail server refused a recipient or the sender ({reply}): check the addresses.",
                           True, code, reply)
    if code is not None and 400 <= code < 500:
        return SendFailure(f"The mail server is busy or throttling ({reply}); retrying later.", False, code, reply)
    if code is not None and code >= 500:
        return SendFailure(f"The mail server refused the message ({reply}).", True, code, reply)
    return SendFailure(f"Sending failed ({reply or 'no answer'}); retrying later.", False, code, reply)


class _Client(aiosmtplib.SMTP):
    """aiosmtplib's client, remembering whether the current message's DATA began: from then on the server
    may take the message without the client ever hearing its 250."""

    data_started = False

    async def data(self, message, /, **kwargs):  # type: ignore[override]
        self.data_started = True
        return await super().data(message, **kwargs)


class SmtpSubmitter:
    """One authenticated SMTP connection, reused for a burst of messages from one mailbox."""

    def __init__(self, host: str, port: int, ca_bundle: str | None, timeout: float = 60) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.context: ssl.SSLContext = tls_context(ca_bundle)
        self.loop = asyncio.new_event_loop()
        self.client: aiosmtplib.SMTP | None = None
        self.address = ""

    @property
    def connected(self) -> bool:
        return self.client is not None

    def _run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, self.timeout))

    def connect(self, address: str, token: str) -> None:
        self.address = address
        try:
            self._run(self._connect(address, token))
        except SendFailure:
            self.close()
            raise
        except SMTPResponseException as exc:
            self.close()
            raise explain_smtp(exc.code, exc.message, address) from None
        except ssl.SSLError as exc:
            self.close()
            raise SendFailure(f"TLS with {self.host}:{self.port} failed ({exc.reason or exc}): check smtp_host and "
                              "[tls] ca_bundle.", False) from None
        except (SMTPException, OSError, asyncio.TimeoutError) as exc:
            self.close()
            raise SendFailure(f"Cannot reach the SMTP server {self.host}:{self.port} ({type(exc).__name__}); "
                              "retrying later.", False) from None

    async def _connect(self, address: str, token: str) -> None:
        client = _Client(hostname=self.host, port=self.port, tls_context=self.context, start_tls=False,
                                 timeout=self.timeout)
        await client.connect()
        self.client = client
        await client.ehlo()
        if not client.supports_extension("starttls"):
            raise SendFailure(f"The SMTP server {self.host}:{self.port} does not offer STARTTLS, so the mailbox's "
                              "token would travel in plaintext: refusing to sign in. Check smtp_host/smtp_port.",
                              True)
        await client.starttls(tls_context=self.context)
        await client.ehlo()
        await self._auth(client, address, token)

    @staticmethod
    async def _auth(client: aiosmtplib.SMTP, address: str, token: str) -> None:
        encoded = base64.b64encode(xoauth2_string(address, token).encode()).decode()
        response = await client.execute_command(b"AUTH", b"XOAUTH2", encoded.encode())
        if response.code in (500, 501) and "long" in response.message.lower():
            response = await client.execute_command(b"AUTH", b"XOAUTH2")  # then answer the 334 prompt
            if response.code == 334:
                response = await client.execute_command(encoded.encode())
        if response.code == 334:  # an error challenge: an empty line gets the final answer
            response = await client.execute_command(b"")
        if response.code != 235:
            raise SMTPResponseException(response.code, response.message)

    def send(self, mail_from: str, rcpt_to: list[str], raw: bytes) -> str:
        """Submit one message; returns the server's answer. Raises SendFailure (`maybe_sent` when the
        connection broke or went silent after DATA began)."""
        client = self.client
        if client is None:
            raise SendFailure("Not connected.", False)
        client.data_started = False
        try:
            errors, reply = self._run(client.sendmail(mail_from, rcpt_to, raw))
        except SMTPResponseException as exc:  # the server answered: it did not take the message
            if exc.code == 421:  # the server is closing the connection
                self.close()
            raise explain_smtp(exc.code, exc.message, self.address) from None
        except (SMTPException, OSError, asyncio.TimeoutError) as exc:
            self.close()
            if client.data_started:
                raise SendFailure(f"The SMTP connection broke after the message was handed to the server, before "
                                  f"its answer ({type(exc).__name__}): the server may have taken it, so it is not "
                                  "sent again until the Sent Items folder has been checked for it.", False,
                                  maybe_sent=True) from None
            raise SendFailure(f"The SMTP connection broke while sending ({type(exc).__name__}); retrying later.",
                              False) from None
        if errors:
            refused = ", ".join(f"{rcpt} ({code} {msg})" for rcpt, (code, msg) in errors.items())
            raise SendFailure(f"The mail server refused some recipients: {refused}.", True)
        return reply

    def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            try:
                self.loop.run_until_complete(asyncio.wait_for(client.quit(), 5))
            except Exception:  # noqa: BLE001 - closing a broken connection
                client.close()

    def dispose(self) -> None:
        self.close()
        self.loop.close()
