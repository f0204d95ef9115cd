"""What a mail client shows, the agent sees: every real-world corpus mail's text, in Chromium.

The 108 mails of ../shared/corpus go the real way: delivered into Dovecot, imported by one sync pass
(one backlog, so from their headers; the bodies are extracted when the ticket page is opened, as they are
when an agent opens a ticket before the worker got to it). Then `connector serve` (on the same database)
shows each ticket in Chromium, and every text part of every mail must be on its article: its words in the
page's text or in the text of the article's mail frames, or the part listed there as an attachment.

Which parts a mail has, and their text, is read independently of connector's parser: the stdlib `email`
package with its modern policy, and the stdlib HTML parser for the text of HTML parts (without what a
browser hides: `display:none`, `hidden`). Of a multipart/alternative, one option must show (a mail client
shows one); forwarded mails (message/rfc822) count with every part of theirs. Where the stdlib is stricter
than a mail client, the reading here is a mail client's: charset labels as browsers read them (WHATWG:
GB2312 is GBK, ISO-8859-1 is windows-1252; 8-bit text without a label is UTF-8, else windows-1252),
header lines that lost their folding indent are continued rather than taken for the body, and a uuencoded
file in a text part is an attachment (its name must be listed), not text.

A word is shown when it occurs in the page's text (article and frames, NFKC, case folded): a word of a part
may be split by markup on the page (`<span>Ψµ</span>Áx`), or joined to its neighbour.
"""
from __future__ import annotations

import email
from email import errors
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


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


class _HtmlText(HTMLParser):
    """The text a browser shows of an HTML part: no script, style or head, nothing hidden."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[tuple[str, bool]] = []  # (tag, hides its content)

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            return
        attrs = dict(attrs)
        hides = (tag in ("script", "style", "head", "title", "template") or "hidden" in attrs
                 or bool(_HIDDEN_STYLE.search(attrs.get("style") or "")))
        self.open.append((tag, hides))

    def handle_endtag(self, tag):
        for depth in range(len(self.open) - 1, -1, -1):
            if self.open[depth][0] == tag:
                del self.open[depth:]
                return

    def handle_data(self, data):
        if not any(hides for _, hides in self.open):
            self.out.append(data)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def words(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD_RE.findall(_fold(text)):
        seen.setdefault(word)
    return list(seen)


@dataclass
class TextPart:
    where: str  # e.g. "1.2" (part numbers, as IMAP counts them)
    ctype: str
    filename: str | None
    attached: bool  # an attachment or a related part: a mail client may list it rather than show it
    words: list[str]


@dataclass
class Listed:
    """A file that a mail client lists as an attachment (a uuencoded file in a text part)."""
    where: str
    filename: str


@dataclass
class OneOf:
    """The options of a multipart/alternative: one of them must show."""
    where: str
    options: list[list]


# Charset labels as browsers (and so webmail) read them: the WHATWG Encoding Standard's supersets.
_AS_BROWSERS_READ = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "iso-8859-1": "cp1252",
                     "latin1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252", "iso-8859-9": "cp1254",
                     "ks_c_5601-1987": "cp949", "euc-kr": "cp949", "shift_jis": "cp932", "tis-620": "cp874",
                     "big5": "big5hkscs", "iso-8859-11": "cp874"}
_UUENCODED = re.compile(r"^begin [0-7]{3,4} (\S[^\r\n]*)\r?\n(?:.*\r?\n)*?end\s*$", re.M)


def _decode(part: EmailMessage) -> str:
    data = part.get_payload(decode=True) or b""
    label = (part.get_content_charset() or "").lower()
    if not label or label in ("us-ascii", "ascii"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", "replace")
    try:
        return data.decode(_AS_BROWSERS_READ.get(label, label), "replace")
    except LookupError:  # a label nobody knows ("iso-gb2312"): what is UTF-8 in it, the rest not looked for
        return data.decode("utf-8", "replace")


def _text_of(part: EmailMessage) -> tuple[str, list[str]]:
    """The text a mail client shows of a text part, and the names of the uuencoded files in it."""
    text = _decode(part)
    files: list[str] = []
    if part.get_content_subtype() == "html":
        parser = _HtmlText()
        parser.feed(text)
        text = " ".join(parser.out)
    else:
        files = [m.group(1).strip() for m in _UUENCODED.finditer(text)]
        text = _UUENCODED.sub(" ", text)
    return text, files


def read_mail(raw: bytes) -> EmailMessage:
    """The mail as a lenient mail client reads it: header lines that lost their folding indent (the
    stdlib takes the first such line for the start of the body) are continued, and lines before the
    first header (a pasted "---- Original email message ----") are dropped."""
    msg = email.message_from_bytes(raw, policy=policy.default)
    if not any(isinstance(d, errors.MissingHeaderBodySeparatorDefect) for d in msg.defects):
        return msg
    blank = re.search(rb"\r?\n\r?\n", raw)
    head, body = (raw[:blank.start()], raw[blank.end():]) if blank else (raw, b"")
    lines: list[bytes] = []
    for line in head.splitlines():
        if re.match(rb"[!-9;-~]+:", line) or (lines and line[:1] in (b" ", b"\t")):
            lines.append(line)
        elif lines:
            lines.append(b" " + line)  # a continuation that lost its indent
    return email.message_from_bytes(b"\n".join(lines) + b"\n\n" + body, policy=policy.default)


def expectations(part: EmailMessage, where: str = "1", resource: bool = False) -> list:
    """The text parts of a mail, as a mail client would have to show them. `resource`: a part of a
    multipart/related other than its first (a file the first one refers to, listed if it is not)."""
    ctype = part.get_content_type()
    if part.is_multipart():
        children = part.get_payload()
        if ctype == "message/rfc822" or not ctype.startswith("multipart/"):
            return [e for i, child in enumerate(children, 1) for e in expectations(child, f"{where}.{i}")]
        related = ctype == "multipart/related"
        found = [expectations(child, f"{where}.{i}", resource or (related and i > 1))
                 for i, child in enumerate(children, 1)]
        if ctype == "multipart/alternative":
            options = [option for option in found if option]
            return [OneOf(where, options)] if options else []
        return [e for option in found for e in option]
    if part.get_content_maintype() != "text" or part.get_content_subtype() not in ("plain", "html"):
        return []
    text, uuencoded = _text_of(part)
    found = words(text)
    try:
        filename = part.get_filename()
    except Exception:  # noqa: BLE001
        filename = None
    out: list = [Listed(where, name) for name in uuencoded]
    if found:
        out.append(TextPart(where, ctype, filename, resource or part.get_content_disposition() == "attachment",
                            found[:WORDS]))
    return out


@dataclass
class Shown:
    text: str  # the article's text and its frames' text, NFKC, case folded
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
    return Shown(_fold(" ".join(texts)), files)


def missing(expected: list, on_page: Shown) -> list[str]:
    """What of `expected` is not on the page, as sentences."""
    problems = []
    for item in expected:
        if isinstance(item, OneOf):
            if not any(not missing(option, on_page) for option in item.options):
                problems.append(f"part {item.where} (multipart/alternative): no option shows: "
                                + "; ".join(p for option in item.options for p in missing(option, on_page)))
            continue
        if isinstance(item, Listed):
            if not any(_same_name(item.filename, name) for name, _ in on_page.files):
                problems.append(f"part {item.where}: the uuencoded file {item.filename!r} is not listed")
            continue
        seen = [w for w in item.words if w in on_page.text]
        if len(seen) >= SHOWN * len(item.words):
            continue
        if item.filename and any(_same_name(item.filename, name) for name, _ in on_page.files):
            continue
        if item.attached and not item.filename and any(f"{item.ctype}," in line for _, line in on_page.files):
            continue
        problems.append(f"part {item.where} ({item.ctype}, file name {item.filename!r}): "
                        f"{len(seen)} of {len(item.words)} words shown, not listed as an attachment; "
                        f"missing {[w for w in item.words if w not in on_page.text][:8]}")
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
            expected = expectations(read_mail(raw))
            page.goto(server.url(f"/tickets/{ticket_id}"))
            found = missing(expected, shown(page, article_id))
            if found:
                problems[article_id] = found
            checked += bool(expected)
        context.close()
    assert not problems, "\n".join(f"article {a}: {p}" for a, ps in problems.items() for p in ps)
    assert checked >= 90  # the others have no text part (an attachment alone, an image, a signed blob)
