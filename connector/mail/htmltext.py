"""Plain text from mail HTML, for search and for mails that have no text/plain part.

Regular expressions and one pass over the tags rather than an HTML parser: this runs for every
HTML-only mail during ingestion, must be cheap, and only has to produce readable text (tags out,
line structure kept), not a DOM. Every pattern takes time linear in its input: each stops at the
next ``<`` or at a literal end, so unclosed tags cannot make it quadratic, and a pattern that starts
with a run of white space only starts where such a run starts (tried at every position of a run of a
million spaces, the block pattern took minutes).
"""
from __future__ import annotations

import html
import re

_INVISIBLE = ("script", "style", "head", "title", "xml", "noscript", "template")
_DROP_OPEN_RE = re.compile(rf"<({'|'.join(_INVISIBLE)})\b[^<>]*>", re.I)
_DROP_CLOSE_RE = {name: re.compile(rf"</{name}\s*>", re.I) for name in _INVISIBLE}
_COMMENT_RE = re.compile(
    r"<!--.*?(?:-->|$)|<!\[CDATA\[.*?(?:\]\]>|$)|<![^<>]*>|<\?[^<>]*>", re.S
)
_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)[^<>]*>")
_BLOCKS = frozenset(
    "p div tr table tbody thead tfoot ul ol li h1 h2 h3 h4 h5 h6 blockquote pre hr dl dt dd "
    "center section article header footer address form fieldset figure nav main aside".split()
)
_BLOCK = "\x00"  # marker for a block boundary, resolved after entities are decoded
_BLOCK_RUN_RE = re.compile(r"(?:\n|(?<![ \t]))[ \t]*\x00(?:[ \t]*\x00)*")
_SPACES_RE = re.compile(r"[ \t\f\v\u00a0\u200b]+")
_LINE_EDGE_RE = re.compile(r" *\n *")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")
_LONG_CHARREF_RE = re.compile(r"&#(?:([xX])([0-9a-fA-F]{9,})|([0-9]{9,}));?")


def _short_charref(m: re.Match[str]) -> str:
    """A numeric character reference with many digits, as html.unescape would read it: leading zeros
    dropped; a number beyond Unicode is U+FFFD whatever its length."""
    digits = (m.group(2) or m.group(3)).lstrip("0")
    if len(digits) > 8:
        return "\ufffd"
    return f"&#{m.group(1) or ''}{digits or '0'};"


def _drop_invisible(markup: str) -> str:
    """Remove script/style/head/... elements with their content; an unclosed one runs to the
    end of the document, as in a browser."""
    out: list[str] = []
    pos = 0
    while True:
        m = _DROP_OPEN_RE.search(markup, pos)
        if m is None:
            out.append(markup[pos:])
            return "".join(out)
        out.append(markup[pos:m.start()])
        close = _DROP_CLOSE_RE[m.group(1).lower()].search(markup, m.end())
        if close is None:
            return "".join(out)
        pos = close.end()


class _TagText(dict):
    """(slash, tag name as written) -> what the tag becomes in the text: a block boundary (with "- " for an
    opening <li>), a line break for <br>, a space for a closing cell, else nothing. Each spelling is worked
    out once and remembered (a mail uses few); at most `LIMIT` are kept, as tag names are the sender's."""

    LIMIT = 4096

    def __missing__(self, key: tuple[str, str]) -> str:
        slash, name = key
        name = name.lower()
        if name in _BLOCKS:
            value = _BLOCK + "- " if name == "li" and not slash else _BLOCK
        elif name == "br":
            value = "\n"
        else:
            value = " " if slash and name in ("td", "th") else ""
        if len(self) < self.LIMIT:
            self[key] = value
        return value


_TAG_TEXT = _TagText()


def html_to_text(markup: str) -> str:
    """Strip tags, keep line breaks at ``<br>`` and block elements, unescape entities."""
    if not markup:
        return ""
    text = _COMMENT_RE.sub("", _drop_invisible(markup.replace(_BLOCK, "")))
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    # _TAG_RE.split gives [text, "/" or "", name, text, ...]: the tags are found in C, and each is replaced by
    # a dictionary lookup (one per distinct spelling of a tag), not by a branch in Python per tag.
    pieces = _TAG_RE.split(text)
    pieces[1::3] = map(_TAG_TEXT.__getitem__, zip(pieces[1::3], pieces[2::3]))
    del pieces[2::3]
    text = "".join(pieces)
    if "&" in text:
        # html.unescape turns &#0; into U+FFFD, so block markers stay ours; it cannot read numeric
        # references longer than Python's int limit (4300 digits), so those are shortened first.
        text = html.unescape(_LONG_CHARREF_RE.sub(_short_charref, text))
    # Adjacent block boundaries make one line break (Outlook wraps every line in <p> or <div>),
    # and a <br> right before a block boundary adds nothing, as in a browser. A block holding
    # only &nbsp; is a blank line, so this runs before non-breaking spaces become spaces.
    text = _BLOCK_RUN_RE.sub("\n", text)
    text = _SPACES_RE.sub(" ", text)
    text = _LINE_EDGE_RE.sub("\n", text)
    text = _MANY_NEWLINES_RE.sub("\n\n", text)
    return text.strip()


_IMG_RE = re.compile(r"<img\b", re.I)
_INVISIBLE_ENTITY_RE = re.compile(r"&(?:nbsp|#160|#x0*a0|zwnj|zwj|shy|#8203|#x200b);?", re.I)
_VISIBLE_RE = re.compile(r"[^\s\u00a0\u200b\u200c\u200d\u00ad]")


def html_shows_something(markup: str) -> bool:
    """Does this HTML show anything: text outside tags (not only spaces and &nbsp;), or an image?

    multipart/alternative falls back to its plain text when it does not (some senders put an empty
    HTML document beside the real text). Linear, and cheaper than `html_to_text`: it stops at the first
    visible character."""
    if not markup:
        return False
    if _IMG_RE.search(markup):
        return True
    text = _COMMENT_RE.sub("", _drop_invisible(markup.replace(_BLOCK, "")))
    pos = 0
    for m in _TAG_RE.finditer(text):
        if _VISIBLE_RE.search(_INVISIBLE_ENTITY_RE.sub("", text[pos:m.start()])):
            return True
        pos = m.end()
    return bool(_VISIBLE_RE.search(_INVISIBLE_ENTITY_RE.sub("", text[pos:])))
