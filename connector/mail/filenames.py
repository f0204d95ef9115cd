"""Attachment names as senders wrote them are hostile: made safe to show and to download.

A name is chosen by whoever sent the mail. Bidi controls (U+202E RIGHT-TO-LEFT OVERRIDE and its
kin) make "invoice\u202Efdp.exe" look like "invoiceexe.pdf", so every format and control character
is removed before a name is shown or offered for download (the stored name stays as received).
ZWNJ and ZWJ are kept: Persian and Indic names and emoji need them and they reorder nothing.
HTTP headers are Latin-1 on the wire (gunicorn refuses anything else with a 500), so a download
names the file twice, as RFC 6266 says: an ASCII fallback, and the real name RFC 5987-encoded.
"""
from __future__ import annotations

import unicodedata
from urllib.parse import quote

__all__ = ["display_filename", "content_disposition"]

FALLBACK_NAME = "attachment"
MAX_NAME = 200
_KEEP_FORMAT = {"\u200c", "\u200d"}  # ZERO WIDTH NON-JOINER / JOINER
_SPACES = {"Cc", "Zs", "Zl", "Zp"}  # line breaks and other controls become a plain space


def display_filename(name: str | None) -> str:
    """The name without controls, bidi and other invisible format characters, or path separators."""
    kept = []
    for ch in name or "":
        category = unicodedata.category(ch)
        if category == "Cf" and ch not in _KEEP_FORMAT or category == "Cs":
            continue
        kept.append("_" if ch in "/\\" else " " if category in _SPACES else ch)
    cleaned = " ".join("".join(kept).split()).strip(" .")
    if len(cleaned) > MAX_NAME:
        stem, extension = _split_extension(cleaned)
        cleaned = cleaned[:MAX_NAME - len(extension)].rstrip(" .") + extension
    return cleaned or FALLBACK_NAME


def _split_extension(name: str) -> tuple[str, str]:
    """("report", ".pdf"); an extension is short and plain, anything else is part of the stem."""
    stem, dot, extension = name.rpartition(".")
    if dot and stem and 0 < len(extension) <= 16 and extension.isalnum():
        return stem, "." + extension
    return name, ""


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(ch for ch in decomposed if " " <= ch <= "~" and ch not in '"\\%').split()).strip(" .")


def _ascii_fallback(name: str) -> str:
    stem, extension = _split_extension(name)
    stem, extension = _ascii(stem), _ascii(extension[1:])
    if not stem.strip("_-~ "):
        stem = FALLBACK_NAME
    return stem + ("." + extension if extension else "")


def content_disposition(disposition: str, filename: str | None) -> str:
    """`attachment; filename="ascii"` plus `filename*=UTF-8''...` whenever the ASCII form is not the name.

    Only Latin-1 (in fact ASCII) reaches the header, whatever the name: any WSGI server can send it."""
    name = display_filename(filename)
    fallback = _ascii_fallback(name)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != name:
        value += "; filename*=UTF-8''" + quote(name, safe="!#$&+-.^_`|~")
    return value
