"""Plain text from mail HTML, for search and for mails that have no text/plain part.

Regular expressions rather than an HTML parser: this runs once per ingested HTML-only mail, must be
cheap, and only has to produce readable text (tags out, line structure kept), not a DOM.
"""
from __future__ import annotations

import html
import re

_DROP_RE = re.compile(
    r"<(script|style|head|title|xml|noscript|template)\b[^>]*>.*?</\1\s*>", re.S | re.I
)
_COMMENT_RE = re.compile(r"<!--.*?(?:-->|$)|<!\[CDATA\[.*?\]\]>|<![^>]*>|<\?[^>]*>", re.S)
_BR_RE = re.compile(r"<br\b[^>]*>", re.I)
_LI_RE = re.compile(r"<li\b[^>]*>", re.I)
_CELL_RE = re.compile(r"</t[dh]\s*>", re.I)
_BLOCK_RE = re.compile(
    r"</?(?:p|div|tr|table|tbody|thead|tfoot|ul|ol|li|h[1-6]|blockquote|pre|hr|dl|dt|dd|center"
    r"|section|article|header|footer|address|form|fieldset|figure|nav|main|aside)\b[^>]*>",
    re.I,
)
_TAG_RE = re.compile(r"<[^>]*>")
_SPACES_RE = re.compile(r"[ \t\f\v\u00a0\u200b]+")
_LINE_EDGE_RE = re.compile(r" *\n *")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")


def html_to_text(markup: str) -> str:
    """Strip tags, keep line breaks at ``<br>`` and block elements, unescape entities."""
    if not markup:
        return ""
    text = _DROP_RE.sub("", markup)
    text = _COMMENT_RE.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ")
    text = _BR_RE.sub("\n", text)
    text = _LI_RE.sub("\n- ", text)
    text = _CELL_RE.sub(" ", text)
    text = _BLOCK_RE.sub("\n", text)
    text = _TAG_RE.sub("", text)
    text = html.unescape(text)
    text = _SPACES_RE.sub(" ", text)
    text = _LINE_EDGE_RE.sub("\n", text)
    text = _MANY_NEWLINES_RE.sub("\n\n", text)
    return text.strip()
