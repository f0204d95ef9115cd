"""Raw RFC 5322 bytes -> what ingestion needs: headers to dedup/thread/route, body, attachments.

The stdlib ``email`` package parses (its feed parser with ``compat32``: see ``headers.py`` for why
not ``policy.default``, ``feed.py`` for the bounds hostile mail needs); this module decides what a
mail means for a ticket: which parts are the body, which are attachments and what they are called,
whether the mail was sent by a machine. Two levels because ingestion speed matters: ``parse_headers``
reads only the header block (what a poll needs to decide whether a mail is new and where it goes),
``parse_message`` parses the MIME tree once and decodes body and attachments. Neither raises on
any input: problems end up in ``ParsedMail.notes``. Every step takes time linear in the size of the
mail (tests/test_hostile_mail.py); the time budget of a parse is enforced by the caller (parse_pool.py).
"""
from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message

from .charsets import decode_text
from .display import Html, Image, Mail, Node, Text, assemble, choose_alternative, html_nodes, text_only
from .enriched import ENRICHED_TYPES, enriched_to_text
from .feed import MAX_NESTING
from .headers import (
    CHARSET_HINT_LIMIT,
    Fields,
    Hints,
    decode_words,
    fold_ws,
    header_end,
    header_text,
    lazy_hints,
    param,
    parse_address_list,
    parse_date,
    parse_msgids,
    read_headers,
    read_message,
)
from .mime import (
    as_sent,
    attached_bytes,
    decode_payload,
    extract_uu_blocks,
    transfer_encoding,
    uudecode,
)

__all__ = ["Address", "MailHeaders", "Part", "ParsedMail", "header_slice", "parse_headers", "parse_message",
           "parse_tree", "DEFAULT_MAX_SIZE"]

DEFAULT_MAX_SIZE = 36 * 1024 * 1024  # Exchange Online's default receive limit


@dataclass(frozen=True)
class Address:
    address: str  # lowercased
    name: str     # decoded display name, "" if none


@dataclass(frozen=True)
class MailHeaders:
    """Enough to dedup, thread and route a mail; cheap to compute."""

    message_id: str | None        # "<...>" form, None if absent or garbage
    in_reply_to: list[str]
    references: list[str]
    subject: str                  # encoded words decoded, whitespace folded, "" if none
    from_: Address | None         # From; if unusable, Sender, then Reply-To
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    date: datetime | None         # aware UTC, None if missing or unparseable
    auto_submitted: bool          # never trigger anything automatic (auto-replies, lists, bounces)
    is_bounce: bool               # delivery status notification or mailer-daemon
    x_loop: str | None
    size: int


@dataclass(frozen=True)
class Part:
    filename: str
    content_type: str             # lowercased "type/subtype", no parameters
    data: bytes                   # transfer encoding undone, otherwise as sent
    content_id: str | None        # without angle brackets
    inline: bool


@dataclass(frozen=True)
class ParsedMail:
    headers: MailHeaders | None   # None when parsed for the body only (`headers=False`: extraction, see extract.py)
    body_text: str                # text/plain, else text derived from the HTML; \n line breaks
    body_html: str | None         # HTML as sent (unsanitised, line breaks as \n), None if none
    attachments: list[Part]
    notes: list[str] = field(default_factory=list)
    display: str | None = None    # what a mail client shows, in order: JSON, see display.py


# --- Headers -----------------------------------------------------------------------------------

def parse_headers(raw: bytes, *, size: int | None = None) -> MailHeaders:
    """Headers only: the fast path for polling and big imports. Never raises; garbage yields empty fields.

    ``raw`` may be ``header_slice(mail)`` with ``size=len(mail)``: the same result from fewer bytes,
    which is what a parser process is handed.
    """
    raw = _as_bytes(raw)
    size = len(raw) if size is None else size
    try:
        msg = read_headers(raw)
        return _mail_headers(msg, Fields(msg, lazy_hints(raw)), size)
    except Exception:  # noqa: BLE001 - contract: never raise on input
        return _empty_headers(size)


def header_slice(raw: bytes) -> bytes:
    """The bytes ``parse_headers`` reads: the header block, or the first 64 KB when the block has
    8-bit bytes (their charset is guessed from declarations further down, see ``charset_hints``)."""
    raw = _as_bytes(raw)
    block = raw[:header_end(raw)]
    return block if block.isascii() else raw[:max(len(block), CHARSET_HINT_LIMIT)]


def _empty_headers(size: int) -> MailHeaders:
    return MailHeaders(None, [], [], "", None, [], [], [], None, False, False, None, size)


def _addresses(headers: Fields, name: str) -> list[Address]:
    text = _joined(headers, name, ", ")
    return [Address(addr, nm) for addr, nm in parse_address_list(text)] if text else []


def _sender(h: Fields) -> Address | None:
    """From; without a usable one, Sender, then Reply-To (where a reply would go anyway).

    Within a field, the first entry that looks like an address (has an @) wins over garbage such
    as ``From: [??????]`` placed before the real From by a spam relay.
    """
    for name in ("from", "sender", "reply-to"):
        found = _addresses(h, name)
        for addr in found:
            if "@" in addr.address:
                return addr
        if found:
            return found[0]
    return None


def _joined(headers: Fields, name: str, sep: str = " ") -> str:
    """All occurrences of a field as one text (some senders repeat To or References)."""
    return sep.join(headers.texts(name))


def _mail_headers(msg: Message, h: Fields, size: int) -> MailHeaders:
    message_ids = parse_msgids(h.text("message-id"))
    from_ = _sender(h)
    report_type = (param(msg, "report-type").lower()
                   if msg.get_content_type() == "multipart/report" else None)
    is_bounce = _is_bounce(h, from_, report_type)
    x_loop = h.decoded("x-loop")
    return MailHeaders(
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=parse_msgids(h.text("in-reply-to")),
        references=parse_msgids(_joined(h, "references")),
        subject=h.decoded("subject") or "",
        from_=from_,
        reply_to=_addresses(h, "reply-to"),
        to=_addresses(h, "to"),
        cc=_addresses(h, "cc"),
        date=parse_date(h.text("date")),
        auto_submitted=is_bounce or report_type is not None or _is_automatic(h),
        is_bounce=is_bounce,
        x_loop=x_loop or None,
        size=size,
    )


_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply", "auto-reply"})
_FALSY = frozenset({"", "no", "false", "0", "none"})
# Header present (with a value other than no/false) -> sent by a machine.
_AUTOMATIC_FLAGS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-autogenerated",
                    "x-auto-response-suppress", "x-cron-env")


def _is_automatic(h: Fields) -> bool:
    """Loop protection (RFC 3834 and the de-facto headers of Exchange, Postfix, list servers)."""
    auto = h.text("auto-submitted")
    if auto is not None and auto.split(";", 1)[0].strip().lower() not in ("no", ""):
        return True
    for name in ("precedence", "x-precedence"):
        value = h.text(name)
        if value is not None and value.strip().lower() in _BULK_PRECEDENCE:
            return True
    if "list-id" in h or "x-loop" in h:
        return True
    for name in _AUTOMATIC_FLAGS:
        value = h.text(name)
        if value is not None and value.strip().lower() not in _FALSY:
            return True
    return False


def _is_bounce(h: Fields, from_: Address | None, report_type: str | None) -> bool:
    """DSNs, mailer-daemon/postmaster senders, null envelope senders. (Read receipts and other
    multipart/report mails are not bounces but still count as automatic.)"""
    if report_type in ("delivery-status", "global-delivery-status"):
        return True
    if from_ is not None and from_.address.split("@", 1)[0] in ("mailer-daemon", "postmaster"):
        return True
    return_path = h.text("return-path")
    if return_path is not None and return_path.replace(" ", "") in ("<>", ""):
        return True
    return "x-failed-recipients" in h


# --- Full parse --------------------------------------------------------------------------------

MAX_DEPTH = MAX_NESTING  # multipart nesting this deep is kept as one opaque attachment (the parser stops)
MAX_PARTS = 5000      # parts beyond this many in one message are dropped (with a note)


def parse_message(raw: bytes, *, max_size: int = DEFAULT_MAX_SIZE, headers: bool = True) -> ParsedMail:
    """Headers, body and attachments, from one parse of the bytes. Never raises.

    Mails over ``max_size`` get headers and a note only, so one huge mail cannot exhaust memory.
    ``headers=False``: the body only (``ParsedMail.headers`` is None), for a mail whose headers were read at
    import: they are a tenth of the parse.
    """
    raw = _as_bytes(raw)
    notes: list[str] = []
    if len(raw) > max_size:
        notes.append(f"message exceeds the {_megabytes(max_size)} limit: "
                     "body and attachments not imported")
        return ParsedMail(parse_headers(raw) if headers else None, "", None, [], notes, assemble([], [], 0).display)
    try:
        return parse_tree(raw, read_message(raw), notes, headers)
    except Exception as exc:  # noqa: BLE001 - e.g. RecursionError on absurd nesting
        notes.append(f"MIME structure could not be parsed ({type(exc).__name__}): "
                     "raw body kept as text")
        shown = text_only(_newlines(decode_text(raw[header_end(raw):], None)))
        return ParsedMail(parse_headers(raw) if headers else None, shown.body_text, None, [], notes, shown.display)


def parse_tree(raw: bytes, root: Message, notes: list[str] | None = None, headers: bool = True) -> ParsedMail:
    """What `parse_message` makes of `raw` once its MIME tree `root` is read (by the stdlib's feed parser, or
    by the fast path of fastpath.py, which builds the same tree for simply built mails). May raise."""
    notes = [] if notes is None else notes
    hints = lazy_hints(raw)
    mail_headers = _mail_headers(root, Fields(root, hints), len(raw)) if headers else None
    eol = raw.find(b"\n")
    walker = _Walker(notes, hints, "\r\n" if eol > 0 and raw[eol - 1] == 0x0D else "\n")
    shown = assemble(walker.walk(root), walker.files, len(walker.attachments))
    return ParsedMail(mail_headers, shown.body_text, shown.body_html, walker.attachments, notes, shown.display)


def _as_bytes(raw: object) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, (bytearray, memoryview)):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _megabytes(size: int) -> str:
    mb = size / (1024 * 1024)
    return f"{mb:.0f} MB" if mb >= 1 else f"{size} bytes"


_HTML_CHARSET_RE = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""",
                              re.I)
_CTYPE_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`{|}~-]+/[A-Za-z0-9!#$%&'*+.^_`{|}~-]+$")
# Images the page shows in place (and the attachment route serves inline); others are offered as files.
SHOWN_TEXT = frozenset({"text/plain", "text/html"}) | ENRICHED_TYPES  # shown inline, in order
SHOWN_IMAGES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/gif", "image/webp"})
MAX_FORWARDED = 10  # forwarded mails inside forwarded mails shown this deep; deeper ones stay attachments
_MAILS = ("message/rfc822", "message/global")


def _content_type(part: Message) -> tuple[str, bool]:
    """(type, broken). A missing type is the stdlib's default (text/plain, message/rfc822 in a
    digest); an unparseable one, which the stdlib reads as text/plain, becomes
    application/octet-stream with ``broken`` set: the caller decides between text and an opaque
    attachment by looking at the content."""
    value = part.get("content-type")
    if value is None or not value.strip(" \t;"):
        return part.get_default_type(), False
    ctype = part.get_content_type()
    if _CTYPE_RE.match(ctype) and (ctype != "text/plain"
                                   or value.split(";", 1)[0].strip().lower() == ctype):
        return ctype, False
    return "application/octet-stream", True


class _Walker:
    """Walks the parsed tree once, in document order: the display nodes (display.py) and the attachments.

    `files` is the attachment list of the mail being walked (the top one, or a forwarded one): the
    attachments offered for download there, by their index in `attachments`.
    """

    def __init__(self, notes: list[str], hints: Hints, linesep: str) -> None:
        self.notes = notes
        self.hints = hints
        self.linesep = linesep
        self.attachments: list[Part] = []
        self.files: list[int] = []
        self.count = 0
        self.forwarded = 0  # forwarded mails around the part being walked

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def walk(self, part: Message, depth: int = 0, attach: bool = False) -> list[Node]:
        """Display nodes of ``part``; with ``attach``, a part that is not a multipart is an
        attachment whatever its type."""
        self.count += 1
        ctype, broken = _content_type(part)
        tree = ctype.startswith("multipart/") and part.is_multipart()
        if tree and depth < MAX_DEPTH:
            return self._multipart(part, ctype, depth)
        try:
            too_deep = ctype.startswith("multipart/") and depth >= MAX_DEPTH  # the parser kept it whole
            if too_deep:
                self.note("MIME nesting too deep: innermost parts kept as one attachment")
            if ctype in _MAILS and part.is_multipart() and not attach and not too_deep:
                return self._mail(part, ctype, depth)
            if too_deep or tree or attach or part.is_multipart():  # is_multipart: message/*, parsed
                self._attach(part, ctype, broken)
                return []
            return self._leaf(part, ctype, broken)
        except Exception as exc:  # noqa: BLE001 - one bad part must not cost the others
            self.note(f"a {ctype} part could not be read ({type(exc).__name__}): skipped")
            return []

    def _multipart(self, part: Message, ctype: str, depth: int) -> list[Node]:
        children: list[Message] = []
        for child in part.get_payload():
            if self.count + len(children) >= MAX_PARTS:
                self.note("more MIME parts than the parser accepts: the rest was dropped")
                break
            children.append(child)
        if ctype == "multipart/alternative":
            return self._alternative(children, depth)
        if ctype == "multipart/related":
            return self._related(part, children, depth)
        nodes: list[Node] = []
        for child in children:
            nodes += self.walk(child, depth + 1)
        return nodes

    def _alternative(self, children: list[Message], depth: int) -> list[Node]:
        """The attachments of every option are kept (an option not shown may hold the only copy)."""
        return choose_alternative([self.walk(child, depth + 1) for child in children])

    def _related(self, part: Message, children: list[Message], depth: int) -> list[Node]:
        if not children:
            return []
        root = _related_root(part, children)
        nodes = self.walk(children[root], depth + 1)
        markup = "\n".join(h.html for h in html_nodes(nodes)).lower()
        for i, child in enumerate(children):
            if i == root:
                continue
            cid = _content_id(child)
            if cid is not None and not child.is_multipart() and f"cid:{cid.lower()}" in markup:
                self.count += 1  # shown by the HTML: an attachment, not listed again
                ctype, broken = _content_type(child)
                self._attach(child, ctype, broken, listed=False)
            else:
                nodes += self.walk(child, depth + 1, attach=True)
        return nodes

    def _mail(self, part: Message, ctype: str, depth: int) -> list[Node]:
        """A forwarded mail: its .eml is an attachment, and it is shown as a quoted mail with its own parts."""
        index = self._attach(part, ctype, listed=False)
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload and isinstance(payload[0], Message) else None
        if inner is not None and transfer_encoding(part) in ("base64", "quoted-printable"):
            inner = read_message(self.attachments[index].data)  # encoded although RFC 2046 forbids it
        if inner is None or self.forwarded >= MAX_FORWARDED:
            if inner is not None:
                self.note(f"forwarded mails nested more than {MAX_FORWARDED} deep are kept as attachments")
            self.files.append(index)
            return []
        headers = _forwarded_headers(inner, self.hints)
        outer_files, self.files = self.files, []
        self.forwarded += 1
        try:
            nodes = self.walk(inner, depth + 1)
        finally:
            self.forwarded -= 1
            files, self.files = self.files, outer_files
        return [Mail(index, headers, nodes, files)]

    def _leaf(self, part: Message, ctype: str, broken: bool) -> list[Node]:
        disposition = part.get_content_disposition() or ""
        named = bool(self._raw_filename(part))
        if ctype.startswith("multipart/"):  # the stdlib found no boundary to split at
            if as_sent(part).strip():
                self.note(f"{ctype} without its boundary in the body: content taken as text")
            ctype = "text/plain"
        elif broken and disposition != "attachment" and not named:
            # RFC 2045 reads an invalid Content-Type as text/plain; do so unless it is binary.
            if b"\x00" in decode_payload(part, [])[:4096]:
                self._attach(part, ctype, broken)
                return []
            raw_type = fold_ws(header_text(part.get("content-type", ""), self.hints))[:80]
            self.note(f"unparseable Content-Type {raw_type!r} read as text/plain")
            ctype = "text/plain"
        if ctype in SHOWN_IMAGES and disposition in ("", "inline"):
            return [Image(self._attach(part, ctype, broken))]  # RFC 2183: shown in place, and a file
        if ctype not in SHOWN_TEXT or disposition == "attachment" or (named and disposition != "inline"):
            self._attach(part, ctype, broken)
            return []
        file = self._attach(part, ctype, broken) if named else None  # inline with a name: shown and a file
        data = decode_payload(part, self.notes)
        if ctype == "text/plain":
            data, files = extract_uu_blocks(data)
            for name, payload in files:
                self._add_file(name, payload)
        return [_text_node(part, ctype, data, file, self.notes)]

    def _raw_filename(self, part: Message) -> str:
        return (param(part, "filename", "content-disposition", self.hints)
                or param(part, "name", "content-type", self.hints))

    def _attach(self, part: Message, ctype: str, broken: bool = False, listed: bool = True) -> int:
        """Keep the part as an attachment; its index. `listed`: offered for download in this mail's list."""
        disposition = part.get_content_disposition() or ""
        if part.is_multipart():  # an attached message or a multipart nested too deep
            data = attached_bytes(part, self.linesep)
        else:
            data = decode_payload(part, self.notes)
        content_id = _content_id(part)
        inline = disposition == "inline" or (disposition == "" and content_id is not None)
        filename = _attachment_name(part, self._raw_filename(part), ctype, inline, data, self.notes)
        if broken:
            raw_type = header_text(part.get("content-type", ""), self.hints)
            self.note(f"part with unparseable Content-Type {fold_ws(raw_type)[:80]!r} "
                      f"kept as attachment {filename!r}")
        self.attachments.append(Part(filename, ctype, data, content_id, inline))
        index = len(self.attachments) - 1
        if listed:
            self.files.append(index)
        return index

    def _add_file(self, name: str, data: bytes) -> None:
        filename = _clean_filename(name, self.notes) or "attachment.bin"
        ctype = mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"
        self.attachments.append(Part(filename, ctype, data, None, False))
        self.files.append(len(self.attachments) - 1)


def _forwarded_headers(inner: Message, hints: Hints) -> dict[str, str]:
    """What a forwarded mail shows above its text: From, To, Cc, Date and Subject."""
    h = Fields(inner, hints)
    sender = _sender(h)
    return {"from": _shown_address(sender) if sender else "",
            "to": ", ".join(_shown_address(a) for a in _addresses(h, "to")),
            "cc": ", ".join(_shown_address(a) for a in _addresses(h, "cc")),
            "date": fold_ws(h.text("date") or ""), "subject": h.decoded("subject") or ""}


def _related_root(part: Message, children: list[Message]) -> int:
    """multipart/related (RFC 2387): the part its `start` names, else the first."""
    start = param(part, "start").strip().strip("<>")
    if start:
        for i, child in enumerate(children):
            if _content_id(child) == start:
                return i
    return 0


def _text_node(part: Message, ctype: str, data: bytes, file: int | None, notes: list[str]) -> Node:
    """A text part as it shows: plain text (format=flowed joined; text/enriched read as RFC 1896 says), or
    HTML, decoded from its charset (for HTML without one, the charset its <meta> names)."""
    charset = param(part, "charset") or None
    if ctype == "text/html":
        if not charset:
            m = _HTML_CHARSET_RE.search(data, 0, 4096)
            charset = m.group(1).decode("ascii") if m else None
        return Html(_newlines(decode_text(data, charset, notes)), file)
    text = _newlines(decode_text(data, charset, notes))
    if ctype in ENRICHED_TYPES:
        text = enriched_to_text(text, ctype)
    elif param(part, "format").lower() == "flowed":
        text = unflow(text, param(part, "delsp").lower() == "yes")
    return Text(text, file)


def _attachment_name(part: Message, raw_name: str, ctype: str, inline: bool, data: bytes, notes: list[str]) -> str:
    """The part's own file name, cleaned; else a uuencoded part's, a forwarded mail's subject, or a default."""
    filename = _clean_filename(raw_name, notes)
    if not filename and transfer_encoding(part) == "x-uuencode":
        filename = _clean_filename(uudecode(as_sent(part))[0] or "", notes)
    if filename:
        return filename
    return _eml_name(data, notes) if ctype in _MAILS else default_filename(ctype, inline)


def _shown_address(address: Address) -> str:
    return f"{address.name} <{address.address}>" if address.name else address.address


def _content_id(part: Message) -> str | None:
    value = "".join((part.get("content-id") or "").split()).strip("<>")
    return value or None


_PATH_SEP_RE = re.compile(r"[\\/]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _clean_filename(name: str, notes: list[str] | None = None) -> str:
    """Decode encoded words, drop directories and control characters, cap the length."""
    if not name:
        return ""
    name = decode_words(name, notes)
    name = _PATH_SEP_RE.split(name)[-1]
    name = fold_ws(_CONTROL_RE.sub("", name))
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:190] + dot + ext[:9]) if dot and len(ext) <= 9 else name[:200]
    return name


def _eml_name(data: bytes, notes: list[str]) -> str:
    """Attached mails are named after their subject, as mail clients do."""
    try:
        msg = read_headers(data)
        subject = Fields(msg, lazy_hints(data)).decoded("subject") or ""
    except Exception:  # noqa: BLE001
        subject = ""
    subject = _clean_filename(subject.replace("/", "-").replace("\\", "-"), notes)[:150]
    return f"{subject}.eml" if subject else "forwarded-message.eml"


_SPECIAL_NAMES = {
    "message/delivery-status": "delivery-status.txt",
    "message/global-delivery-status": "delivery-status.txt",
    "message/disposition-notification": "disposition-notification.txt",
    "text/rfc822-headers": "message-headers.txt",
    "message/rfc822-headers": "message-headers.txt",
    "application/ms-tnef": "winmail.dat",
    "application/vnd.ms-tnef": "winmail.dat",
    "text/calendar": "invite.ics",
    "application/pgp-signature": "signature.asc",
    "application/pgp-encrypted": "pgp-encrypted.asc",
    "application/pkcs7-signature": "smime.p7s",
    "application/x-pkcs7-signature": "smime.p7s",
    "application/pkcs7-mime": "smime.p7m",
    "application/x-pkcs7-mime": "smime.p7m",
}
_EXTENSIONS = {
    "application/octet-stream": ".bin", "text/plain": ".txt", "text/html": ".html",
    "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/pjpeg": ".jpg", "image/png": ".png",
    "image/gif": ".gif", "image/bmp": ".bmp", "image/webp": ".webp", "image/tiff": ".tif",
    "image/svg+xml": ".svg", "application/pdf": ".pdf", "application/zip": ".zip",
    "message/rfc822": ".eml", "text/csv": ".csv", "text/enriched": ".txt", "text/richtext": ".txt", "application/msword": ".doc",
    "application/vnd.ms-excel": ".xls", "video/quicktime": ".mov", "audio/mpeg": ".mp3",
}


def default_filename(ctype: str, inline: bool) -> str:
    """A name for a part that has none: ``attachment.pdf``, ``inline-image.png``, ..."""
    if ctype in _SPECIAL_NAMES:
        return _SPECIAL_NAMES[ctype]
    ext = _EXTENSIONS.get(ctype) or mimetypes.guess_extension(ctype, strict=False) or ".bin"
    stem = "inline-image" if inline and ctype.startswith("image/") else "attachment"
    return stem + ext


def _newlines(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


_QUOTE_RE = re.compile(r"^(>+)")


def unflow(text: str, delsp: bool = False) -> str:
    """Undo RFC 3676 format=flowed soft line breaks (lines ending in a space continue)."""
    out: list[str] = []
    para: list[str] = []
    para_depth = -1
    for line in text.split("\n"):
        m = _QUOTE_RE.match(line)
        depth = len(m.group(1)) if m else 0
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        if para and depth != para_depth:
            out.append(">" * para_depth + (" " if para_depth else "") + "".join(para))
            para = []
        soft = content.endswith(" ") and content != "-- "
        if soft and delsp:
            content = content[:-1]
        para.append(content)
        para_depth = depth
        if not soft:
            out.append(">" * depth + (" " if depth and content else "") + "".join(para))
            para = []
    if para:
        out.append(">" * para_depth + (" " if para_depth else "") + "".join(para))
    return "\n".join(out)
