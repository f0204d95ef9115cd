"""With `import_pass.WHOLE_MAIL_BYTES` set (it is 0, off, by default: see its comment), a backlog is parsed
whole at import, so its mails are searchable as soon as they are tickets; what is too big for the import's
memory allowance, or overruns the parse budget, is taken from its headers and extracted afterwards, as
with the default (tests/sync/test_backlog.py covers that path)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from connector import extract, parse_pool, users
from connector.models import Article, Attachment, ImportFailure, User
from connector.sync import DEFER_BODIES_FROM, import_pass
from tests.support.mail import connect, make_mail, run_pass
from tests.sync.test_backlog import _mail_with_attachment
from tests.sync.test_parse_budget import hang_on_marker


@pytest.fixture(autouse=True)
def parse_whole_on(monkeypatch):
    monkeypatch.setattr(import_pass, "WHOLE_MAIL_BYTES", 4 * 1024 * 1024)


def _api(app, user) -> tuple:
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        token = users.issue_api_token(session, session.get(User, user.id))
    return app.test_client(), {"Authorization": f"Bearer {token}"}


def _pending(app, account_id: int) -> int:
    with app.extensions["connector"].db.session() as session:
        return len(extract.pending_ids(session, [account_id], limit=1000))


def test_parse_whole_keeps_a_batch_within_its_allowance(monkeypatch):
    monkeypatch.setattr(import_pass, "WHOLE_MAIL_BYTES", 100)
    monkeypatch.setattr(import_pass, "WHOLE_BATCH_BYTES", 250)
    sizes = [100, 101, 100, 10, 100, 40]
    assert import_pass.parse_whole([b"x" * n for n in sizes]) == [True, False, True, True, False, True]


def test_a_backlog_is_searchable_as_soon_as_it_is_tickets(mail_app, org, ca, agent, dovecot):
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, _mail_with_attachment(address, "zanzibarquux"))
    for i in range(DEFER_BODIES_FROM):
        dovecot.deliver(address, make_mail(to=address, subject=f"Backlog {i}", body=f"Body number {i}."))
    result = run_pass(mail_app, account_id)
    assert (result.imported, result.deferred) == (DEFER_BODIES_FROM + 1, 0)
    assert _pending(mail_app, account_id) == 0
    client, headers = _api(mail_app, agent)
    [found] = client.get("/api/v1/tickets?q=zanzibarquux", headers=headers).get_json()["items"]
    (article,) = client.get(f"/api/v1/tickets/{found['id']}", headers=headers).get_json()["articles"]
    assert [a["filename"] for a in article["attachments"]] == ["invoice.pdf"]
    with mail_app.extensions["connector"].db.session() as session:
        texts = session.scalars(select(Article.body_text).where(Article.account_id == account_id)).all()
        assert sorted(t for t in texts if t.startswith("Body number")) == \
            sorted(f"Body number {i}." for i in range(DEFER_BODIES_FROM))


def test_a_mail_too_big_for_the_allowance_is_extracted_afterwards(mail_app, org, ca, agent, dovecot, monkeypatch):
    monkeypatch.setattr(import_pass, "WHOLE_MAIL_BYTES", 4000)
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="Big one", body="Big body. " + "x" * 8000))
    for i in range(DEFER_BODIES_FROM):
        dovecot.deliver(address, make_mail(to=address, subject=f"Backlog {i}", body=f"Body number {i}."))
    result = run_pass(mail_app, account_id)
    assert (result.imported, result.deferred) == (DEFER_BODIES_FROM + 1, 1)
    assert _pending(mail_app, account_id) == 1
    rt = mail_app.extensions["connector"]
    assert extract.extract_pending(rt.db, max_size=rt.settings.mail.max_message_bytes) == 1
    with rt.db.session() as session:
        big = session.scalar(select(Article).where(Article.account_id == account_id, Article.subject == "Big one"))
        assert big.body_text.startswith("Big body. xxx") and not big.body_pending


def test_a_backlog_mail_over_the_budget_becomes_a_ticket_from_its_headers(
        mail_app, org, ca, agent, dovecot, monkeypatch):
    monkeypatch.setattr(parse_pool, "_parse_one", hang_on_marker)
    rt = mail_app.extensions["connector"]
    rt.settings.mail.parse_timeout_seconds = 1
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="Stuck", headers={"X-Test-Hang": "yes"}))
    for i in range(DEFER_BODIES_FROM):
        dovecot.deliver(address, make_mail(to=address, subject=f"Backlog {i}", body=f"Body number {i}."))
    result = run_pass(mail_app, account_id)
    assert (result.imported, result.deferred, result.quarantined) == (DEFER_BODIES_FROM + 1, 1, 0)
    assert extract.extract_pending(rt.db, max_size=rt.settings.mail.max_message_bytes, budget=1) == 1
    with rt.db.session() as session:
        assert session.scalar(select(func.count()).select_from(ImportFailure)) == 0
        stuck = session.scalar(select(Article).where(Article.account_id == account_id, Article.subject == "Stuck"))
        assert not stuck.body_pending and stuck.body_text == ""
        assert "took longer than the 1 s budget" in stuck.notes
        assert session.scalar(select(func.count()).select_from(Attachment)) == 0
