"""Mails built to stall a parser or a renderer: the inputs the hostile-mail tests and measurements use.

Each targets one place that used to be quadratic (or worse): a long line without an "@" for the
linkifier's e-mail branch, a long run of spaces for the HTML-to-text whitespace patterns, a long
Message-ID token without brackets, and deep MIME nesting for the stdlib's feed parser.
"""
from __future__ import annotations

from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone

MB = 1024 * 1024


def _head(to: str, subject: str, extra: str = "", message_id: str | None = None) -> bytes:
    return (f"From: Mallory <mallory@example.net>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: {format_datetime(datetime.now(timezone.utc))}\r\n"
            f"Message-ID: {message_id or make_msgid(domain='example.net')}\r\n{extra}"
            "MIME-Version: 1.0\r\n").encode()


def long_line_text(to: str, size: int = 2 * MB) -> bytes:
    """A text/plain mail whose body is one line of `size` characters with no "@" and no space."""
    return (_head(to, "One very long line", "Content-Type: text/plain; charset=us-ascii\r\n")
            + b"\r\n" + b"a" * size + b"\r\n")


def whitespace_html(to: str, size: int = MB) -> bytes:
    """An HTML-only mail that is `size` bytes of spaces and tabs between two words."""
    spaces = (b" " * 63 + b"\t") * (size // 64)
    return (_head(to, "Mostly whitespace", "Content-Type: text/html; charset=utf-8\r\n")
            + b"\r\n<html><body><p>before" + spaces + b"after</p></body></html>\r\n")


def references_without_brackets(to: str, size: int = 64 * 1024) -> bytes:
    """A mail whose References header is one `size`-character token without angle brackets or "@"."""
    return (_head(to, "Long references", f"References: {'r' * size}\r\nIn-Reply-To: {'i' * 4096}\r\n"
                  "Content-Type: text/plain; charset=us-ascii\r\n")
            + b"\r\nThe headers are the problem here.\r\n")


def nested_parts(to: str, depth: int = 10_000) -> bytes:
    """`depth` multipart/mixed parts, each inside the one before, around one line of text."""
    out = [_head(to, f"{depth} nested parts")]
    for level in range(depth):
        out.append(b"Content-Type: multipart/mixed; boundary=\"n%d\"\r\n\r\n--n%d\r\n" % (level, level))
    out.append(b"Content-Type: text/plain; charset=us-ascii\r\n\r\nThe innermost part.\r\n")
    for level in reversed(range(depth)):
        out.append(b"--n%d--\r\n" % level)
    return b"".join(out)


def all_hostile(to: str) -> dict[str, bytes]:
    """The four hostile mails of the tests, by name."""
    return {"long_line_text": long_line_text(to), "whitespace_html": whitespace_html(to),
            "references_without_brackets": references_without_brackets(to), "nested_parts": nested_parts(to)}
