"""MIME in and out: what Graph's message properties are read from, and sendMail's JSON form as MIME.

Parsing is lenient on purpose (real-world mail has unknown charsets and broken headers): a
property that cannot be read is left empty rather than failing the delivery. The raw bytes are
never rewritten except where Exchange also adds something (Message-ID, Date) or drops it (Bcc on
the copies recipients get).
"""
from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage, Message as StdMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime, getaddresses, make_msgid, parsedate_to_datetime

PREVIEW_CHARS = 255
_SPACES = re.compile(r"\s+")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(r"\r?\n[ \t]")
_MESSAGE_ID = re.compile(rb"(?im)^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)")


@dataclass(frozen=True)
class Address:
    name: str
    address: str


@dataclass(frozen=True)
class Head:
    """What the header block says (read with the cheap compat32 header parser)."""

    subject: str
    from_: Address | None
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    internet_message_id: str | None
    sent: datetime | None
    importance: str
    read_receipt: bool
    references: tuple[str, ...]
    raw_headers: tuple[tuple[str, str], ...]  # decoded only when asked for


@dataclass(frozen=True)
class Body:
    html: str
    text: str
    has_attachments: bool


class ParsedMail:
    """Graph's view of a MIME message. The header block is read on first use of a header
    property and the body on first use of a body property: listing ids and Message-IDs of
    thousands of mails must not cost a full MIME parse each."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._head: Head | None = None
        self._body: Body | None = None

    @property
    def head(self) -> Head:
        if self._head is None:
            self._head = _read_head(self._raw)
        return self._head

    @property
    def body(self) -> Body:
        if self._body is None:
            self._body = _read_body(self._raw)
        return self._body

    subject = property(lambda self: self.head.subject)
    from_ = property(lambda self: self.head.from_)
    sender = property(lambda self: self.head.sender)
    to = property(lambda self: self.head.to)
    cc = property(lambda self: self.head.cc)
    bcc = property(lambda self: self.head.bcc)
    reply_to = property(lambda self: self.head.reply_to)

    @property
    def internet_message_id(self) -> str | None:
        """Read straight from the header block (cheap: delta with $select=internetMessageId)."""
        if self._head is not None:
            return self._head.internet_message_id
        return _message_id(self._raw)

    sent = property(lambda self: self.head.sent)
    importance = property(lambda self: self.head.importance)
    read_receipt = property(lambda self: self.head.read_receipt)
    references = property(lambda self: self.head.references)
    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, _decoded(value)) for name, value in self.head.raw_headers)
    body_html = property(lambda self: self.body.html)
    body_text = property(lambda self: self.body.text)
    has_attachments = property(lambda self: self.body.has_attachments)

    @property
    def preview(self) -> str:
        return _SPACES.sub(" ", self.body_text).strip()[:PREVIEW_CHARS]

    @property
    def conversation_id(self) -> str:
        """Stable per thread: Outlook groups by the thread's first Message-ID."""
        root = (self.references[0] if self.references else self.internet_message_id) or self.subject
        digest = hashlib.sha256(root.encode("utf-8", "replace")).digest()
        return "AAQkA" + base64.urlsafe_b64encode(b"\x00" + digest + digest[:10]).decode("ascii")

    def recipients(self) -> list[str]:
        return [a.address for a in (*self.to, *self.cc, *self.bcc) if a.address]


def _message_id(raw: bytes) -> str | None:
    """The first Message-ID line of the header block. A regular expression rather than the
    stdlib parser, which gives up on blocks that start with a stray line (real mail does)."""
    head, _ = _split(raw)
    match = _MESSAGE_ID.search(head)
    if match is None:
        return None
    return _decoded(match.group(1).decode("ascii", "surrogateescape")) or None


def _decoded(value: object) -> str:
    """An unfolded header value with RFC 2047 words decoded; raw 8-bit bytes read as UTF-8."""
    text = _FOLD.sub(" ", str(value or "")).encode("utf-8", "surrogateescape") \
        .decode("utf-8", "replace")
    if "=?" not in text:
        return text.strip()
    try:
        return str(make_header(decode_header(text))).strip()
    except (LookupError, UnicodeError, ValueError, HeaderParseError):
        return text.strip()


def _addresses(msg: StdMessage, name: str) -> tuple[Address, ...]:
    values = [_decoded(v) for v in msg.get_all(name) or []]
    return tuple(Address(n, a) for n, a in getaddresses(values) if a and "@" in a)


def _importance(msg: StdMessage) -> str:
    value = (_decoded(msg.get("Importance")) or _decoded(msg.get("X-Priority"))).lower()
    if value.startswith(("high", "1", "2")):
        return "high"
    if value.startswith(("low", "5", "4")):
        return "low"
    return "normal"


def _read_head(raw: bytes) -> Head:
    head, _ = _split(raw)  # the body is not needed here: don't scan megabytes of it
    msg = BytesHeaderParser(policy=compat32).parsebytes(head + b"\n\n")
    sent = None
    try:
        if msg.get("Date"):
            sent = parsedate_to_datetime(_decoded(msg.get("Date")))
            if sent.tzinfo is None:
                sent = sent.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError, IndexError):
        sent = None
    from_ = next(iter(_addresses(msg, "From")), None)
    refs = tuple(re.findall(r"<[^<>\s]+>", _decoded(msg.get("References")) + " "
                            + _decoded(msg.get("In-Reply-To"))))
    return Head(
        subject=_decoded(msg.get("Subject")), from_=from_,
        sender=next(iter(_addresses(msg, "Sender")), from_),
        to=_addresses(msg, "To"), cc=_addresses(msg, "Cc"), bcc=_addresses(msg, "Bcc"),
        reply_to=_addresses(msg, "Reply-To"),
        internet_message_id=_message_id(raw), sent=sent,
        importance=_importance(msg), read_receipt=bool(msg.get("Disposition-Notification-To")),
        references=refs, raw_headers=tuple(msg.items()))


def _text_of(part: StdMessage) -> str:
    try:
        return part.get_content()  # type: ignore[attr-defined]
    except (LookupError, UnicodeError, AttributeError, ValueError, AssertionError):
        payload = part.get_payload(decode=True) or b""
        charset = (part.get_content_charset() or "utf-8").replace("iso-gb2312", "gb2312")
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            return payload.decode("utf-8", "replace")


def _read_body(raw: bytes) -> Body:
    msg = message_from_bytes(raw, policy=policy.default)
    html_part = text_part = None
    attachments = False
    for part in msg.walk():
        if part.is_multipart():
            continue
        disposition = (part.get_content_disposition() or "").lower()
        ctype = part.get_content_type()
        if disposition == "attachment" or (disposition == "inline" and part.get_filename()):
            attachments = True
        elif ctype == "text/html" and html_part is None:
            html_part = part
        elif ctype == "text/plain" and text_part is None:
            text_part = part
    text = _text_of(text_part) if text_part is not None else ""
    markup = _text_of(html_part) if html_part is not None else ""
    if not text and markup:
        text = html.unescape(re.sub(r"<[^>]+>", " ", markup))
    if not markup:
        markup = f"<html><body><div>{html.escape(text)}</div></body></html>"
    return Body(markup, text, attachments)


def parse(raw: bytes) -> ParsedMail:
    return ParsedMail(raw)


def _split(raw: bytes) -> tuple[bytes, bytes]:
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, b""
    return raw[:match.start()], raw[match.start():]


def _newline(raw: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in raw[:2000] else b"\n"


def add_missing_headers(raw: bytes, domain: str, now: datetime) -> bytes:
    """Exchange stamps a Message-ID and a Date on submissions that lack them."""
    head, _ = _split(raw)
    nl = _newline(raw)
    extra = b""
    if not re.search(rb"(?im)^message-id\s*:", head):
        extra += b"Message-ID: " + make_msgid(domain=domain).encode("ascii") + nl
    if not re.search(rb"(?im)^date\s*:", head):
        extra += b"Date: " + format_datetime(now).encode("ascii") + nl
    return extra + raw


def without_bcc(raw: bytes) -> bytes:
    """The copy recipients receive: Bcc lines (with their folded continuations) removed."""
    head, rest = _split(raw)
    nl = _newline(raw)
    kept: list[bytes] = []
    skipping = False
    for line in head.split(nl):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            kept.append(line)
    return nl.join(kept) + rest


def _format(entries: list[dict] | None) -> list[str]:
    out = []
    for entry in entries or []:
        email = (entry or {}).get("emailAddress") or {}
        address = str(email.get("address") or "").strip()
        name = str(email.get("name") or "").strip()
        if address:
            out.append(f'"{name}" <{address}>' if name else address)
    return out


def from_json(message: dict, mailbox: str, display_name: str, domain: str,
              now: datetime) -> bytes:
    """sendMail's JSON `message` as the MIME Exchange would transmit."""
    msg = EmailMessage()
    sender = _format([message.get("from")]) if message.get("from") else []
    msg["From"] = sender[0] if sender else f'"{display_name}" <{mailbox}>'
    for header, key in (("To", "toRecipients"), ("Cc", "ccRecipients"),
                        ("Bcc", "bccRecipients"), ("Reply-To", "replyTo")):
        values = _format(message.get(key))
        if values:
            msg[header] = ", ".join(values)
    msg["Subject"] = str(message.get("subject") or "")
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=domain)
    for entry in message.get("internetMessageHeaders") or []:
        msg[str(entry.get("name"))] = str(entry.get("value") or "")
    body = message.get("body") or {}
    content = str(body.get("content") or "")
    if str(body.get("contentType") or "text").lower() == "html":
        msg.set_content(content, subtype="html")
    else:
        msg.set_content(content)
    for attachment in message.get("attachments") or []:
        data = base64.b64decode(str(attachment.get("contentBytes") or ""))
        maintype, _, subtype = str(attachment.get("contentType")
                                   or "application/octet-stream").partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream",
                           filename=str(attachment.get("name") or "attachment"))
    return msg.as_bytes(policy=policy.SMTP)
