"""MIME structure on raw bytes: split entities and undo transfer encodings, leniently.

The stdlib feedparser walks every body line in Python; finding boundary lines with ``bytes.find``
and slicing is several times faster, and it keeps each part's bytes exactly as sent (needed for
``message/rfc822`` attachments, which must come out as the original ``.eml``).
"""
from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field

from .charsets import decode_header_bytes
from .headers import Hints, Headers, parse_fields, parse_params, split_header_block

MAX_DEPTH = 40        # nesting deeper than this is treated as an opaque attachment
MAX_PARTS = 5000      # parts beyond this many in one message are dropped (with a note)

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+"
_CTYPE_RE = re.compile(rf"^{_TOKEN}/{_TOKEN}$")


@dataclass(eq=False)
class Entity:
    """One MIME entity: its headers, parsed Content-Type and raw (still encoded) body."""

    headers: Headers
    body: bytes
    ctype: str
    params: dict[str, str]
    children: list[Entity] = field(default_factory=list)
    broken: bool = False          # Content-Type present but unparseable
    unsplit: bool = False         # multipart whose boundary never occurs in the body
    too_deep: bool = False        # multipart nested beyond MAX_DEPTH, left unsplit
    truncated: bool = False       # children dropped because the message exceeded MAX_PARTS

    @property
    def maintype(self) -> str:
        return self.ctype.split("/", 1)[0]

    @property
    def cte(self) -> str:
        value = self.headers.raw("content-transfer-encoding")
        if not value:
            return ""
        return re.sub(r"[^a-z0-9]", "", value.decode("ascii", "replace").lower())

    @property
    def disposition(self) -> tuple[str, dict[str, str]]:
        text = self.headers.text("content-disposition")
        return parse_params(text) if text else ("", {})


def parse_entity(raw: bytes, hints: Hints = (), *, default: str = "text/plain",
                 depth: int = 0, counter: list[int] | None = None,
                 headers: Headers | None = None, body_offset: int | None = None) -> Entity:
    """Parse ``raw`` into an Entity tree. ``headers``/``body_offset`` skip re-reading a header
    block the caller already parsed (the top-level message)."""
    if headers is None or body_offset is None:
        block, body_offset = split_header_block(raw)
        headers = Headers(parse_fields(block), hints)
    body = raw[body_offset:]
    counter = counter if counter is not None else [0]
    counter[0] += 1
    ctype, params, broken = content_type(headers, default)
    entity = Entity(headers, body, ctype, params, broken=broken)
    if ctype.startswith("multipart/") and depth >= MAX_DEPTH:
        entity.too_deep = True
    elif ctype.startswith("multipart/"):
        boundary = params.get("boundary", "").strip()
        parts = split_multipart(body, boundary) if boundary else None
        if parts is None:
            entity.unsplit = True
        else:
            child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            for part in parts:
                if counter[0] >= MAX_PARTS:
                    entity.truncated = True
                    break
                entity.children.append(
                    parse_entity(part, hints, default=child_default, depth=depth + 1,
                                 counter=counter))
    return entity


def content_type(headers: Headers, default: str) -> tuple[str, dict[str, str], bool]:
    """(type, params, broken). A missing type gets ``default``; an unparseable one becomes
    ``application/octet-stream`` with ``broken`` set (the caller decides between text and an
    opaque attachment by looking at the content)."""
    text = headers.text("content-type")
    if text is None or not text.strip(" \t;"):
        return default, {}, False
    main, params = parse_params(text)
    if _CTYPE_RE.match(main):
        return main, params, False
    return "application/octet-stream", params, True


def split_multipart(body: bytes, boundary: str) -> list[bytes] | None:
    """Body parts between ``--boundary`` lines; ``None`` if the boundary never occurs.

    A missing close delimiter ends the last part at the end of the body; the line break before
    each delimiter belongs to the delimiter (RFC 2046 section 5.1.1). Delimiters are found with
    ``bytes.find`` and checked by hand, which is much faster than a multiline regex over MBs.
    """
    needle = b"--" + boundary.encode("utf-8", "surrogateescape")
    delimiters: list[tuple[int, int, bool]] = []  # (line start, next line start, is close)
    pos = 0
    size = len(body)
    while True:
        i = body.find(needle, pos)
        if i < 0:
            break
        pos = i + 1
        if i and body[i - 1] != 0x0A:
            continue
        j = i + len(needle)
        close = body.startswith(b"--", j)
        eol = body.find(b"\n", j)
        line_end = size if eol < 0 else eol
        if body[j + 2 if close else j:line_end].strip(b" \t\r"):
            continue  # a longer boundary that starts with ours, or text
        delimiters.append((i, size if eol < 0 else eol + 1, close))
        pos = line_end
        if close:
            break
    if not delimiters:
        return None
    parts: list[bytes] = []
    for k, (_, start, close) in enumerate(delimiters):
        if close:
            break
        if k + 1 < len(delimiters):
            end = delimiters[k + 1][0]
            if body[end - 2:end] == b"\r\n":
                end -= 2
            elif body[end - 1:end] == b"\n":
                end -= 1
        else:
            end = size
        parts.append(body[start:max(start, end)])
    return parts


# --- Transfer encodings ------------------------------------------------------------------------

_B64_LINE_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}[ \t\r]*$")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"
_B64_STRICTISH_RE = re.compile(rb"(?:[A-Za-z0-9+/]{16,}\r?\n)+[A-Za-z0-9+/]*={0,2}\s*")
_QP_SOFT_WS_RE = re.compile(rb"=[ \t]+(\r?\n)")
_IDENTITY = frozenset({"", "7bit", "8bit", "binary", "none"})
_UU = frozenset({"xuuencode", "uuencode", "xuue", "uue"})


def decode_body(entity: Entity, notes: list[str]) -> bytes:
    """The entity's body with its Content-Transfer-Encoding undone; never raises."""
    cte = entity.cte
    body = entity.body
    if cte == "base64":
        return decode_base64(body, notes)
    if cte == "quotedprintable":
        if b"= " in body or b"=\t" in body:  # soft line break followed by stray whitespace
            body = _QP_SOFT_WS_RE.sub(b"=\\1", body)
        return binascii.a2b_qp(body)
    if cte in _UU:
        name, data = uudecode(body)
        return data if data or name is not None else body
    if cte not in _IDENTITY:
        raw = entity.headers.raw("content-transfer-encoding") or b""
        _note(notes, f"unknown Content-Transfer-Encoding {decode_header_bytes(raw)!r}, "
                     "content taken as is")
    elif (entity.maintype not in ("text", "message", "multipart")
          and len(body) >= 32 and _B64_STRICTISH_RE.fullmatch(body)):
        _note(notes, f"{entity.ctype} part without Content-Transfer-Encoding looks like base64, "
                     "decoded as base64")
        return decode_base64(body, notes)
    return body


def decode_base64(body: bytes, notes: list[str]) -> bytes:
    """Base64 that tolerates missing padding, stray characters and appended plain text."""
    if not body.translate(None, _B64_ALPHABET):  # only base64 characters and whitespace
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            return _b64_repair(body)
    # Lines after the last base64-looking line are plain text appended to the part (a list
    # footer): keep them as they are. Junk between base64 lines is skipped.
    lines = body.split(b"\n")
    last = -1
    for i, line in enumerate(lines):
        if line.strip() and _B64_LINE_RE.match(line):
            last = i
    if last < 0:
        _note(notes, "part declared base64 is not base64, content taken as is")
        return body
    head = b"\n".join(lines[:last + 1])
    tail = b"\n".join(lines[last + 1:])
    if tail.strip():
        _note(notes, "part declared base64 has trailing non-base64 data, kept undecoded")
        return _b64_repair(head) + b"\n" + tail.lstrip(b"\r\n")
    _note(notes, "part declared base64 contains non-base64 characters, skipped them")
    return _b64_repair(head)


def _b64_repair(data: bytes) -> bytes:
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(data) % 4 == 1:
        data = data[:-1]
    data += b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""


_UU_BEGIN_RE = re.compile(rb"^begin(?:-base64)? +[0-7]{3,4} +([^\r\n]*?)[ \t]*\r?$", re.M)
_UU_END_RE = re.compile(rb"^end[ \t]*\r?$", re.M)


def uudecode(data: bytes) -> tuple[str | None, bytes]:
    """Decode one uuencoded block: (file name from the ``begin`` line or None, data)."""
    m = _UU_BEGIN_RE.search(data)
    name = None
    if m:
        name = decode_header_bytes(m.group(1)).strip() or None
        data = data[m.end():]
    end = _UU_END_RE.search(data)
    if end:
        data = data[:end.start()]
    return name, _uu_lines(data)


def _uu_lines(data: bytes) -> bytes:
    out = bytearray()
    for line in data.splitlines():
        line = line.rstrip(b"\r")
        if not line or line in (b"`", b" "):
            continue
        length = (line[0] - 32) & 63
        if length == 0:
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Senders strip trailing spaces or pad lines; decode what the length byte promises.
            needed = (length * 4 + 5) // 3
            chunk = line[:needed + 1].ljust(needed + 1, b" ")
            try:
                out += binascii.a2b_uu(chunk)[:length]
            except binascii.Error:
                continue
    return bytes(out)


_UU_BLOCK_RE = re.compile(
    rb"^begin [0-7]{3,4} +([^\r\n]+?)[ \t]*\r?\n((?:[!-`][^\r\n]*\r?\n|\r?\n)*?)end[ \t]*(?:\r?\n|$)",
    re.M,
)


def extract_uu_blocks(data: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Remove ``begin 644 name`` ... ``end`` blocks from a text body; return them as files."""
    if b"begin " not in data:
        return data, []
    files: list[tuple[str, bytes]] = []

    def take(m: re.Match[bytes]) -> bytes:
        files.append((decode_header_bytes(m.group(1)).strip(), _uu_lines(m.group(2))))
        return b""

    return _UU_BLOCK_RE.sub(take, data), files


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)
