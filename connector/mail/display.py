"""What a mail shows, in order: the display model that parse.py builds and the ticket page renders.

The walk of the MIME tree (parse.py `_Walker`) returns nodes: text, HTML, an image shown in place, a
forwarded mail (with its own nodes and attachments), and a multipart/alternative (the option chosen
for display, with the plain text beside it). `assemble` turns them into what an article stores:

- ``body_text``: the text of the mail for search and the REST API, as before: each text part, the plain
  text of an alternative (else the text of its HTML), and each forwarded mail as a block
  ("---------- Forwarded message ----------", its From, Date, Subject, To, Cc, then its text), joined
  by line breaks;
- ``body_html``: every HTML part that is shown, joined by line breaks (the sandboxed frames show
  slices of it);
- ``display``: the nodes as compact JSON, each text and HTML node a [start, end) slice of the two
  strings above (no text is stored twice), attachments by their position in the mail's attachment
  list. Version 1::

      {"v": 1, "n": <attachments>, "nodes": [...], "files": [<attachments listed at the top>]}
      {"t": "text", "r": [s, e], "a": <attachment that holds the same part, to download>}
      {"t": "html", "r": [s, e], "alt": [s, e] (the plain text to show if the HTML cannot be), "a": ...}
      {"t": "image", "a": <attachment>}
      {"t": "mail", "a": <the .eml>, "from", "to", "cc", "date", "subject", "nodes": [...], "files": [...]}

`files` lists the attachments to offer for download where they belong (the mail, or a forwarded mail),
in order; an image that the HTML beside it shows (``cid:``) is not listed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Union

from .htmltext import html_shows_something, html_to_text

VERSION = 1
FORWARD_MARK = "---------- Forwarded message ----------"


@dataclass
class Text:
    text: str
    file: int | None = None  # the same part as an attachment (a named inline text part stays downloadable)


@dataclass
class Html:
    html: str
    file: int | None = None


@dataclass
class Image:
    file: int


@dataclass
class Alternative:
    """multipart/alternative: `shown`, the nodes of the option shown; `plain`, the first plain text of
    the options (search text, and what is shown if the HTML cannot be)."""

    shown: list["Node"]
    plain: str | None


@dataclass
class Mail:
    """A forwarded (attached) mail, shown as a quoted mail."""

    file: int | None
    headers: dict[str, str]  # from, to, cc, date, subject: display text, "" if absent
    nodes: list["Node"] = field(default_factory=list)
    files: list[int] = field(default_factory=list)


Node = Union[Text, Html, Image, Alternative, Mail]


def visible(nodes: list[Node]) -> bool:
    """Does any node show something (text that is not blank, HTML, an image, a forwarded mail)?"""
    for node in nodes:
        if isinstance(node, Text) and node.text.strip():
            return True
        if isinstance(node, (Html, Image, Mail)):
            return True
        if isinstance(node, Alternative) and (visible(node.shown) or (node.plain or "").strip()):
            return True
    return False


def html_nodes(nodes: list[Node]) -> list[Html]:
    out: list[Html] = []
    for node in nodes:
        if isinstance(node, Html):
            out.append(node)
        elif isinstance(node, Alternative):
            out += html_nodes(node.shown)
    return out


def plain_text(nodes: list[Node]) -> str:
    """The text of the text nodes (not HTML), joined as body_text joins them."""
    return "\n".join(n.text.strip("\n") for n in nodes if isinstance(n, Text) and n.text.strip())


def choose_alternative(options: list[list[Node]]) -> list[Node]:
    """multipart/alternative (RFC 2046): the options are the same content, the last the richest. Shown: the
    last option with HTML that shows something, else the first with text, else the last that shows
    anything; beside it the first plain text (search, and what shows if the HTML cannot)."""
    plain = None
    for nodes in options:
        text = plain_text(nodes)
        if text.strip():
            plain = text
            break
    shown = next((nodes for nodes in reversed(options)
                  if any(html_shows_something(h.html) for h in html_nodes(nodes))), None)
    if shown is None and plain is not None:
        shown = next(nodes for nodes in options if plain_text(nodes).strip())
        shown = [n for n in shown if not isinstance(n, Html)]
    if shown is None:
        shown = next((nodes for nodes in reversed(options) if visible(nodes)), None)
    if shown is None:  # nothing shows anything: keep the HTML as it was (search text, raw view)
        shown = next((nodes for nodes in reversed(options) if html_nodes(nodes)), [])
    return [Alternative(shown, plain)] if shown or plain is not None else []


@dataclass
class Assembled:
    body_text: str
    body_html: str | None
    display: str  # JSON


class _Builder:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.text_len = 0
        self.htmls: list[str] = []
        self.html_len = 0
        self.blank_line = False  # the next text starts after a blank line (after a forwarded mail's headers)

    def text(self, text: str) -> list[int] | None:
        """Add to body_text (line breaks at the ends dropped; nothing if blank); its slice."""
        text = text.strip("\n")
        if not text.strip():
            return None
        if self.texts:
            separator = "\n\n" if self.blank_line else "\n"
            self.texts.append(separator)
            self.text_len += len(separator)
        self.blank_line = False
        start = self.text_len
        self.texts.append(text)
        self.text_len += len(text)
        return [start, self.text_len]

    def html(self, html: str) -> list[int]:
        if self.htmls:
            self.htmls.append("\n")
            self.html_len += 1
        start = self.html_len
        self.htmls.append(html)
        self.html_len += len(html)
        return [start, self.html_len]

    def nodes(self, nodes: list[Node]) -> list[dict]:
        out: list[dict] = []
        for node in nodes:
            if isinstance(node, Text):
                span = self.text(node.text)
                if span is not None:
                    out.append(_with_file({"t": "text", "r": span}, node.file))
            elif isinstance(node, Html):
                alt = self.text(html_to_text(node.html))
                out.append(_with_file(_html_node(self.html(node.html), alt), node.file))
            elif isinstance(node, Image):
                out.append({"t": "image", "a": node.file})
            elif isinstance(node, Alternative):
                out += self._alternative(node)
            elif isinstance(node, Mail):
                out.append(self._mail(node))
        return out

    def _alternative(self, node: Alternative) -> list[dict]:
        plain = node.plain if node.plain is not None and node.plain.strip() else None
        shown_html = html_nodes(node.shown)
        if plain is None:
            if not shown_html:
                return self.nodes(node.shown)
            # no plain text: the search text is the text of the HTML, as one piece
            alt = self.text(html_to_text("\n".join(h.html for h in shown_html)))
            out = self._shown(node.shown)
            if len(shown_html) == 1:
                for item in out:
                    if item["t"] == "html":
                        _set_alt(item, alt)
            return out
        span = self.text(plain)
        if not shown_html:  # the plain option is the one shown
            return [{"t": "text", "r": span}] + [n for n in self._shown(node.shown) if n["t"] != "text"]
        out = self._shown(node.shown)
        if len(shown_html) == 1:
            for item in out:
                if item["t"] == "html":
                    _set_alt(item, span)
        return out

    def _shown(self, nodes: list[Node]) -> list[dict]:
        """The shown option's nodes, adding its HTML (not its text: the alternative gave that)."""
        out: list[dict] = []
        for node in nodes:
            if isinstance(node, Html):
                out.append(_with_file(_html_node(self.html(node.html), None), node.file))
            elif isinstance(node, Alternative):
                out += self._shown(node.shown)
            elif isinstance(node, Text):
                continue
            else:
                out += self.nodes([node])
        return out

    def _mail(self, node: Mail) -> dict:
        h = node.headers
        block = [FORWARD_MARK] + [f"{label}: {h[key]}" for key, label in
                                  (("from", "From"), ("date", "Date"), ("subject", "Subject"), ("to", "To"),
                                   ("cc", "Cc")) if h.get(key)]
        self.text("\n".join(block))
        self.blank_line = True
        item = {"t": "mail", "a": node.file, **{k: h.get(k, "") for k in ("from", "to", "cc", "date", "subject")}}
        item["nodes"] = self.nodes(node.nodes)
        item["files"] = list(node.files)
        self.blank_line = False
        return item


def _html_node(span: list[int], alt: list[int] | None) -> dict:
    item: dict = {"t": "html", "r": span}
    _set_alt(item, alt)
    return item


def _set_alt(item: dict, alt: list[int] | None) -> None:
    if alt is not None:
        item["alt"] = alt
    else:
        item.pop("alt", None)


def _with_file(item: dict, file: int | None) -> dict:
    if file is not None:
        item["a"] = file
    return item


def assemble(nodes: list[Node], files: list[int], attachment_count: int) -> Assembled:
    builder = _Builder()
    model = {"v": VERSION, "n": attachment_count, "nodes": builder.nodes(nodes), "files": list(files)}
    body_html = "".join(builder.htmls) if builder.htmls else None
    return Assembled("".join(builder.texts), body_html, json.dumps(model, separators=(",", ":"),
                                                                    ensure_ascii=False))


def text_only(text: str) -> Assembled:
    """The display of a mail that is one text (the MIME structure could not be read)."""
    return assemble([Text(text)], [], 0)


def load(display: str | None) -> dict | None:
    """The stored model, or None if there is none or it is not one this code reads."""
    if not display:
        return None
    try:
        model = json.loads(display)
    except ValueError:
        return None
    return model if isinstance(model, dict) and model.get("v") == VERSION else None
