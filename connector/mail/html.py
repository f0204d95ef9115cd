"""Mail HTML made safe to show to agents inside our own pages, and plain text shown as HTML.

Mail HTML is attacker-controlled and rendered in an authenticated session, so the sanitiser is
an allow-list (nh3/ammonia) and every URL-bearing attribute goes through one filter that decides
what may load: links only to http(s)/mailto/tel, inline ``cid:`` images rewritten to our own
attachment URL, ``data:`` images of raster types, and remote images only when the agent asked
for them (they are read receipts: loading one tells the sender the mail was opened, and from
where).

Inline ``style``: kept, but only an allow-list of properties whose values cannot load anything
or escape the message pane. Mail layout lives almost entirely in inline styles (colours, quote
bars, table widths), and dropping them would also make ``display:none`` preheaders of newsletters
visible. Removed: anything with ``url(``/``image(``/``expression(``/CSS escapes (remote loads
and filter bypasses), ``position``/``z-index``/``float``/negative margins and offsets (content
placed over our own UI, e.g. a fake login box), and ``behavior``/``-moz-binding``/``content``.
``class`` and ``id`` are dropped so a mail cannot borrow our page's CSS classes or anchors, and
``<style>`` blocks are removed with their content (they would apply to the whole page).
"""
from __future__ import annotations

import html as _html
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import nh3

__all__ = ["SanitizedHtml", "sanitize_html", "text_to_html"]


@dataclass(frozen=True)
class SanitizedHtml:
    html: str
    blocked_remote_images: int  # so the UI can offer "N remote images blocked - show"


_TAGS = {
    "a", "abbr", "acronym", "address", "article", "aside", "b", "bdi", "bdo", "big",
    "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup", "dd", "del",
    "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "footer", "h1",
    "h2", "h3", "h4", "h5", "h6", "header", "hr", "i", "img", "ins", "kbd", "li", "mark", "nav",
    "ol", "p", "pre", "q", "s", "samp", "section", "small", "span", "strike", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt", "u",
    "ul", "var", "wbr",
}
# Removed together with their content; everything else not in _TAGS is unwrapped (text kept).
_CLEAN_CONTENT_TAGS = {"script", "style", "title", "noscript", "template", "xml", "iframe",
                       "object", "embed", "applet", "frameset", "frame", "select", "textarea",
                       "svg", "math", "head"}
_GENERIC_ATTRS = {"align", "valign", "dir", "lang", "title", "style", "width", "height",
                  "bgcolor"}
_ATTRIBUTES: dict[str, set[str]] = {
    "*": _GENERIC_ATTRS,
    "a": {"href"},
    "img": {"src", "alt", "border", "hspace", "vspace"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "summary", "frame", "rules"},
    "td": {"colspan", "rowspan", "nowrap", "headers", "scope"},
    "th": {"colspan", "rowspan", "nowrap", "headers", "scope", "abbr"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value", "type"},
    "hr": {"size", "noshade"},
    "blockquote": {"type"},
    "time": {"datetime"},
    "bdo": {"dir"},
    "details": {"open"},
}
# Every scheme any URL attribute may carry; which one is allowed where is decided in the filter.
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_LINK_SCHEMES = ("http:", "https:", "mailto:", "tel:")
_DATA_IMAGE_RE = re.compile(r"^data:image/(?:png|gif|jpe?g|webp|bmp);base64,[A-Za-z0-9+/=\s]*$",
                            re.I)

_STYLE_PROPERTIES = {
    "color", "background", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "font-variant", "text-align", "text-decoration", "text-indent",
    "text-transform", "letter-spacing", "word-spacing", "line-height", "white-space",
    "word-wrap", "word-break", "overflow-wrap", "vertical-align", "direction", "display",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left", "padding",
    "padding-top", "padding-right", "padding-bottom", "padding-left", "border", "border-top",
    "border-right", "border-bottom", "border-left", "border-color", "border-style",
    "border-width", "border-top-color", "border-right-color", "border-bottom-color",
    "border-left-color", "border-top-style", "border-right-style", "border-bottom-style",
    "border-left-style", "border-top-width", "border-right-width", "border-bottom-width",
    "border-left-width", "border-radius", "border-collapse", "border-spacing", "width",
    "height", "min-width", "max-width", "min-height", "max-height", "list-style-type",
    "list-style-position", "table-layout", "caption-side", "empty-cells", "text-overflow",
    "overflow", "clear", "visibility",
}
_STYLE_BAD_VALUE_RE = re.compile(
    r"url\s*\(|image\s*\(|image-set|expression|javascript|vbscript|\\|@|<|>|/\*|&#|(?:^|[\s,(])-\s*[\d.]",
    re.I,
)
_SENTINEL_ATTR = "data-remote-image-blocked"


def sanitize_html(html: str, *, allow_remote_images: bool = False,
                  cid_url: Callable[[str], str | None] | None = None) -> SanitizedHtml:
    """Allow-list sanitising for display. ``cid_url(content_id)`` maps an inline image to our
    download URL (None drops the image source); remote http(s) images are removed, and counted,
    unless ``allow_remote_images``. A blocked image keeps its ``alt`` text and is marked with a
    ``data-remote-image-blocked`` attribute so the UI can style it."""
    blocked = 0
    sentinel = "remote-image-blocked-" + secrets.token_hex(8)
    produced: set[str] = {sentinel}  # relative URLs this filter itself emitted (cid_url results)

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        if attr == "style":
            return _filter_style(value)
        if attr == "href":
            return value if value.strip().lower().startswith(_LINK_SCHEMES) else None
        if attr == "src":
            if tag != "img":
                return None
            low = value.strip().lower()
            if low.startswith("cid:"):
                cid = unquote(value.strip()[4:]).strip().strip("<>")
                url = cid_url(cid) if (cid_url is not None and cid) else None
                if url:
                    produced.add(url)
                return url or None
            if low.startswith(("http:", "https:")):
                if allow_remote_images:
                    return value
                blocked += 1
                return sentinel
            if _DATA_IMAGE_RE.match(value.strip()):
                return value.strip()
            return None
        return value

    cleaned = nh3.clean(
        html or "",
        tags=_TAGS,
        clean_content_tags=_CLEAN_CONTENT_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=attribute_filter,
        strip_comments=True,
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes=_URL_SCHEMES,
        # nh3 checks relative URLs after the attribute filter: let through only our own.
        url_relative=lambda url: url if url in produced else None,
        filter_style_properties=_STYLE_PROPERTIES,
    )
    if blocked:
        # nh3 always serialises attributes as name="value", so the sentinel is exact.
        cleaned = cleaned.replace(f'src="{sentinel}"', f'{_SENTINEL_ATTR}=""')
    return SanitizedHtml(cleaned, blocked)


def _filter_style(value: str) -> str | None:
    kept: list[str] = []
    for decl in value.split(";"):
        prop, sep, val = decl.partition(":")
        prop = prop.strip().lower()
        val = val.strip()
        if not sep or prop not in _STYLE_PROPERTIES or not val or _STYLE_BAD_VALUE_RE.search(val):
            continue
        kept.append(f"{prop}: {val}")
    return "; ".join(kept) if kept else None


# --- Plain text as HTML ------------------------------------------------------------------------

_LINK_RE = re.compile(
    r"(?P<url>(?:https?://|www\.)[^\s<>\"']+)"
    r"|(?P<mailto>mailto:[^\s<>\"']+)"
    r"|(?P<email>[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)",
    re.I,
)
_TRAILING_PUNCT = ".,;:!?'\")]}>"
_QUOTE_PREFIX_RE = re.compile(r"^((?:>[ \t]?)+)")


def text_to_html(text: str) -> str:
    """Escaped plain text with clickable links; quoted lines (``>``) become nested
    ``<blockquote type="cite">`` so the UI can style or collapse them. Line breaks are ``<br>``;
    the container should use ``white-space: pre-wrap`` to keep runs of spaces."""
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    depth = 0
    pending_br = False
    for line in lines:
        m = _QUOTE_PREFIX_RE.match(line)
        level = m.group(1).count(">") if m else 0
        content = line[m.end():] if m else line
        if level != depth:
            out.append("</blockquote>" * (depth - level) if level < depth
                       else '<blockquote type="cite">' * (level - depth))
            depth = level
            pending_br = False
        if pending_br:
            out.append("<br>\n")
        out.append(_linkify(content))
        pending_br = True
    out.append("</blockquote>" * depth)
    return "".join(out)


def _linkify(line: str) -> str:
    parts: list[str] = []
    pos = 0
    for m in _LINK_RE.finditer(line):
        target = m.group(0)
        trail = ""
        while target and target[-1] in _TRAILING_PUNCT:
            if target[-1] == ")" and target.count("(") >= target.count(")"):
                break
            trail = target[-1] + trail
            target = target[:-1]
        if not target or (m.group("email") is None and len(target) < 8):
            continue
        parts.append(_html.escape(line[pos:m.start()]))
        if m.group("email") is not None:
            href = "mailto:" + target
        elif target.lower().startswith("www."):
            href = "http://" + target
        else:
            href = target
        parts.append(f'<a href="{_html.escape(href, quote=True)}" rel="noopener noreferrer" '
                     f'target="_blank">{_html.escape(target)}</a>')
        pos = m.start() + len(target)
    parts.append(_html.escape(line[pos:]))
    return "".join(parts)
