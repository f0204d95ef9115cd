"""One article as the ticket page shows it: its display model (mail/display.py) joined with its rows.

Text parts become escaped HTML here (bounded, as `text_to_html` bounds a mail's text), HTML parts become
frames that load one slice of `body_html` each, images and forwarded mails are placed where the mail has
them, and each attachment is listed where it belongs. Articles without a model (outgoing mail, mail whose
re-reading failed) are shown as before: their HTML in one frame, else their text, and their attachments.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from markupsafe import Markup

from ..mail.display import load
from ..mail.sanitize import INLINE_TEXT_LIMIT, text_to_html
from ..models import Article, Attachment

SHOWN_INLINE_IMAGES = {"image/png": "image/png", "image/jpeg": "image/jpeg", "image/jpg": "image/jpeg",
                       "image/pjpeg": "image/jpeg", "image/gif": "image/gif", "image/webp": "image/webp"}


@dataclass
class Shown:
    """One thing the page shows: "text" (`markup`), "html" (a frame for part `part`, None: the whole
    body_html), "image" (`file`), or "mail" (a forwarded mail: `headers`, `nodes`, `files`, its .eml `file`)."""

    kind: str
    markup: Markup | None = None
    part: int | None = None
    file: Attachment | None = None
    headers: dict = field(default_factory=dict)
    nodes: list["Shown"] = field(default_factory=list)
    files: list[Attachment] = field(default_factory=list)


@dataclass
class ArticleView:
    nodes: list[Shown]
    files: list[Attachment]  # attachments listed under the mail
    shows_text: bool  # False: the page says the mail has no text


def html_parts(model: dict) -> list[dict]:
    """The HTML nodes of a model in page order: the frame of part k shows the k-th."""
    out: list[dict] = []

    def walk(nodes: list) -> None:
        for node in nodes:
            if node.get("t") == "html":
                out.append(node)
            elif node.get("t") == "mail":
                walk(node.get("nodes") or [])
    walk(model.get("nodes") or [])
    return out


def model_of(article: Article) -> dict | None:
    """The article's display model, if it has one that fits its stored attachments."""
    model = load(article.display)
    if model is None or model.get("n") != len(article.attachments):
        return None
    return model


def view(article: Article) -> ArticleView:
    model = model_of(article)
    if model is None:
        return _legacy(article)
    return _Renderer(article).view(model)


class _Renderer:
    def __init__(self, article: Article) -> None:
        self.article = article
        self.text = article.body_text or ""
        self.attachments = list(article.attachments)
        self.left = INLINE_TEXT_LIMIT  # characters of text shown inline, over all text parts
        self.html_part = 0

    def view(self, model: dict) -> ArticleView:
        nodes = self.nodes(model.get("nodes") or [])
        return ArticleView(nodes, self.files(model.get("files") or []), _shows(nodes))

    def file(self, index) -> Attachment | None:
        return self.attachments[index] if isinstance(index, int) and 0 <= index < len(self.attachments) else None

    def files(self, indexes: list) -> list[Attachment]:
        return [f for f in (self.file(i) for i in indexes) if f is not None]

    def slice(self, span) -> str:
        try:
            start, end = int(span[0]), int(span[1])
        except (TypeError, ValueError, IndexError):
            return ""
        return self.text[max(0, start):max(0, end)]

    def nodes(self, nodes: list) -> list[Shown]:
        out: list[Shown] = []
        for node in nodes:
            kind = node.get("t")
            if kind == "text":
                text = self.slice(node.get("r"))
                limit = max(0, self.left)
                self.left -= min(len(text), limit)
                out.append(Shown("text", Markup(text_to_html(text, limit=limit)), file=self.file(node.get("a"))))
            elif kind == "html":
                out.append(Shown("html", part=self.html_part, file=self.file(node.get("a"))))
                self.html_part += 1
            elif kind == "image":
                image = self.file(node.get("a"))
                if image is not None and image.content_type in SHOWN_INLINE_IMAGES:
                    out.append(Shown("image", file=image))
            elif kind == "mail":
                headers = {k: str(node.get(k) or "") for k in ("from", "to", "cc", "date", "subject")}
                out.append(Shown("mail", file=self.file(node.get("a")), headers=headers,
                                 nodes=self.nodes(node.get("nodes") or []), files=self.files(node.get("files") or [])))
        return out


def _shows(nodes: list[Shown]) -> bool:
    return any(n.kind != "text" or n.markup for n in nodes)


def _legacy(article: Article) -> ArticleView:
    """As the page showed every mail before the display model: the HTML, else the text; every attachment
    except the images the HTML shows."""
    html = article.body_html or ""
    if html:
        nodes = [Shown("html")]
    else:
        text = article.body_text or ""
        nodes = [Shown("text", Markup(text_to_html(text)))] if text.strip() else []
    lowered = html.lower()
    files = [a for a in article.attachments
             if not (a.content_id and f"cid:{a.content_id.strip('<>').lower()}" in lowered)]
    return ArticleView(nodes, files, _shows(nodes))
