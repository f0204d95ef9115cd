"""Replies and new outgoing mails as MIME, with threading headers; nothing can inject a header.

Two kinds of text reach headers. What an agent types (To, Cc, a new mail's subject) is refused with a
sentence when it holds a line break or another control character. What a stranger wrote (the
customer's subject that becomes our "Re:", a Message-ID, a display or file name) cannot be refused
without making the ticket unanswerable, so those characters become spaces. "Line break" means every
character Python's email package folds on, not only CR and LF: str.splitlines() also splits on
VT, FF, FS/GS/RS, NEL, U+2028 and U+2029.
"""
from __future__ import annotations

import mimetypes
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, make_msgid

from .filenames import display_filename
from .html import INLINE_TEXT_LIMIT, text_to_html

MAX_REFERENCES = 20


class ComposeError(ValueError):
    """Input that cannot become a mail; the message says which field and why."""


@dataclass(frozen=True)
class OutgoingFile:
    filename: str
    content_type: str
    data: bytes


def _is_break_or_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") and ch != "\t"


def _clean_line(value: str, field: str) -> str:
    """Typed by an agent: a line break or control character there is refused, never passed on."""
    if any(_is_break_or_control(ch) for ch in value):
        raise ComposeError(f"{field} must be a single line (line breaks and control characters are not "
                           "allowed there).")
    return value.strip()


def one_line(value: str | None) -> str:
    """Written by a stranger: line breaks and control characters become spaces."""
    return " ".join("".join(" " if _is_break_or_control(ch) else ch for ch in value or "").split())


def _message_id_or_none(value: str | None) -> str | None:
    """A stored Message-ID fit to go into In-Reply-To/References (one token, no line break), else None."""
    value = (value or "").strip()
    if not value or any(_is_break_or_control(ch) or ch.isspace() for ch in value):
        return None
    return value


def parse_addresses(values: list[str] | str, field: str) -> list[str]:
    """Plain addresses from user input ("a@x, B <b@y>"); refuses anything that is not one."""
    if isinstance(values, str):
        values = [values]
    found: list[str] = []
    for value in values:
        value = _clean_line(value or "", field)
        if not value:
            continue
        for name, addr in getaddresses([value]):
            addr = addr.strip().lower()
            if not addr or addr.count("@") != 1 or " " in addr or addr.startswith("@") or addr.endswith("@"):
                raise ComposeError(f"{field}: '{value}' is not an email address.")
            if addr not in found:
                found.append(addr)
    return found


def with_tag(subject: str, tag: str) -> str:
    subject = _clean_line(subject or "", "Subject")
    if tag in subject:
        return subject
    return f"{subject} {tag}".strip()


def reply_subject(original: str, tag: str) -> str:
    original = one_line(original)
    lowered = original.lower()
    if not (lowered.startswith("re:") or lowered.startswith("aw:") or lowered.startswith("sv:")):
        original = f"Re: {original}" if original else "Re:"
    return with_tag(original, tag)


def build_message(*, from_address: str, from_name: str, to: list[str], cc: list[str], subject: str, body_text: str,
                  in_reply_to: str | None = None, references: list[str] | None = None,
                  files: list[OutgoingFile] | None = None, date=None) -> EmailMessage:
    """A multipart/alternative (text + HTML) mail with attachments; returns it with its Message-ID set."""
    if not to:
        raise ComposeError("Add at least one recipient.")
    for address in [from_address, *to, *cc]:
        if any(_is_break_or_control(ch) or ch.isspace() or ch in ",;<>" for ch in address) \
                or address.count("@") != 1:
            raise ComposeError(f"'{one_line(address)}' is not an email address this mail can go to.")
    message = EmailMessage(policy=SMTP)
    domain = from_address.rsplit("@", 1)[-1]
    display = one_line(from_name)
    message["From"] = Address(display_name=display, addr_spec=from_address) if display else from_address
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = _clean_line(subject, "Subject")
    message["Date"] = format_datetime(date or datetime.now().astimezone())
    message["Message-ID"] = make_msgid(domain=domain)
    in_reply_to = _message_id_or_none(in_reply_to)
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    refs = [r for r in map(_message_id_or_none, references or []) if r][-MAX_REFERENCES:]
    if refs:
        message["References"] = " ".join(refs)
    message["MIME-Version"] = "1.0"
    message.set_content(body_text or "", subtype="plain", charset="utf-8", cte="quoted-printable")
    html = text_to_html(body_text or "", limit=None)  # all of it: the page's limit is for showing mail
    message.add_alternative(f"<!doctype html><html><body>{html}</body></html>",
                            subtype="html", charset="utf-8", cte="quoted-printable")
    for f in files or []:
        maintype, _, subtype = (f.content_type or mimetypes.guess_type(f.filename)[0]
                                or "application/octet-stream").partition("/")
        message.add_attachment(f.data, maintype=maintype, subtype=subtype or "octet-stream",
                               filename=display_filename(f.filename))
    return message


def quote(text: str, author: str, when: str, limit: int = INLINE_TEXT_LIMIT) -> str:
    """The last message, quoted for the reply editor; a longer one than `limit` characters only in part."""
    text = (text or "").strip()
    rest = len(text) - limit
    lines = text[:limit].splitlines()
    if rest > 0:
        lines.append(f"[... {rest:,} more characters not quoted]")
    return f"\n\nOn {when}, {author} wrote:\n" + "\n".join(f"> {line}" if line else ">" for line in lines)
