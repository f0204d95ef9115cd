"""Header fields with the stdlib ``email`` package, made robust for real mail.

The stdlib does the parsing: its feed parser splits the header block and the MIME tree (through
``feed.py``, which bounds what crafted mail could make it spend), ``Message.get_param`` joins RFC 2231
parameter continuations, ``email.utils.getaddresses`` and ``parsedate_to_datetime`` read addresses and
dates. RFC 2047 encoded words are found and joined the way ``email.header.decode_header`` does it, in one
pass (the stdlib's takes time quadratic in the number of words, and its pattern is quadratic on a long
run of unfinished words).

We parse with ``policy.compat32``, not ``policy.default``: the header objects of the modern policy
are what makes stdlib parsing slow (10,000 mails: 21 s for a full parse against 6.3 s with
compat32), and they raise on or mangle what real mail contains (8-bit header bytes, encoded words
in charsets Python does not know). compat32 hands over header values as they were sent, which we
decode explicitly. What is ours is what the stdlib has no answer for: 8-bit header bytes in the
message's legacy charsets, charsets that are unknown or mislabelled (``charsets.py``), commas
inside encoded display names, message ids without brackets, and header blocks with garbage before
the first field or continuation lines that lost their indentation.
"""
from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from datetime import datetime, timezone
from email import base64mime, quoprimime
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import Message
from email.policy import Compat32
from email.utils import getaddresses, parsedate_to_datetime

from .charsets import codec_chain, decode_header_bytes, decode_text
from .feed import parse_bytes

_LINEBREAK_RE = re.compile(r"\r\n|\r|\n")
# What of a header field is read. Real fields stay far below (a thousand recipients take ~40 KB, and
# Exchange Online refuses mail whose whole header passes 256 KB); the stdlib's address and parameter
# parsers walk a field character by character in Python, several times a part.
MAX_FIELD = 64 * 1024
_WS_RE = re.compile(r"[ \t\r\n]+")


class _AsParsed(Compat32):
    """compat32, with header values kept as they were sent: 8-bit bytes stay surrogate escapes for
    us to decode (compat32 turns them into ``email.header.Header`` objects, which ``get_param``
    cannot read), values are unfolded when read (RFC 5322: remove the line breaks) and written
    back byte for byte (compat32 drops the whitespace after the colon and re-wraps the value),
    which matters for attached ``message/rfc822`` parts."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = sourcelines[0].split(":", 1)
        return name, (value + "".join(sourcelines[1:])).rstrip("\r\n")

    def header_store_parse(self, name: str, value: str) -> tuple[str, str]:
        return name, " " + value

    def header_fetch_parse(self, name: str, value: str) -> str:
        if len(value) > MAX_FIELD:
            value = value[:MAX_FIELD]  # read, not stored: an attached message is still written back whole
        if "\n" in value or "\r" in value:
            value = _LINEBREAK_RE.sub("", value)
        return value.lstrip(" \t")

    def fold_binary(self, name: str, value: str) -> bytes:
        line = f"{name}:{_LINEBREAK_RE.sub(self.linesep, value)}{self.linesep}"
        return line.encode("ascii", "surrogateescape")


POLICY = _AsParsed()
_BLANK_LINE_RE = re.compile(rb"\n\r?\n")
_FIELD_RE = re.compile(rb"([!-9;-~]+)[ \t]*:")


def read_headers(raw: bytes) -> Message:
    """The header block of ``raw`` (only that is handed to the parser: it reads bodies line by
    line even when it is told to skip them)."""
    m = _BLANK_LINE_RE.search(raw)
    block = raw[:m.end()] if m else raw
    msg = parse_bytes(block, POLICY, headers_only=True)
    repaired = _repaired(block) if _cut_short(msg) else None
    return parse_bytes(repaired, POLICY, headers_only=True) if repaired is not None else msg


def read_message(raw: bytes) -> Message:
    """The whole MIME tree of ``raw``."""
    msg = parse_bytes(raw, POLICY)
    repaired = _repaired(raw) if _cut_short(msg) else None
    return parse_bytes(repaired, POLICY) if repaired is not None else msg


def header_end(raw: bytes) -> int:
    m = _BLANK_LINE_RE.search(raw)
    return m.end() if m else len(raw)


def _cut_short(msg: Message) -> bool:
    return any(isinstance(d, MissingHeaderBodySeparatorDefect) for d in msg.defects)


def _repaired(raw: bytes) -> bytes | None:
    """``raw`` with its header block made readable, or None if there is nothing to repair.

    The stdlib ends the header block at the first line that is neither a field nor indented. When
    more fields follow before the empty line, that line is a continuation that lost its
    indentation (broken gateways) and gets it back; text before the first field (a pasted
    "---- Original message ----") is dropped; ``Name :`` loses the space before the colon.
    """
    m = _BLANK_LINE_RE.search(raw)
    if m is None:
        return None
    lines = raw[:m.start()].split(b"\n")
    fields = [i for i, line in enumerate(lines) if _FIELD_RE.match(line)]
    if not fields:
        return None
    out = []
    for line in lines[fields[0]:fields[-1] + 1]:
        if _FIELD_RE.match(line):
            out.append(_FIELD_RE.sub(rb"\1:", line, 1))
        else:
            out.append(line if line[:1] in (b" ", b"\t") else b" " + line)
    repaired = b"\n".join(out + lines[fields[-1] + 1:]) + raw[m.start():]
    return repaired if repaired != raw else None


# --- Field values as text ----------------------------------------------------------------------

Hints = tuple[str, ...] | Callable[[], tuple[str, ...]]


def header_text(value: str, hints: Hints = ()) -> str:
    """A value as parsed, with 8-bit bytes (surrogate escapes) decoded; encoded words kept."""
    if value.isascii():
        return value
    return decode_header_bytes(value.encode("utf-8", "surrogateescape"),
                               hints() if callable(hints) else hints)


class Fields:
    """The header fields of a message by lowercased name, in order, read once (``Message.get``
    scans every field on each call, and a mail has dozens that are never looked at).
    ``hints`` are charsets for 8-bit bytes, or a callable giving them (``lazy_hints``)."""

    __slots__ = ("_values", "_hints")

    def __init__(self, msg: Message, hints: Hints = ()) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in msg.items():
            self._values.setdefault(name.lower(), []).append(value)
        self._hints = hints

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def text(self, name: str) -> str | None:
        values = self._values.get(name)
        return header_text(values[0].strip(), self._hints) if values else None

    def texts(self, name: str) -> list[str]:
        return [header_text(v.strip(), self._hints) for v in self._values.get(name, ())]

    def decoded(self, name: str) -> str | None:
        """The field as display text: encoded words decoded, whitespace folded."""
        value = self.text(name)
        return None if value is None else fold_ws(decode_words(value))


def param(msg: Message, name: str, header: str = "content-type", hints: Hints = ()) -> str:
    """A Content-Type or Content-Disposition parameter as text, "" if absent or unreadable.

    ``get_param`` joins RFC 2231 continuations and undoes their %-encoding; the charset named in
    an RFC 2231 value goes through our charset chain (``get_filename`` would decode it strictly,
    with replacement characters). Encoded words are left for the caller.
    """
    try:
        value = msg.get_param(name, None, header)
        if isinstance(value, tuple):
            charset, _, text = value
            return decode_text(text.encode("latin-1", "surrogateescape"), charset or "utf-8")
    except Exception:  # noqa: BLE001 - e.g. TypeError for "name*" mixed with "name*0"
        return ""
    return header_text(value, hints) if isinstance(value, str) else ""


def fold_ws(text: str) -> str:
    """Collapse runs of ASCII whitespace into one space and strip the ends."""
    return _WS_RE.sub(" ", text).strip(" ")


def decode_words(text: str, notes: list[str] | None = None) -> str:
    """Decode RFC 2047 encoded words anywhere in ``text`` with our charset chain; never raises.

    As ``email.header.decode_header``: the white space between adjacent encoded words is dropped, and
    words of one charset are joined before decoding (senders split multibyte characters across words).
    Unlike it, in time linear in the length of ``text``. Undecodable base64 keeps the text as it is.
    """
    if "=?" not in text:
        return text
    lines = [_split_words(line) for line in text.splitlines()]
    if not any(len(parts) > 1 for parts in lines):
        return text
    words: list[tuple[str, str | None, str | None]] = []  # (text, encoding or None, charset or None)
    for parts in lines:
        for i in range(0, len(parts), 4):
            unencoded = parts[i].lstrip() if i == 0 else parts[i]
            if unencoded:
                words.append((unencoded, None, None))
            if i + 3 < len(parts):
                words.append((parts[i + 3], parts[i + 2].lower(), parts[i + 1].lower()))
    # White space alone between two encoded words goes (decode_header's rule, kept exactly).
    dropped = {n - 1 for n in range(2, len(words))
               if words[n][1] and words[n - 2][1] and words[n - 1][0].isspace()}
    runs: list[tuple[str | None, list]] = []  # (charset, pieces): text pieces (None) or decoded bytes
    for n, (word, encoding, charset) in enumerate(words):
        if n in dropped:
            continue
        if encoding is None:
            piece: str | bytes = word
        elif encoding == "q":
            piece = quoprimime.header_decode(word).encode("raw-unicode-escape")
        else:
            try:
                piece = base64mime.decode(word + "==="[:(4 - len(word) % 4) % 4])
            except binascii.Error:
                return text
        if runs and runs[-1][0] == charset:
            runs[-1][1].append(piece)
        else:
            runs.append((charset, [piece]))
    return "".join(" ".join(pieces) if charset is None else decode_text(b"".join(pieces), charset, notes)
                   for charset, pieces in runs)


def _split_words(line: str) -> list[str]:
    """``email.header.ecre.split(line)`` in one pass: [text, charset, encoding, encoded, text, ...].

    An encoded word is ``=?charset?q?text?=`` with the charset up to the first "?" and the text up to the
    first "?=" after it, tried from each "=?" in turn, as the stdlib's pattern does; once no "?" or no "?="
    is left, no later word can complete either, so the search stops instead of rescanning.
    """
    out: list[str] = []
    pos = done = 0
    while True:
        start = line.find("=?", pos)
        if start < 0:
            break
        mark = line.find("?", start + 2)
        if mark < 0:
            break
        if line[mark + 1:mark + 2] in ("q", "Q", "b", "B") and line[mark + 2:mark + 3] == "?":
            end = line.find("?=", mark + 3)
            if end < 0:
                break
            out += [line[done:start], line[start + 2:mark], line[mark + 1], line[mark + 3:end]]
            pos = done = end + 2
        else:
            pos = start + 1
    out.append(line[done:])
    return out


# --- Addresses, message ids, dates -------------------------------------------------------------

_WORD_RE = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?]*\?=")
_PLACEHOLDER_RE = re.compile("\ue000(\\d+)\ue001")


def parse_address_list(text: str | None) -> list[tuple[str, str]]:
    """(lowercased address, decoded display name) pairs; entries without an address are dropped.

    Encoded words are swapped for placeholders before ``getaddresses`` runs, so that a comma
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
    pairs = simple_addresses(text)
    if pairs is None:
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


_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_ADDR_SPEC = f"{_DOT_ATOM}@{_DOT_ATOM}"
_PHRASE_ATOM = r"[^\s\"(),:;<>@\[\]\\]+"  # what the stdlib reads as one word of a display name
_SIMPLE_ENTRY = (rf'[ \t]*(?:({_ADDR_SPEC})|(?:"([^"\\\r\n]*)"|({_PHRASE_ATOM}(?:[ \t]+{_PHRASE_ATOM})*))?'
                 rf'[ \t]*<({_ADDR_SPEC})>)[ \t]*')
_SIMPLE_LIST_RE = re.compile(rf"{_SIMPLE_ENTRY}(?:,{_SIMPLE_ENTRY})*")
_SIMPLE_ENTRY_RE = re.compile(_SIMPLE_ENTRY)


def simple_addresses(text: str) -> list[tuple[str, str]] | None:
    """``getaddresses([text])`` for the forms nearly all mail uses (``a@b``, ``Name <a@b>``,
    ``"Name, Q." <a@b>``, comma-separated), or None for anything else, which the stdlib then reads.

    The stdlib's address parser walks the text character by character in Python and was a third of
    the header parsing of a big import; tests check that both give the same pairs.
    """
    if not _SIMPLE_LIST_RE.fullmatch(text):
        return None
    pairs = []
    for bare, quoted, words, bracketed in _SIMPLE_ENTRY_RE.findall(text):
        if bare:
            pairs.append(("", bare))
        else:
            pairs.append((quoted if quoted else " ".join(words.split()), bracketed))
    return pairs


_MSGID_RE = re.compile(r"<([^<>]*)>")
# Only from the start of a token: tried at every position of a long token without "@", the pattern took
# time quadratic in its length (40 KB of References: 3.7 s).
_MSGID_TOKEN_RE = re.compile(r"(?<![^\s,<>()])[^\s,<>()]+@[^\s,<>()]+")


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
        date = parsedate_to_datetime(text)
        if date.tzinfo is None:
            return date.replace(tzinfo=timezone.utc)
        return date.astimezone(timezone.utc)
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


_CHARSET_HINT_RE = re.compile(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:+-]{2,40})""", re.I)


def lazy_hints(raw: bytes) -> Callable[[], tuple[str, ...]]:
    """``charset_hints(raw)``, computed on first call and shared by every part of a message."""
    cache: list[tuple[str, ...]] = []

    def get() -> tuple[str, ...]:
        if not cache:
            cache.append(charset_hints(raw))
        return cache[0]

    return get


CHARSET_HINT_LIMIT = 65536  # how far into a message charset declarations are looked for


def charset_hints(raw: bytes, limit: int = CHARSET_HINT_LIMIT) -> tuple[str, ...]:
    """Charsets declared anywhere near the top of the message, used to decode 8-bit headers."""
    hints: list[str] = []
    for m in _CHARSET_HINT_RE.finditer(raw, 0, min(len(raw), limit)):
        label = m.group(1).decode("ascii").lower()
        if label not in hints and codec_chain(label)[1]:
            hints.append(label)
    return tuple(hints)
