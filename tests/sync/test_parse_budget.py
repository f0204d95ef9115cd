"""Hostile mail through a real sync against Dovecot, and the parse budget.

The four hostile mails (tests/support/hostile.py) go through the real parser in the sync's parser processes;
each becomes a ticket whose page, mail body and API answer render in bounded time, and the mailbox moves on
to the mail after them. A mail whose parse overruns `[mail] parse_timeout_seconds` (made to hang on purpose
with a test parse function, the only way now that the parser is linear) is quarantined at once with the
reason, in the sync, in body extraction after a big import, and when a ticket is opened.
"""
from __future__ import annotations

import time

from sqlalchemy import select

from connector import extract, parse_pool
from connector.models import Account, Article, ImportFailure, Ticket
from connector.sync import DEFER_BODIES_FROM, import_pass
from tests.support import hostile
from tests.support.app import login
from tests.support.mail import connect, counts, make_mail, run_pass

PAGE_BOUND = 20  # seconds for one page on a loaded 2-core machine; the quadratic code took minutes to hours


def hang_on_marker(raw: bytes, max_size: int, headers: bool = True):
    """parse_pool._parse_one for these tests (module level: the parser processes import it by name)."""
    from connector.mail.parse import parse_message

    if b"X-Test-Hang: yes" in raw:
        time.sleep(3600)
    return parse_message(raw, max_size=max_size, headers=headers)


def _ticket_ids_by_subject(app, account_id: int) -> dict[str, int]:
    with app.extensions["connector"].db.session() as session:
        return {t.subject: t.id for t in session.scalars(select(Ticket).where(Ticket.account_id == account_id))}


def _timed_get(client, url: str):
    started = time.monotonic()
    response = client.get(url)
    took = time.monotonic() - started
    assert response.status_code == 200, (url, response.status_code)
    assert took < PAGE_BOUND, f"{url} took {took:.1f} s"
    return response.get_data(as_text=True)


def _render_everything(app, client, ticket_id: int) -> dict[int, str]:
    """The ticket page, the mail body of each article (the frame's source) and the API; bodies by article id."""
    page = _timed_get(client, f"/tickets/{ticket_id}")
    assert "Reply to" in page
    with app.extensions["connector"].db.session() as session:
        article_ids = list(session.scalars(select(Article.id).where(Article.ticket_id == ticket_id)))
    shown = {aid: _timed_get(client, f"/tickets/{ticket_id}/articles/{aid}/body") for aid in article_ids}
    return {aid: page + shown[aid] for aid in article_ids}


def test_hostile_mails_become_tickets_whose_pages_render(mail_app, org, ca, agent, dovecot):
    account_id, address = connect(mail_app, org, ca, agent)
    for raw in hostile.all_hostile(address).values():
        dovecot.deliver(address, raw)
    dovecot.deliver(address, make_mail(to=address, subject="After the storm", body="Still here."))
    started = time.monotonic()
    result = run_pass(mail_app, account_id)
    assert time.monotonic() - started < 120
    assert (result.imported, result.quarantined, result.failed) == (5, 0, 0)
    assert counts(mail_app, account_id) == (5, 5)

    client = mail_app.test_client()
    login(client, agent.email)
    ids = _ticket_ids_by_subject(mail_app, account_id)
    [line] = _render_everything(mail_app, client, ids["One very long line"]).values()
    assert "first 200,000 of its 2,097,152 characters" in line and len(line) < 1_000_000
    [spaces] = _render_everything(mail_app, client, ids["Mostly whitespace"]).values()
    assert "before" in spaces and "after" in spaces
    [refs] = _render_everything(mail_app, client, ids["Long references"]).values()
    assert "The headers are the problem here." in refs
    [nested] = _render_everything(mail_app, client, ids["10000 nested parts"]).values()
    assert "MIME nesting too deep" in nested and "attachment.bin" in nested
    _render_everything(mail_app, client, ids["After the storm"])
    for ticket_id in ids.values():
        started = time.monotonic()
        assert client.get(f"/api/v1/tickets/{ticket_id}", headers=_api(mail_app, agent)).status_code == 200
        assert time.monotonic() - started < PAGE_BOUND
    with mail_app.extensions["connector"].db.session() as session:
        article = session.scalar(select(Article).where(Article.ticket_id == ids["One very long line"]))
        assert article.body_text == "a" * (2 * 1024 * 1024)  # stored whole; only the page shows a part


def _api(app, user) -> dict:
    from connector import users

    with app.extensions["connector"].db.session() as session:
        return {"Authorization": f"Bearer {users.issue_api_token(session, session.get(type(user), user.id))}"}


def test_a_mail_over_the_parse_budget_is_quarantined_at_once_and_the_mailbox_moves_on(
        mail_app, org, ca, agent, admin, dovecot, monkeypatch):
    monkeypatch.setattr(parse_pool, "_parse_one", hang_on_marker)
    rt = mail_app.extensions["connector"]
    rt.settings.mail.parse_timeout_seconds = 1
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="Before"))
    dovecot.deliver(address, make_mail(to=address, subject="Stuck", headers={"X-Test-Hang": "yes"}))
    dovecot.deliver(address, make_mail(to=address, subject="After"))
    started = time.monotonic()
    result = run_pass(mail_app, account_id)
    assert time.monotonic() - started < 30
    assert (result.imported, result.quarantined, result.failed) == (2, 1, 0)
    assert set(_ticket_ids_by_subject(mail_app, account_id)) == {"Before", "After"}
    with rt.db.session() as session:
        failure = session.scalar(select(ImportFailure).where(ImportFailure.account_id == account_id))
        assert failure.quarantined and failure.attempts == 1 and failure.raw_sha256
        assert "took longer than the 1 s budget ([mail] parse_timeout_seconds)" in failure.last_error
        assert session.get(Account, account_id).last_uid == 3  # moved past it
    assert run_pass(mail_app, account_id).imported == 0  # not fetched again
    client = mail_app.test_client()
    login(client, admin.email)
    assert "1 s budget" in _timed_get(client, "/admin/quarantine")


def test_the_budget_holds_for_bodies_extracted_after_a_big_import_and_on_read(
        mail_app, org, ca, agent, dovecot, monkeypatch):
    monkeypatch.setattr(parse_pool, "_parse_one", hang_on_marker)
    monkeypatch.setattr(import_pass, "WHOLE_MAIL_BYTES", 0)  # the backlog from its headers, bodies afterwards
    rt = mail_app.extensions["connector"]
    rt.settings.mail.parse_timeout_seconds = 1
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="Stuck on read", headers={"X-Test-Hang": "yes"}))
    dovecot.deliver(address, make_mail(to=address, subject="Stuck in the background",
                                       headers={"X-Test-Hang": "yes"}))
    for n in range(DEFER_BODIES_FROM):
        dovecot.deliver(address, make_mail(to=address, subject=f"Backlog {n}", body=f"Body {n}."))
    result = run_pass(mail_app, account_id)  # a backlog: headers now (they parse fine), bodies later
    assert result.imported == result.deferred == DEFER_BODIES_FROM + 2
    ids = _ticket_ids_by_subject(mail_app, account_id)

    client = mail_app.test_client()
    login(client, agent.email)
    [shown] = _render_everything(mail_app, client, ids["Stuck on read"]).values()  # extracted on the spot
    assert "took longer than the 1 s budget" in shown

    started = time.monotonic()
    extracted = extract.extract_pending(rt.db, max_size=rt.settings.mail.max_message_bytes, budget=1)
    assert extracted == DEFER_BODIES_FROM + 1 and time.monotonic() - started < 60
    with rt.db.session() as session:
        stuck = session.scalar(select(Article).where(Article.ticket_id == ids["Stuck in the background"]))
        assert not stuck.body_pending and stuck.body_text == ""
        assert "took longer than the 1 s budget" in stuck.notes and "download the original" in stuck.notes
        fine = session.scalar(select(Article).where(Article.ticket_id == ids["Backlog 7"]))
        assert fine.body_text == "Body 7."
