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

Rendering cost is bounded, since a hostile sender chooses the input: at most `INLINE_HTML_LIMIT` /
`INLINE_TEXT_LIMIT` characters are shown inline (with a note; the whole mail stays downloadable as
"raw"), the linkifier is linear, and HTML above `IN_PROCESS_HTML` is sanitised in a worker process under
`RENDER_BUDGET` (nh3's HTML5 tree builder needs time quadratic in the nesting of crafted markup: 500 KB of
nested ``<div>`` took minutes). HTML the sanitiser cannot finish in time is shown as its text.
"""
from __future__ import annotations

import html as _html
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import nh3

from . import budget
from .htmltext import html_to_text

__all__ = ["SanitizedHtml", "sanitize_html", "text_to_html"]
log = logging.getLogger(__name__)

INLINE_HTML_LIMIT = 2 * 1024 * 1024  # characters of a mail's HTML shown inline
INLINE_TEXT_LIMIT = 200_000  # characters of a plain-text mail shown inline
IN_PROCESS_HTML = 16 * 1024  # HTML this short is sanitised in process (nh3's worst case there: ~0.1 s)
RENDER_BUDGET = 5.0  # seconds nh3 may spend on one mail's HTML, in a worker process
MAX_QUOTE_DEPTH = 20  # deeper ">" quoting is shown at this depth


@dataclass(frozen=True)
class SanitizedHtml:
    html: str
    blocked_remote_images: int  # so the UI can offer "N remote images blocked - show"
    shown_as_text: bool = False  # too complex to sanitise in time: the HTML's text, with a note


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
    ``data-remote-image-blocked`` attribute so the UI can style it.

    Bounded: past `INLINE_HTML_LIMIT` the HTML is cut (nh3 closes what the cut leaves open) and a note
    says so; HTML that cannot be sanitised within `RENDER_BUDGET` is shown as its text, with a note."""
    html = html or ""
    note = ""
    if len(html) > INLINE_HTML_LIMIT:
        note = _cut_note(INLINE_HTML_LIMIT, len(html))
        html = html[:INLINE_HTML_LIMIT]
    token = secrets.token_hex(8)
    cleaned = _clean((html, allow_remote_images, token)) if len(html) <= IN_PROCESS_HTML \
        else _clean_in_a_process(html, allow_remote_images, token)
    if cleaned is None:
        return SanitizedHtml(_note("This mail's formatting is too complex to show safely, so only its text is "
                                   "shown. The “raw” link of this article downloads it as it was sent.")
                             + text_to_html(html_to_text(html)), 0, True)
    markup, blocked, cids = cleaned
    if cids:
        markup = _fill_in_images(markup, token, cids, cid_url)
    if blocked:
        # nh3 always serialises attributes as name="value", so the placeholder is exact.
        markup = markup.replace(f'src="{token}-remote"', f'{_SENTINEL_ATTR}=""')
    return SanitizedHtml(markup + note, blocked)


def _clean(work: tuple[str, bool, str]) -> tuple[str, int, list[str]]:
    """nh3 with our filter: (markup, remote images blocked, content ids). Module level, so that a worker
    process can run it. Image sources come out as placeholders made of `token` (``<token>-remote``,
    ``<token>-cid-<n>`` for ``cids[n]``), filled in by the caller: the URL of an inline image is only
    known where the request is."""
    html, allow_remote_images, token = work
    blocked = 0
    cids: list[str] = []
    sentinel = f"{token}-remote"
    produced: set[str] = {sentinel}  # relative URLs this filter itself emitted

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
                if not cid:
                    return None
                placeholder = f"{token}-cid-{len(cids)}"
                cids.append(cid)
                produced.add(placeholder)
                return placeholder
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
        html,
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
    return cleaned, blocked, cids


def _clean_in_a_process(html: str, allow_remote_images: bool,
                        token: str) -> tuple[str, int, list[str]] | None:
    """`_clean` in a worker process under `RENDER_BUDGET`; None if it overran or failed."""
    work = (html, allow_remote_images, token)
    try:
        [result] = budget.shared_pool(budget.DEFAULT_SIZE).map(_clean, [work], RENDER_BUDGET).result()
    except budget.PoolUnavailable as exc:
        result = exc
    if isinstance(result, budget.PoolUnavailable):
        log.error("sanitising %s characters of HTML in process, without a time budget: %s", len(html), result)
        return _clean(work)
    if isinstance(result, Exception):
        log.warning("HTML of %s characters not sanitised (%s): shown as text", len(html), result)
        return None
    return result


_CID_PLACEHOLDER = r' src="{token}-cid-(\d+)"'


def _fill_in_images(markup: str, token: str, cids: list[str], cid_url: Callable[[str], str | None] | None) -> str:
    urls: dict[str, str | None] = {}

    def url_of(m: re.Match[str]) -> str:
        cid = cids[int(m.group(1))]
        if cid not in urls:
            urls[cid] = cid_url(cid) if cid_url is not None else None
        url = urls[cid]
        return f' src="{_html.escape(url, quote=True)}"' if url else ""

    return re.sub(_CID_PLACEHOLDER.format(token=token), url_of, markup)


def _note(text: str) -> str:
    return f'<p class="mail-note"><em>{_html.escape(text)}</em></p>'


def _cut_note(shown: int, total: int) -> str:
    return _note(f"This mail is too long to show here in full: the first {shown:,} of its {total:,} "
                 "characters are shown. The “raw” link of this article downloads all of it.")


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

_ATEXT = "A-Za-z0-9.!#$%&'*+/=?^_`{|}~-"  # what an address's local part is made of
_ATEXT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.!#$%&'*+/=?^_`{|}~-")
_URLISH = r"(?P<url>(?:https?://|www\.)[^\s<>\"']+)|(?P<mailto>mailto:[^\s<>\"']+)"
_EMAIL = rf"(?P<email>[{_ATEXT}]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
# An address is looked for only where a run of local-part characters starts: tried at every position of a
# long run without "@", the pattern took time quadratic in its length (30 KB: 5.6 s a page view). Where a
# link ends inside such a run, the next may start right there, as it always could (see _links).
_LINK_RE = re.compile(rf"{_URLISH}|(?<![{_ATEXT}]){_EMAIL}", re.I)
_URLISH_RE = re.compile(_URLISH, re.I)
_EMAIL_RE = re.compile(_EMAIL, re.I)
_ATEXT_RUN_RE = re.compile(f"[{_ATEXT}]*")
_TRAILING_PUNCT = ".,;:!?'\")]}>"
_QUOTE_PREFIX_RE = re.compile(r"^((?:>[ \t]?)+)")


def text_to_html(text: str, *, limit: int | None = INLINE_TEXT_LIMIT) -> str:
    """Escaped plain text with clickable links; quoted lines (``>``) become nested
    ``<blockquote type="cite">`` (at most `MAX_QUOTE_DEPTH` deep) so the UI can style or collapse them.
    Line breaks are ``<br>``; the container should use ``white-space: pre-wrap`` to keep runs of spaces.
    Past ``limit`` characters the text is cut, with a note (None: no limit, for the mail we send)."""
    text = text or ""
    note = ""
    if limit is not None and len(text) > limit:
        note = _cut_note(limit, len(text))
        text = text[:limit]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    depth = 0
    pending_br = False
    for line in lines:
        m = _QUOTE_PREFIX_RE.match(line)
        level = min(m.group(1).count(">"), MAX_QUOTE_DEPTH) if m else 0
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
    return "".join(out) + note


def _links(line: str):
    """The links in `line`, left to right: the matches ``finditer`` of url|mailto|email gives, in linear time.

    Right after a link that ends inside a run of local-part characters, an address may start; whether one
    does depends only on what follows the run, so that is found out once a run."""
    pos = 0
    run_end, run_has_address = -1, False
    while True:
        m = None
        if pos and line[pos - 1] in _ATEXT_CHARS:
            m = _URLISH_RE.match(line, pos)
            if m is None:
                if pos >= run_end:
                    run_end = _ATEXT_RUN_RE.match(line, pos).end()
                    run_has_address = _EMAIL_RE.match(line, pos) is not None
                if run_has_address:
                    m = _EMAIL_RE.match(line, pos)
        m = m or _LINK_RE.search(line, pos)
        if m is None:
            return
        yield m
        pos = m.end()


def _linkify(line: str) -> str:
    parts: list[str] = []
    pos = 0
    for m in _links(line):
        target = m.group(0)
        end = len(target)
        opening, closing = target.count("("), target.count(")")
        while end and target[end - 1] in _TRAILING_PUNCT:  # "(" is not trailing punctuation: counted once
            if target[end - 1] == ")":
                if opening >= closing:
                    break
                closing -= 1
            end -= 1
        target = target[:end]
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
