"""What a mail client shows, the ticket page shows: text parts in order (inline named ones too, and still
downloadable), forwarded mails inline as quoted mails, the richest option of an alternative, and a note
instead of an empty box. Checked on the rendered page and its mail frames (Chromium: tests/e2e)."""
from __future__ import annotations

import re
from html import unescape

from sqlalchemy import select, update

from connector.models import Article
from tests.support.app import login
from tests.web.test_tickets import deliver, mailbox  # noqa: F401 - fixtures

HEAD = "From: Customer <c@example.net>\nTo: {to}\nSubject: {subject}\nMessage-ID: <{subject}@x>\nMIME-Version: 1.0\n"


def _mail(to: str, subject: str, content_type: str, body: str) -> bytes:
    return (HEAD.format(to=to, subject=subject) + f"Content-Type: {content_type}\n\n" + body).encode()


def _article(page: str) -> str:
    """The first article of a ticket page."""
    return page[page.index("<article"):page.index("</article>")]


def _frames(client, article_html: str) -> list[str]:
    return [client.get(unescape(src)).get_data(as_text=True)
            for src in re.findall(r'<iframe[^>]*?\ssrc="([^"]+)"', article_html)]


def _links(article_html: str) -> dict[str, str]:
    """Download links of the article: {the file name each shows: URL}."""
    links = {}
    for href, inner in re.findall(r'<a href="(/tickets/\d+/attachments/\d+)"[^>]*>(.*?)</a>', article_html, re.S):
        shown = re.search(r"<bdi>([^<]*)</bdi>", inner)
        links[unescape(shown.group(1) if shown else re.sub(r"<[^>]+>", "", inner))] = unescape(href)
    return links


def test_inline_text_parts_with_file_names_are_shown_in_order_and_downloadable(app, client, agent, mailbox,
                                                                             deliver):
    box = mailbox(agent)
    raw = _mail(box.address, "two-parts", 'multipart/mixed; boundary="b"',
                "--b\nContent-Type: text/plain; charset=utf-8\nContent-Disposition: inline; filename=\"msg.txt\"\n\n"
                "First part: the printer on floor 3 is jammed.\n"
                "--b\nContent-Type: text/plain; charset=utf-8\nContent-Disposition: inline; filename=\"msg.txt\"\n\n"
                "Second part: it prints blank pages since Monday.\n--b--\n")
    ticket_id = deliver(box, raw)
    login(client, agent.email)
    article = _article(client.get(f"/tickets/{ticket_id}").get_data(as_text=True))
    first, second = article.index("First part: the printer"), article.index("Second part: it prints")
    assert first < second
    assert "has no text" not in article
    links = [href for href, name in re.findall(r'<a href="(/tickets/\d+/attachments/\d+)"[^>]*>(?:<bdi>)?([^<]+)',
                                                article) if name == "msg.txt"]
    assert len(links) == 2  # each part is also a file
    assert {client.get(link).data for link in links} == {b"First part: the printer on floor 3 is jammed.",
                                                          b"Second part: it prints blank pages since Monday."}


FORWARDED = ("--m\nContent-Type: text/plain\n\nFYI, see below.\n"
             "--m\nContent-Type: message/rfc822\nContent-Disposition: attachment; filename=\"fwd.eml\"\n\n"
             "From: Alice Original <alice@partner.test>\nTo: bob@partner.test\nDate: Tue, 1 Dec 2026 10:00:00 +0000\n"
             "Subject: Order 4711 delayed\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"i\"\n\n"
             "--i\nContent-Type: text/plain\n\nThe shipment of order 4711 leaves on Friday.\n"
             "--i\nContent-Type: application/pdf; name=\"invoice.pdf\"\nContent-Disposition: attachment; "
             "filename=\"invoice.pdf\"\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--i--\n"
             "--m--\n")


def test_a_forwarded_mail_is_shown_as_a_collapsible_quoted_mail_with_its_own_attachments(app, client, agent,
                                                                                        mailbox, deliver):
    box = mailbox(agent)
    ticket_id = deliver(box, _mail(box.address, "fwd", 'multipart/mixed; boundary="m"', FORWARDED))
    login(client, agent.email)
    article = _article(client.get(f"/tickets/{ticket_id}").get_data(as_text=True))
    assert article.index("FYI, see below.") < article.index('<details class="forwarded"')
    quoted = article[article.index('<details class="forwarded"'):article.index("</details>")]
    assert "<summary>" in quoted and "Order 4711 delayed" in quoted.split("</summary>")[0]
    for header in ("Alice Original", "alice@partner.test", "Order 4711 delayed", "2026"):
        assert header in quoted
    assert "The shipment of order 4711 leaves on Friday." in quoted
    links = _links(quoted)
    assert client.get(links["invoice.pdf"]).data == b"%PDF-1.4\n"  # its own attachment, under it
    assert client.get(links["fwd.eml"]).data.startswith(b"From: Alice Original")  # and the mail as it came
    assert "invoice.pdf" not in article.replace(quoted, "")  # not again under the outer mail


def test_an_alternative_shows_its_html_and_falls_back_to_its_text_when_the_html_shows_nothing(
        app, client, agent, mailbox, deliver):
    box = mailbox(agent)
    rich = deliver(box, _mail(box.address, "rich", 'multipart/alternative; boundary="a"',
                              "--a\nContent-Type: text/plain\n\nplain option words\n"
                              "--a\nContent-Type: text/html\n\n<p>the <b>bold</b> option</p>\n--a--\n"))
    empty = deliver(box, _mail(box.address, "emptyhtml", 'multipart/alternative; boundary="a"',
                               "--a\nContent-Type: text/plain\n\nonly the plain option has words\n"
                               "--a\nContent-Type: text/html\n\n<html><body><p> </p></body></html>\n--a--\n"))
    login(client, agent.email)
    article = _article(client.get(f"/tickets/{rich}").get_data(as_text=True))
    assert "plain option words" not in article  # one option is shown, the richest
    [frame] = _frames(client, article)
    assert "<b>bold</b>" in frame
    article = _article(client.get(f"/tickets/{empty}").get_data(as_text=True))
    assert "only the plain option has words" in article + "".join(_frames(client, article))


def test_a_mail_without_text_says_so_and_offers_its_files(app, client, agent, mailbox, deliver):
    box = mailbox(agent)
    only_file = deliver(box, _mail(box.address, "onlyfile", 'multipart/mixed; boundary="m"',
                                   "--m\nContent-Type: application/zip; name=\"logs.zip\"\nContent-Disposition: "
                                   "attachment; filename=\"logs.zip\"\nContent-Transfer-Encoding: base64\n\n"
                                   "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==\n--m--\n"))
    blank = deliver(box, _mail(box.address, "blank", "text/plain", "\n \n"))
    login(client, agent.email)
    article = _article(client.get(f"/tickets/{only_file}").get_data(as_text=True))
    assert "This mail has no text" in article and "logs.zip" in _links(article)
    article = _article(client.get(f"/tickets/{blank}").get_data(as_text=True))
    assert "This mail has no text" in article and "download the original" in article


def test_a_mail_stored_before_the_display_model_is_read_again_when_opened(app, client, agent, mailbox, deliver):
    """Revision 0008: an article without a display (stored by an older version, which kept the named inline
    text parts as hidden inline files) is re-read from its raw mail on view, by today's rules."""
    box = mailbox(agent)
    ticket_id = deliver(box, _mail(box.address, "legacy", 'multipart/mixed; boundary="m"', FORWARDED))
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        session.execute(update(Article).values(display=None, body_text="old text only", body_html=None))
    login(client, agent.email)
    article = _article(client.get(f"/tickets/{ticket_id}").get_data(as_text=True))
    assert "The shipment of order 4711 leaves on Friday." in article and "old text only" not in article
    with rt.db.session() as session:
        display = session.scalar(select(Article.display))
    assert display and display.startswith('{"v":1')
    assert "invoice.pdf" in _links(_article(client.get(f"/tickets/{ticket_id}").get_data(as_text=True)))
