"""Part contents: ``get_payload(decode=True)`` and the stdlib generator, plus what real mail needs.

The stdlib undoes base64, quoted-printable and x-uuencode and writes attached messages back out.
Ours on top: transfer-encoding names spelled loosely, base64 parts with a plain-text footer
appended or with no base64 in them at all, base64 sent without a Content-Transfer-Encoding,
quoted-printable soft line breaks followed by stray spaces, uuencoded data without a ``begin``
line or with the file name on it, and uuencoded blocks inside text bodies.
"""
from __future__ import annotations

import binascii
import quopri
import re
from email.errors import InvalidBase64LengthDefect
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Policy
from io import BytesIO

from .charsets import decode_header_bytes

_CANONICAL = {"base64": "base64", "quotedprintable": "quoted-printable",
              "xuuencode": "x-uuencode", "uuencode": "x-uuencode", "xuue": "x-uuencode",
              "uue": "x-uuencode"}
_IDENTITY = frozenset({"", "7bit", "8bit", "binary", "none"})
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"
_B64_LINE_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}[ \t\r]*$")
_B64_STRICTISH_RE = re.compile(rb"(?:[A-Za-z0-9+/]{16,}\r?\n)+[A-Za-z0-9+/]*={0,2}\s*")
_QP_SOFT_WS_RE = re.compile(rb"=[ \t]+(\r?\n)")


def transfer_encoding(part: Message) -> str:
    """The Content-Transfer-Encoding as the sender meant it: ``QUOTED_PRINTABLE`` and
    ``quoted printable`` are quoted-printable; an unknown one is returned lowercased."""
    value = (part.get("content-transfer-encoding") or "").strip().lower()
    return _CANONICAL.get(re.sub(r"[^a-z0-9]", "", value), value)


def as_sent(part: Message) -> bytes:
    """The part's body before transfer decoding, as ``get_payload(decode=True)`` starts from it.
    (``get_payload()`` would decode 8-bit text in the declared charset, lossily.)"""
    payload = part._payload  # private, but read the same way by the stdlib's own generator
    return payload.encode("ascii", "surrogateescape") if isinstance(payload, str) else b""


def decode_payload(part: Message, notes: list[str]) -> bytes:
    """``part.get_payload(decode=True)``, made robust."""
    raw = as_sent(part)
    cte = transfer_encoding(part)
    if cte in ("base64", "quoted-printable", "x-uuencode"):
        if part.get("content-transfer-encoding", "").lower() != cte:
            part.replace_header("content-transfer-encoding", cte)  # a spelling the stdlib knows
        if cte == "base64" and raw.translate(None, _B64_ALPHABET):
            return _impure_base64(raw, notes)
        if cte == "quoted-printable" and _QP_SOFT_WS_RE.search(raw):
            return quopri.decodestring(_QP_SOFT_WS_RE.sub(rb"=\1", raw))
        data = part.get_payload(decode=True)
        if cte == "base64" and any(isinstance(d, InvalidBase64LengthDefect) for d in part.defects):
            return _base64(raw)  # one character too many: the stdlib gives up, we drop it
        if cte == "x-uuencode" and data == raw:  # no usable "begin" line: decode what is there
            return uudecode(raw)[1] or raw
        return data
    if cte not in _IDENTITY:
        value = part.get("content-transfer-encoding", "").strip()
        _note(notes, f"unknown Content-Transfer-Encoding "
                     f"{decode_header_bytes(value.encode('utf-8', 'surrogateescape'))!r}, "
                     "content taken as is")
    elif (part.get_content_maintype() not in ("text", "message", "multipart")
          and len(raw) >= 32 and _B64_STRICTISH_RE.fullmatch(raw)):
        _note(notes, f"{part.get_content_type()} part without Content-Transfer-Encoding looks "
                     "like base64, decoded as base64")
        return _base64(raw)
    return raw


def _impure_base64(raw: bytes, notes: list[str]) -> bytes:
    """Declared base64 with other characters in it. Lines after the last base64-looking line are
    plain text appended to the part (a list footer): kept as they are (``get_payload`` would
    decode them into garbage). Junk between base64 lines is skipped."""
    lines = raw.split(b"\n")
    last = -1
    for i, line in enumerate(lines):
        if line.strip() and _B64_LINE_RE.match(line):
            last = i
    if last < 0:
        _note(notes, "part declared base64 is not base64, content taken as is")
        return raw
    tail = b"\n".join(lines[last + 1:])
    if tail.strip():
        _note(notes, "part declared base64 has trailing non-base64 data, kept undecoded")
        return _base64(b"\n".join(lines[:last + 1])) + b"\n" + tail.lstrip(b"\r\n")
    _note(notes, "part declared base64 contains non-base64 characters, skipped them")
    return _base64(raw)


def _base64(data: bytes) -> bytes:
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(data) % 4 == 1:
        data = data[:-1]
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return b""


class _Generator(BytesGenerator):
    """The stdlib generator, except for a multipart whose boundary never occurred (its body is one
    string): written as it came, like text (the stdlib decodes it first, lossily, and then fails
    on the 8-bit bytes)."""

    def _handle_multipart(self, msg: Message) -> None:
        if isinstance(msg.get_payload(), str):
            self._handle_text(msg)
        else:
            super()._handle_multipart(msg)


def _flatten(msg: Message, policy: Policy) -> bytes:
    out = BytesIO()
    _Generator(out, mangle_from_=False, policy=policy).flatten(msg)
    return out.getvalue()


def attached_bytes(part: Message, linesep: str) -> bytes:
    """The content of a part that the parser turned into Message objects (an attached mail, a
    delivery status, a multipart nested too deep), written back by the stdlib generator: with our
    policy, that is the bytes as sent, line breaks made the message's.
    """
    policy = part.policy.clone(linesep=linesep)
    sep = linesep.encode()
    payload = part.get_payload()
    if part.get_content_type() != "message/delivery-status" and isinstance(payload, list) \
            and len(payload) == 1 and isinstance(payload[0], Message):
        data = _flatten(payload[0], policy)
        if not payload[0].keys():
            data = data[len(sep):]  # no header fields, no separator line
        cte = transfer_encoding(part)  # not allowed on message/*, sent anyway
        if cte == "base64":
            return _base64(data)
        return quopri.decodestring(data) if cte == "quoted-printable" else data
    data = _flatten(part, policy)
    return data.partition(sep + sep)[2] if part.keys() else data[len(sep):]


# --- uuencode ----------------------------------------------------------------------------------
# The "begin" and "end" lines are found by a fixed prefix, and the rest of each line is read in Python: a
# lazy file name followed by optional spaces, as one pattern, took time quadratic (and cubic with a run of
# spaces after the mode) in the length of the line.

_UU_BEGIN_RE = re.compile(rb"^begin(?:-base64)? +[0-7]{3,4} ", re.M)
_UU_BLOCK_BEGIN_RE = re.compile(rb"^begin [0-7]{3,4} ", re.M)
_UU_END_RE = re.compile(rb"^end[ \t]*\r?$", re.M)


def _rest_of_line(data: bytes, start: int) -> tuple[bytes, int] | None:
    """The line from `start` without its end (LF or CRLF), and where the LF is; None if it holds another CR."""
    eol = data.find(b"\n", start)
    eol = len(data) if eol < 0 else eol
    rest = data[start:eol]
    if rest.endswith(b"\r"):
        rest = rest[:-1]
    return None if b"\r" in rest else (rest, eol)


def uudecode(data: bytes) -> tuple[str | None, bytes]:
    """One uuencoded block, leniently: (file name from the ``begin`` line or None, data)."""
    name = None
    for m in _UU_BEGIN_RE.finditer(data):
        line = _rest_of_line(data, m.end())
        if line is not None:
            name = decode_header_bytes(line[0].lstrip(b" ").rstrip(b" \t")).strip() or None
            data = data[line[1]:]
            break
    end = _UU_END_RE.search(data)
    return name, _uu_lines(data[:end.start()] if end else data)


def _uu_lines(data: bytes) -> bytes:
    out = bytearray()
    for line in data.splitlines():
        length = (line[0] - 32) & 63 if line else 0
        if not length:
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Senders strip trailing spaces or pad lines; decode what the length byte promises.
            needed = (length * 4 + 5) // 3
            try:
                out += binascii.a2b_uu(line[:needed + 1].ljust(needed + 1, b" "))[:length]
            except binascii.Error:
                continue
    return bytes(out)


def extract_uu_blocks(data: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Remove ``begin 644 name`` ... ``end`` blocks from a text body; return them as files.

    A block is a ``begin`` line with a file name, lines that are empty or start with a uuencode character
    (``!`` to `````), and an ``end`` line; anything else before the ``end`` means it is not a block.
    """
    if b"begin " not in data:
        return data, []
    files: list[tuple[str, bytes]] = []
    kept: list[bytes] = []
    pos = 0
    for m in _UU_BLOCK_BEGIN_RE.finditer(data):
        if m.start() < pos:
            continue
        block = _uu_block(data, m.end())
        if block is None:
            continue
        name, body_start, body_end, block_end = block
        kept.append(data[pos:m.start()])
        files.append((decode_header_bytes(name).strip(), _uu_lines(data[body_start:body_end])))
        pos = block_end
    kept.append(data[pos:])
    return b"".join(kept), files


def _uu_block(data: bytes, after_mode: int) -> tuple[bytes, int, int, int] | None:
    """(file name, start and end of the encoded lines, end of the ``end`` line) of the block whose ``begin``
    line continues at `after_mode`, or None if there is no complete block there."""
    first = _rest_of_line(data, after_mode)
    if first is None or not first[0] or first[1] == len(data):
        return None
    name = first[0].lstrip(b" ").rstrip(b" \t")
    body_start = pos = first[1] + 1
    while True:
        newline = data.find(b"\n", pos)
        line = data[pos:] if newline < 0 else data[pos:newline]
        tail = line[3:]
        if newline >= 0 and tail.endswith(b"\r"):
            tail = tail[:-1]
        if line.startswith(b"end") and not tail.strip(b" \t"):
            return name, body_start, pos, len(data) if newline < 0 else newline + 1
        if newline < 0:
            return None  # every encoded line ends with a line break
        content = line[:-1] if line.endswith(b"\r") else line
        if b"\r" in content or (content and not 0x21 <= content[0] <= 0x60):
            return None
        pos = newline + 1


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)
