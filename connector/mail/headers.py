"""Header-level parsing on raw bytes: header blocks, RFC 2047 words, parameters, addresses, ids.

Written against bytes instead of ``email.policy.default`` because that policy's header objects are
what makes stdlib parsing slow (see FIELD-NOTES, "Throughput"), and because real mail needs
leniency the stdlib does not offer: 8-bit header bytes in legacy charsets, encoded words inside
quoted strings or glued to other text, continuation lines that lost their indentation.
"""
from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import getaddresses, parsedate_tz
from urllib.parse import unquote_to_bytes

from .charsets import codec_chain, decode_header_bytes, decode_text

# A header field starts at a line beginning with a field name and a colon. Everything up to the
# next such line belongs to the field, which also absorbs continuation lines that lost their
# leading whitespace (seen in mail that went through broken gateways).
_FIELD_RE = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.M)
_BLANK_LINE_RE = re.compile(rb"\n\r?\n")
_HEADER_LINE_RE = re.compile(rb"[!-9;-~]+[ \t]*:|[ \t]")
_FOLD_RE = re.compile(rb"\r?\n(?=[ \t])")
_NEWLINE_RE = re.compile(rb"\r?\n|\r")
_WS_RE = re.compile(r"[ \t\r\n]+")


Hints = tuple[str, ...] | Callable[[], tuple[str, ...]]


class Headers:
    """Raw header fields of one entity, by lowercased name, in order of appearance.

    Values are kept as raw slices and unfolded only when read: most fields of a real mail
    (Received, DKIM, ARC, X-*) are never looked at, and skipping them is most of parse_headers'
    speed. ``hints`` are charsets to try for 8-bit bytes in values; a callable is resolved on
    first need, since scanning the message for them is wasted work for the usual ASCII headers.
    """

    __slots__ = ("_fields", "_hints")

    def __init__(self, fields: dict[str, list[bytes]], hints: Hints = ()) -> None:
        self._fields = fields
        self._hints = hints

    @property
    def hints(self) -> tuple[str, ...]:
        if callable(self._hints):
            self._hints = self._hints()
        return self._hints

    def raw(self, name: str) -> bytes | None:
        values = self._fields.get(name)
        return unfold(values[0]) if values else None

    def raw_all(self, name: str) -> list[bytes]:
        return [unfold(v) for v in self._fields.get(name, ())]

    def __contains__(self, name: str) -> bool:
        return name in self._fields

    def text(self, name: str) -> str | None:
        """The field as text with 8-bit bytes decoded, encoded words still encoded."""
        value = self.raw(name)
        return None if value is None else self._decode(value)

    def texts(self, name: str) -> list[str]:
        """Every occurrence of the field, as ``text`` would return it."""
        return [self._decode(v) for v in self.raw_all(name)]

    def _decode(self, value: bytes) -> str:
        return value.decode("ascii") if value.isascii() else decode_header_bytes(value, self.hints)

    def decoded(self, name: str) -> str | None:
        """The field as display text: encoded words decoded, whitespace folded."""
        value = self.text(name)
        return None if value is None else fold_ws(decode_words(value))


def unfold(value: bytes) -> bytes:
    """RFC 5322 unfolding; a continuation line without leading whitespace counts as a space."""
    if b"\n" in value or b"\r" in value:
        value = _NEWLINE_RE.sub(b" ", _FOLD_RE.sub(b"", value))
    return value.strip(b" \t\r\n")


def split_header_block(raw: bytes) -> tuple[bytes, int]:
    """Return the header block and the offset where the body starts.

    The block ends at the first empty line. Without one, it ends at the first line that is neither
    a field nor a continuation (what MUAs do with a missing separator).
    """
    if raw.startswith(b"\n"):
        return b"", 1
    if raw.startswith(b"\r\n"):
        return b"", 2
    m = _BLANK_LINE_RE.search(raw)
    if m:
        return raw[: m.start() + 1], m.end()
    pos = 0
    length = len(raw)
    while pos < length:
        end = raw.find(b"\n", pos)
        end = length if end < 0 else end + 1
        if pos and not _HEADER_LINE_RE.match(raw, pos):
            return raw[:pos], pos
        pos = end
    return raw, length


def parse_fields(block: bytes) -> dict[str, list[bytes]]:
    """Split a header block into lowercased name -> raw (still folded) values, in order.

    Text before the first field (an mbox ``From `` line, pasted garbage) is ignored.
    """
    fields: dict[str, list[bytes]] = {}
    prev_name = ""
    prev_start = 0
    for m in _FIELD_RE.finditer(block):
        if prev_name:
            fields.setdefault(prev_name, []).append(block[prev_start:m.start()])
        prev_name = m.group(1).decode("ascii").lower()
        prev_start = m.end()
    if prev_name:
        fields.setdefault(prev_name, []).append(block[prev_start:])
    return fields


def fold_ws(text: str) -> str:
    """Collapse runs of ASCII whitespace into one space and strip the ends."""
    return _WS_RE.sub(" ", text).strip(" ")


# --- RFC 2047 encoded words --------------------------------------------------------------------

# Lenient: the encoded text may contain spaces (broken senders) but never "?"; words may touch
# other text ("=?...?=.jpg"); the charset may carry an RFC 2231 language ("utf-8*de").
_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")


def _word_bytes(encoding: str, text: str) -> bytes:
    data = text.encode("ascii", "replace")
    if encoding in "bB":
        data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        if len(data) % 4 == 1:
            data = data[:-1]
        data += b"=" * (-len(data) % 4)
        try:
            return binascii.a2b_base64(data)
        except binascii.Error:
            return b""
    return binascii.a2b_qp(data, header=True)


def decode_words(text: str, notes: list[str] | None = None) -> str:
    """Decode RFC 2047 encoded words anywhere in ``text``; never raises.

    Whitespace between adjacent encoded words is dropped (RFC 2047 section 6.2), and adjacent
    words in the same charset are decoded together, because senders split multibyte characters
    across words.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pos = 0
    pending: bytearray | None = None
    pending_charset = ""
    for m in _WORD_RE.finditer(text):
        gap = text[pos:m.start()]
        if pending is not None and (gap.strip(" \t\r\n") or m.group(1).lower() != pending_charset):
            out.append(decode_text(bytes(pending), pending_charset, notes))
            pending = None
        if pending is None:
            if gap.strip(" \t\r\n") or not out:
                out.append(gap)
            pending = bytearray()
            pending_charset = m.group(1).lower()
        pending += _word_bytes(m.group(2), m.group(3))
        pos = m.end()
    if pending is not None:
        out.append(decode_text(bytes(pending), pending_charset, notes))
    out.append(text[pos:])
    return "".join(out)


# --- Content-Type / Content-Disposition parameters (RFC 2045, RFC 2231) -----------------------

_PARAM_RE = re.compile(
    r""";\s*([^\s=;"]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)(?:"|$)|([^;\s]*))""", re.S
)
_RFC2231_RE = re.compile(r"^([^*]+)\*(?:(\d+)(\*)?|)$")
_UNESCAPE_RE = re.compile(r"\\([\\\"])")


def parse_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type/subtype; a=b; c*=utf-8''x`` into the lowercased main value and parameters.

    Parameter names are lowercased; RFC 2231 continuations and charsets are joined and decoded;
    the first occurrence of a name wins. Encoded words in values are left for the caller.
    """
    semi = value.find(";")
    main = (value if semi < 0 else value[:semi]).strip().lower()
    params: dict[str, str] = {}
    if semi < 0:
        return main, params
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    for m in _PARAM_RE.finditer(value, semi):
        name = m.group(1).lower()
        quoted = m.group(2)
        val = _UNESCAPE_RE.sub(r"\1", quoted) if quoted is not None else (m.group(3) or "")
        ext = _RFC2231_RE.match(name)
        if ext:
            index = int(ext.group(2)) if ext.group(2) else 0
            encoded = ext.group(3) is not None or ext.group(2) is None
            sections.setdefault(ext.group(1), []).append((index, encoded, val))
        elif name not in params:
            params[name] = val
    for name, parts in sections.items():
        params[name] = _join_rfc2231(parts)  # an RFC 2231 value wins over a plain one
    return main, params


def _join_rfc2231(parts: list[tuple[int, bool, str]]) -> str:
    parts.sort(key=lambda p: p[0])
    charset = ""
    chunks: list[bytes] = []
    for i, (_, encoded, val) in enumerate(parts):
        if encoded:
            if i == 0 and val.count("'") >= 2:
                charset, _, val = val.split("'", 2)
            chunks.append(unquote_to_bytes(val))
        else:
            chunks.append(val.encode("utf-8", "surrogateescape"))
    return decode_text(b"".join(chunks), charset or "utf-8")


# --- Addresses, message ids, dates -------------------------------------------------------------

def parse_address_list(text: str | None) -> list[tuple[str, str]]:
    """(lowercased address, decoded display name) pairs; entries without an address are dropped.

    Encoded words are swapped for placeholders before the address parser runs, so that a comma
    inside an unquoted encoded display name (``=?iso-8859-1?Q?M=FCller,_Hans?=``, common) does
    not split one address into two.
    """
    if not text:
        return []
    words: list[str] = []
    if "=?" in text:
        def hold(m: re.Match[str]) -> str:
            words.append(m.group(0))
            return f"\ue000{len(words) - 1}\ue001"

        text = _WORD_RE.sub(hold, text)
    try:
        pairs = getaddresses([text])
    except Exception:  # noqa: BLE001 - stdlib parser on hostile input; degrade to nothing
        return []
    out: list[tuple[str, str]] = []
    for name, addr in pairs:
        if words:
            name = _PLACEHOLDER_RE.sub(lambda m: words[int(m.group(1))], name)
            addr = _PLACEHOLDER_RE.sub(lambda m: words[int(m.group(1))], addr)
        addr = addr.strip().strip("<>").strip().lower()
        if not addr:
            continue
        name = fold_ws(decode_words(name))
        if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"":
            name = name[1:-1].strip()
        out.append((addr, name))
    return out


_PLACEHOLDER_RE = re.compile("\ue000(\\d+)\ue001")


_MSGID_RE = re.compile(r"<([^<>]*)>")
_MSGID_TOKEN_RE = re.compile(r"[^\s,<>()]+@[^\s,<>()]+")


def parse_msgids(text: str | None) -> list[str]:
    """Message ids in ``<...>`` form, in order, duplicates removed; bare ``a@b`` tokens accepted
    only when nothing is bracketed (some gateways drop the brackets)."""
    if not text:
        return []
    found: list[str] = []
    for m in _MSGID_RE.finditer(text):
        inner = "".join(m.group(1).split())
        if inner:
            found.append(f"<{inner}>")
    if not found:
        found = [f"<{tok}>" for tok in _MSGID_TOKEN_RE.findall(text)]
    seen: set[str] = set()
    return [i for i in found if len(i) <= 998 and not (i in seen or seen.add(i))]


def parse_date(text: str | None) -> datetime | None:
    """RFC 5322 date as aware UTC; ``-0000`` and missing zones are taken as UTC."""
    if not text:
        return None
    try:
        parts = parsedate_tz(text)
        if parts is None:
            return None
        offset = parts[9] or 0
        local = datetime(*parts[:6], tzinfo=timezone.utc)  # type: ignore[misc]
        return local - timedelta(seconds=offset)
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


_CHARSET_HINT_RE = re.compile(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:+-]{2,40})""", re.I)


def lazy_hints(raw: bytes) -> Callable[[], tuple[str, ...]]:
    """``charset_hints(raw)``, computed on first call and shared by every entity of a message."""
    cache: list[tuple[str, ...]] = []

    def get() -> tuple[str, ...]:
        if not cache:
            cache.append(charset_hints(raw))
        return cache[0]

    return get


def charset_hints(raw: bytes, limit: int = 65536) -> tuple[str, ...]:
    """Charsets declared anywhere near the top of the message, used to decode 8-bit headers."""
    hints: list[str] = []
    for m in _CHARSET_HINT_RE.finditer(raw, 0, min(len(raw), limit)):
        label = m.group(1).decode("ascii").lower()
        if label not in hints and codec_chain(label)[1]:
            hints.append(label)
    return tuple(hints)
