"""What a mail client shows, the agent sees: every real-world corpus mail's text, in Chromium.

The 108 mails of ../shared/corpus go the real way: delivered into Dovecot, imported by one sync pass
(one backlog, so from their headers; the bodies are extracted when the ticket page is opened, as they are
when an agent opens a ticket before the worker got to it). Then `connector serve` (on the same database)
shows each ticket in Chromium, and every text part of every mail must be on its article: its words in the
page's text or in the text of the article's mail frames, or the part listed there as an attachment.

Which parts a mail has, and their text, is read independently of connector's parser: the stdlib `email`
package with its modern policy, and the stdlib HTML parser for the text of HTML parts. Of a
multipart/alternative, one option must show (a mail client shows one); forwarded mails (message/rfc822)
count with every part of theirs.
"""
from __future__ import annotations

import email
import re
import unicodedata
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest
from playwright.sync_api import Page
from sqlalchemy import select

from bench.importing import with_message_id
from connector.blobs import read_blob
from connector.models import Article
from tests.conftest import require
from tests.corpus import CORPUS_DIR, corpus_names, load_mail
from tests.e2e.test_connect import sign_in
from tests.support.live import LiveServer
from tests.support.mail import connect, run_pass

WORDS = 25  # distinct words of a part looked for
SHOWN = 0.8  # share of them that must be on the page (a mail's text and its HTML differ in a word or two)
_WORD_RE = re.compile(r"[^\W\d_]{4,}")


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head", "title"):
            self.hidden += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head", "title") and self.hidden:
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden:
            self.out.append(data)


def words(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold()):
        seen.setdefault(word)
    return list(seen)


@dataclass
class TextPart:
    where: str  # e.g. "1.2" (part numbers, as IMAP counts them)
    ctype: str
    filename: str | None
    words: list[str]


@dataclass
class OneOf:
    """The options of a multipart/alternative: one of them must show."""
    where: str
    options: list[list]


def _text_of(part: EmailMessage) -> str:
    try:
        text = part.get_content()
    except Exception:  # noqa: BLE001 - an unknown charset: decode leniently
        data = part.get_payload(decode=True) or b""
        text = data.decode("utf-8", "replace")
    if not isinstance(text, str):
        return ""
    if part.get_content_subtype() == "html":
        parser = _HtmlText()
        parser.feed(text)
        text = " ".join(parser.out)
    return text


def expectations(part: EmailMessage, where: str = "1") -> list:
    """The text parts of a mail, as a mail client would have to show them."""
    ctype = part.get_content_type()
    if part.is_multipart():
        children = part.get_payload()
        if ctype == "message/rfc822" or not ctype.startswith("multipart/"):
            return [e for i, child in enumerate(children, 1) for e in expectations(child, f"{where}.{i}")]
        found = [expectations(child, f"{where}.{i}") for i, child in enumerate(children, 1)]
        if ctype == "multipart/alternative":
            options = [option for option in found if option]
            return [OneOf(where, options)] if options else []
        return [e for option in found for e in option]
    if part.get_content_maintype() != "text" or part.get_content_subtype() not in ("plain", "html"):
        return []
    found = words(_text_of(part))
    if not found:
        return []
    try:
        filename = part.get_filename()
    except Exception:  # noqa: BLE001
        filename = None
    return [TextPart(where, ctype, filename, found[:WORDS])]


@dataclass
class Shown:
    words: set[str]
    files: list[tuple[str, str]]  # (file name, "content/type, N bytes") of each download link


def shown(page: Page, article_id: int) -> Shown:
    article = page.locator(f"#article-{article_id}")
    texts = [article.inner_text()]
    for frame_element in article.locator("iframe.mail-html").all():
        frame_element.scroll_into_view_if_needed()
        frame = frame_element.element_handle().content_frame()
        frame.wait_for_load_state()
        page.wait_for_function("f => f.contentDocument && f.contentDocument.readyState === 'complete' "
                               "&& f.contentDocument.body", arg=frame_element.element_handle())
        texts.append(frame.locator("body").inner_text())
    files = [(link.inner_text(), link.locator("xpath=..").inner_text())
             for link in article.locator("ul.attachments li a").all()]
    return Shown(set(words(" ".join(texts))), files)


def missing(expected: list, on_page: Shown) -> list[str]:
    """What of `expected` is not on the page, as sentences."""
    problems = []
    for item in expected:
        if isinstance(item, OneOf):
            if not any(not missing(option, on_page) for option in item.options):
                problems.append(f"part {item.where} (multipart/alternative): no option shows: "
                                + "; ".join(p for option in item.options for p in missing(option, on_page)))
            continue
        seen = [w for w in item.words if w in on_page.words]
        if len(seen) >= SHOWN * len(item.words):
            continue
        if item.filename and any(_same_name(item.filename, name) for name, _ in on_page.files):
            continue
        if not item.filename and any(f"{item.ctype}," in line for _, line in on_page.files):
            continue
        problems.append(f"part {item.where} ({item.ctype}, file name {item.filename!r}): "
                        f"{len(seen)} of {len(item.words)} words shown, not listed as an attachment; "
                        f"missing {[w for w in item.words if w not in on_page.words][:8]}")
    return problems


def _same_name(expected: str, shown_name: str) -> bool:
    fold = lambda s: " ".join(unicodedata.normalize("NFKC", s).split()).casefold()  # noqa: E731
    return fold(expected) == fold(shown_name) or fold(expected).rsplit(".", 1)[0] in fold(shown_name)


def test_every_text_part_of_every_corpus_mail_is_on_its_ticket_page(mail_app, org, ca, agent, dovecot, browser,
                                                                     database_url, tmp_path):
    names = corpus_names()
    require(bool(names), f"the mail corpus is not at {CORPUS_DIR} (it lives in ../shared/corpus/)")
    account_id, address = connect(mail_app, org, ca, agent)
    for name in names:  # some corpus mails share a Message-ID: each gets its own, so each is an article
        dovecot.deliver(address, with_message_id(load_mail(name).raw, f"<{name}@corpus.test>"))
    result = run_pass(mail_app, account_id)
    assert (result.failed, result.quarantined, result.duplicates) == (0, 0, 0)
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        articles = [(a.id, a.ticket_id, read_blob(session, a.raw_sha256), a.body_pending)
                    for a in session.scalars(select(Article).where(Article.account_id == account_id)
                                             .order_by(Article.id))]
    assert len(articles) == result.imported == len(names)
    assert all(pending for *_, pending in articles), "a backlog is imported from its headers first"

    server = LiveServer(tmp_path / "serve", idp_url=org.idp.url, ca_path=ca.ca_path, database_url=database_url)
    with server:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        page = context.new_page()
        sign_in(page, server, agent.email)
        problems: dict[int, list[str]] = {}
        checked = 0
        for article_id, ticket_id, raw, _ in articles:
            expected = expectations(email.message_from_bytes(raw, policy=policy.default))
            page.goto(server.url(f"/tickets/{ticket_id}"))
            found = missing(expected, shown(page, article_id))
            if found:
                problems[article_id] = found
            checked += bool(expected)
        context.close()
    assert not problems, "\n".join(f"article {a}: {p}" for a, ps in problems.items() for p in ps)
    assert checked >= 90  # the others have no text part (an attachment alone, an image, a signed blob)
