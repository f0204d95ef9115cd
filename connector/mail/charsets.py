"""Charset labels as found in real mail, mapped to Python codecs, and decoding that never fails.

Mail declares charsets that Python does not know (``iso-gb2312``, ``x-mac-cyrillic``), that are
subsets of what was really used (``gb2312`` for GBK text, ``iso-8859-1`` for Windows-1252,
``iso-2022-jp`` for Shift_JIS bytes) or that are plain wrong. Each label therefore maps to a
chain of codecs tried strictly in order, with a lenient decode as the last resort, so that one odd
mail can never stop ingestion with a ``LookupError`` or ``UnicodeDecodeError``.
"""
from __future__ import annotations

import codecs
import re
from functools import lru_cache

# Lenient last resort: Windows-1252 is what "8-bit text of unknown charset" is most of the time.
FALLBACK = "windows-1252"

# Pseudo codec: ISO-2022-JP read with the Windows (cp932) character set, which has the NEC and
# IBM extensions (circled digits, roman numerals) that Japanese mail uses and Python's iso2022_jp
# codecs reject. Python has no cp50220/cp50221.
JIS_CP932 = "iso2022jp-via-cp932"

# Label (lowercased) -> codecs to try in order. Supersets first: decoding GBK text labelled
# gb2312 with the gb2312 codec fails on the first GBK-only character.
_ALIASES: dict[str, tuple[str, ...]] = {
    "iso-gb2312": ("gb18030",),
    "gb2312": ("gb18030",),
    "gb_2312-80": ("gb18030",),
    "csgb2312": ("gb18030",),
    "euc-cn": ("gb18030",),
    "x-euc-cn": ("gb18030",),
    "gbk": ("gb18030",),
    "x-gbk": ("gb18030",),
    "cp936": ("gb18030",),
    "chinese": ("gb18030",),
    "hz-gb-2312": ("hz", "gb18030"),
    "big5": ("cp950", "big5hkscs"),
    "x-big5": ("cp950", "big5hkscs"),
    "big5-hkscs": ("big5hkscs", "cp950"),
    "cn-big5": ("cp950", "big5hkscs"),
    "ks_c_5601-1987": ("cp949",),
    "ks_c_5601": ("cp949",),
    "ks_c_5601-1989": ("cp949",),
    "ksc5601": ("cp949",),
    "korean": ("cp949",),
    "euc-kr": ("cp949",),
    "x-euc-kr": ("cp949",),
    "shift_jis": ("cp932", "shift_jis_2004"),
    "shift-jis": ("cp932", "shift_jis_2004"),
    "x-sjis": ("cp932", "shift_jis_2004"),
    "sjis": ("cp932", "shift_jis_2004"),
    "ms_kanji": ("cp932",),
    "windows-31j": ("cp932",),
    # Japanese mail labelled ISO-2022-JP often uses NEC/IBM extensions, and some senders put
    # Shift_JIS bytes under that label, hence cp932 at the end.
    "iso-2022-jp": ("iso2022_jp", JIS_CP932, "iso2022_jp_2", "iso2022_jp_3", "cp932"),
    "csiso2022jp": ("iso2022_jp", JIS_CP932, "iso2022_jp_2", "cp932"),
    "iso-2022-jp-2": ("iso2022_jp_2", JIS_CP932, "cp932"),
    "euc-jp": ("euc_jp", "euc_jis_2004", "cp932"),
    "x-euc-jp": ("euc_jp", "euc_jis_2004", "cp932"),
    "unicode-1-1-utf-7": ("utf-7",),
    "utf-7": ("utf-7",),
    "utf7": ("utf-7",),
    "utf8": ("utf-8",),
    "utf-8": ("utf-8",),
    "x-utf-8": ("utf-8",),
    "x-unicode20utf8": ("utf-8",),
    "unicode-1-1-utf-8": ("utf-8",),
    "tis-620": ("cp874",),
    "iso-8859-11": ("cp874",),
    "windows-874": ("cp874",),
    "x-windows-874": ("cp874",),
    "iso-8859-8-i": ("iso8859_8",),
    "iso-8859-8-e": ("iso8859_8",),
    "iso-8859-6-i": ("iso8859_6",),
    "iso-8859-6-e": ("iso8859_6",),
    "latin-9": ("iso8859_15",),
    "latin9": ("iso8859_15",),
    "x-mac-roman": ("mac_roman",),
    "x-mac-ce": ("mac_latin2",),
    "x-mac-centraleurroman": ("mac_latin2",),
    "x-mac-cyrillic": ("mac_cyrillic",),
    "x-mac-ukrainian": ("mac_cyrillic",),
    "x-mac-greek": ("mac_greek",),
    "x-mac-turkish": ("mac_turkish",),
    "x-mac-icelandic": ("mac_iceland",),
    "x-mac-croatian": ("mac_croatian",),
    "x-mac-romanian": ("mac_romanian",),
    "x-mac-arabic": ("mac_arabic",),
    "x-mac-farsi": ("mac_farsi",),
    "x-mac-japanese": ("cp932",),
    "x-mac-chinesetrad": ("cp950", "big5hkscs"),
    "x-mac-chinesesimp": ("gb18030",),
    "x-mac-korean": ("cp949",),
    "x-mac-hebrew": ("iso8859_8",),
    "x-mac-thai": ("cp874",),
}

# Labels meaning "no real charset information": try UTF-8, then the fallback.
_UNSPECIFIC = frozenset(
    {"", "us-ascii", "ascii", "us", "ansi_x3.4-1968", "csascii", "iso646-us", "x-unknown",
     "unknown", "unknown-8bit", "x-user-defined", "default", "charset", "none", "8bit", "binary",
     "iso-8859-1", "latin1", "latin-1", "l1", "iso8859-1", "iso_8859-1", "iso-ir-100", "cp819",
     "windows-1252", "cp1252", "x-cp1252", "win-1252"}
)
# Of those, the ones that are a real claim of a single-byte Western charset.
_LATIN1_LIKE = frozenset(
    {"iso-8859-1", "latin1", "latin-1", "l1", "iso8859-1", "iso_8859-1", "iso-ir-100", "cp819",
     "windows-1252", "cp1252", "x-cp1252", "win-1252"}
)

_CP_RE = re.compile(r"^(?:x-)?(?:cp|win|windows|ms)[-_ ]?(\d{3,5})$")
_ISO_RE = re.compile(r"^(?:x-)?iso[-_ ]?8859[-_ ]?(\d{1,2})(?:[-:_].*)?$")
_CLEAN_RE = re.compile(r"[\"'\s]")


MAX_LABEL = 64  # longer "charset names" are garbage: not looked up, not cached


def normalise_label(label: str | None) -> str:
    """Lowercase, unquote and drop an RFC 2231 language suffix (``utf-8*en``)."""
    if not label:
        return ""
    if len(label) > MAX_LABEL:
        return "x-unknown-long-label"
    label = _CLEAN_RE.sub("", label).lower()
    return label.split("*", 1)[0]


def codec_chain(label: str | None) -> tuple[tuple[str, ...], bool]:
    """Codecs to try for ``label``, and whether the label was understood at all."""
    if label is not None and len(label) > MAX_LABEL:
        return ("utf-8",), False  # not worth a lookup, nor a place in the cache
    return _codec_chain(label)


@lru_cache(maxsize=512)
def _codec_chain(label: str | None) -> tuple[tuple[str, ...], bool]:
    name = normalise_label(label)
    if name in _ALIASES:
        return _ALIASES[name], True
    if name in _UNSPECIFIC:
        if name in _LATIN1_LIKE:
            return ("windows-1252",), True
        return ("utf-8",), name not in {"x-unknown", "unknown", "x-user-defined", "charset",
                                        "none", "default"}
    candidates = [name]
    m = _CP_RE.match(name)
    if m:
        candidates.append("cp" + m.group(1))
    m = _ISO_RE.match(name)
    if m:
        candidates.append("iso8859_" + m.group(1))
    if name.startswith("x-"):
        candidates.append(name[2:])
    for cand in candidates:
        try:
            info = codecs.lookup(cand)
        except (LookupError, ValueError):  # ValueError: NUL in the label
            continue
        if info.name == "iso8859-1":  # Python's latin-1 alias: treat like the label family above
            return ("windows-1252",), True
        if info.name == "euc_kr":
            return ("cp949",), True
        if info.name == "ascii":
            return ("utf-8",), True
        if not _is_text_codec(info):
            break
        return (info.name,), True
    return ("utf-8",), False


def _is_text_codec(info: codecs.CodecInfo) -> bool:
    # Reject bytes-to-bytes codecs such as base64_codec, zlib, rot13 that codecs.lookup knows.
    return getattr(info, "_is_text_encoding", True)


def decode_fallback(data: bytes) -> str:
    """Windows-1252, with its five unassigned bytes taken as Latin-1 instead of failing."""
    try:
        return data.decode(FALLBACK)
    except UnicodeDecodeError:
        return data.decode(FALLBACK, errors="latin1_fallback")


def _latin1_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    chunk = exc.object[exc.start:exc.end]
    return bytes(chunk).decode("latin-1"), exc.end


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return decode_fallback(bytes(exc.object[exc.start:exc.end])), exc.end


codecs.register_error("latin1_fallback", _latin1_fallback)
codecs.register_error("cp1252_fallback", _cp1252_fallback)


def _describe(label: str | None) -> str:
    return normalise_label(label) or "(none)"


def decode_text(data: bytes, label: str | None, notes: list[str] | None = None) -> str:
    """Decode body text declared as ``label``; never raises. Problems are appended to ``notes``.

    ASCII data decodes as itself whatever the label says (the common case, and the fast one).
    A single-byte Western label on data that is valid UTF-8 with multibyte sequences is taken as
    UTF-8: mislabelled UTF-8 is far more common than Latin-1 text that happens to be valid UTF-8.
    """
    if not data:
        return ""
    chain, known = codec_chain(label)
    if data.isascii() and chain[0] not in ("utf-7", "hz") and not chain[0].startswith("iso2022"):
        return data.decode("ascii")
    name = normalise_label(label)
    if not known:
        text, used = _utf8_or_fallback(data)
        _note(notes, f"charset {_describe(label)!r} unknown, decoded as {used}")
        return text
    if chain == ("windows-1252",) and name in _LATIN1_LIKE:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return decode_fallback(data)
        return text
    if chain == ("utf-8",) and name in _UNSPECIFIC:
        text, used = _utf8_or_fallback(data)
        if used != "utf-8" and name not in ("", "unknown-8bit", "8bit", "binary"):
            _note(notes, f"8-bit data declared {_describe(label)!r}, decoded as {used}")
        return text
    for codec in chain:
        try:
            return _decode(data, codec)
        except (UnicodeDecodeError, LookupError):
            continue
    # Declared charset does not fit the bytes. Mixed content (a UTF-8 template with some
    # Windows-1252 text pasted in) is the usual cause: if at least as many non-ASCII sequences
    # are valid UTF-8 as are not, read it that way, else decode leniently in the declared charset.
    as_utf8 = data.decode("utf-8", errors="replace")
    bad = as_utf8.count("\ufffd")
    good = len(as_utf8) - len(as_utf8.encode("ascii", "ignore")) - bad
    if chain[0] == "utf-8" or good >= bad:
        _note(notes, f"data declared {_describe(label)!r} has invalid bytes, decoded as UTF-8 "
                     f"with {FALLBACK} for the bytes that are not")
        return data.decode("utf-8", errors="cp1252_fallback")
    _note(notes, f"data declared {_describe(label)!r} has invalid bytes, replaced with U+FFFD")
    try:
        return data.decode(chain[0], errors="replace")
    except LookupError:
        return as_utf8


def _decode(data: bytes, codec: str) -> str:
    if codec == JIS_CP932:
        return jis_to_cp932(data)
    return data.decode(codec)


_JIS_ESC_RE = re.compile(rb"\x1b(\$[@B]|\$\(D|\([BJHI])")


def jis_to_cp932(data: bytes) -> str:
    """ISO-2022-JP (JIS X 0208 + half-width katakana) transcoded to Shift_JIS, decoded as cp932.

    Raises UnicodeDecodeError on 8-bit bytes or escapes it does not handle, so a codec chain can
    move on to the next candidate.
    """
    if not data.isascii():
        raise UnicodeDecodeError("iso2022jp", data, 0, 1, "8-bit byte in 7-bit ISO-2022-JP")
    out = bytearray()
    mode = b"(B"
    pos = 0
    for m in _JIS_ESC_RE.finditer(data):
        out += _jis_segment(data, data[pos:m.start()], mode, pos)
        mode = m.group(1)
        pos = m.end()
    out += _jis_segment(data, data[pos:], mode, pos)
    stray = out.find(b"\x1b")
    if stray >= 0:
        raise UnicodeDecodeError("iso2022jp", data, stray, stray + 1, "unknown escape sequence")
    return bytes(out).decode("cp932")


_KANA = bytes(b + 0x80 if 0x21 <= b <= 0x5F else b for b in range(256))  # JIS X 0201 katakana -> Shift_JIS
_LEAD = bytes(((b + 1) // 2 + (0x70 if b <= 0x5E else 0xB0)) & 0xFF for b in range(256))
_ODD = bytes(0x80 if b & 1 else 0 for b in range(256))
# Trail byte by (lead byte odd ? 0x80 : 0) | JIS trail byte (7-bit: the data is ASCII).
_TRAIL = bytes(((k & 0x7F) + ((0x1F if k & 0x7F <= 0x5F else 0x20) if k & 0x80 else 0x7E)) & 0xFF
               for k in range(256))
_LINE_BREAK_RE = re.compile(rb"[\r\n]")


def _jis_segment(data: bytes, seg: bytes, mode: bytes, offset: int) -> bytes:
    if mode in (b"(B", b"(J", b"(H"):
        return seg
    if mode == b"(I":  # half-width katakana
        return seg.translate(_KANA)
    if mode == b"$(D":
        raise UnicodeDecodeError("iso2022jp", data, offset, offset + 1, "JIS X 0212")
    # Two-byte JIS X 0208, pair by pair; a CR or LF where a pair would start stands alone (and pairing starts
    # again after it). Converted a run of pairs at a time with bytes.translate, not byte by byte in Python.
    out = bytearray()
    start = 0
    while start < len(seg):
        end = start
        while True:
            m = _LINE_BREAK_RE.search(seg, end)
            if m is None:
                end = len(seg)
                break
            end = m.start()
            if (end - start) % 2 == 0:
                break
            end += 1  # a trail byte, not a line break
        out += _jis_pairs(seg[start:end])
        if end < len(seg):
            out.append(seg[end])
        start = end + 1
    return bytes(out)


def _jis_pairs(run: bytes) -> bytes:
    pairs = len(run) // 2
    leads, trails = run[0:2 * pairs:2], run[1:2 * pairs:2]
    keyed = (int.from_bytes(trails, "big") | int.from_bytes(leads.translate(_ODD), "big")).to_bytes(pairs, "big")
    converted = bytearray(2 * pairs)
    converted[0::2] = leads.translate(_LEAD)
    converted[1::2] = keyed.translate(_TRAIL)
    return bytes(converted) + run[2 * pairs:]


def decode_header_bytes(data: bytes, hints: tuple[str, ...] = ()) -> str:
    """Decode raw 8-bit header bytes (not allowed by RFC 5322, common anyway); never raises.

    UTF-8 first (RFC 6532 allows it, and legacy bytes rarely validate as UTF-8). Otherwise every
    charset declared in the message is tried, plus Windows-1252, and the decoding that looks least
    like mojibake wins: a message can declare Latin-1 for its text and still carry GB2312 bytes
    in a header, and any bytes "decode" as Latin-1.
    """
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    best: tuple[int, str] | None = None
    tried: set[str] = set()
    for hint in hints:
        chain, known = codec_chain(hint)
        if not known:
            continue
        for codec in chain:
            if codec in tried or codec in ("utf-8", "utf-7") or codec.startswith("iso2022") \
                    or codec == JIS_CP932:
                continue  # 7-bit or already tried: cannot explain 8-bit bytes
            tried.add(codec)
            try:
                text = data.decode(codec)
            except (UnicodeDecodeError, LookupError):
                continue
            score = mojibake_score(text)
            if best is None or score < best[0]:
                best = (score, text)
            if score == 0:
                return text
    fallback = decode_fallback(data)
    if best is None or mojibake_score(fallback) < best[0]:
        return fallback
    return best[1]


# Characters that are rare in real text but typical when bytes are decoded with the wrong table:
# Latin-1 symbols and C1 controls (CJK bytes read as Latin-1), cp1252's rarer 0x80-0x9F letters,
# private-use code points, U+FFFD; and a lone ideograph glued to Latin letters (Latin bytes read
# as a CJK charset).
_SUSPICIOUS_RE = re.compile(
    "[\u0080-\u00bf\u00d7\u00f7\u0192\u2020\u2021\u02c6\u2030\u2039\u203a\u02dc\u201a"
    "\u201e\ue000-\uf8ff\ufffd]"
)
_CJK = "\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff"
_GLUED_CJK_RE = re.compile(f"[A-Za-z][{_CJK}]|[{_CJK}](?=[A-Za-z])")


def mojibake_score(text: str) -> int:
    """How many characters look like a wrong decoding (lower is more plausible)."""
    if text.isascii():
        return 0
    return len(_SUSPICIOUS_RE.findall(text)) + len(_GLUED_CJK_RE.findall(text))


def _utf8_or_fallback(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return decode_fallback(data), FALLBACK


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None and text not in notes:
        notes.append(text)
