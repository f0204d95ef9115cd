"""A backlog (a first import) against the real Dovecot: tickets from the headers, raw mail in pack files,
bodies extracted afterwards or on the first read, and nothing lost or doubled on the way."""
from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from sqlalchemy import func, select

from connector import extract, users
from connector.blobs import BlobFiles, read_blob
from connector.models import Account, Article, Attachment, Blob, Ticket, User
from connector.sync import DEFER_BODIES_FROM, SyncError, import_pass
from tests.support.app import login
from tests.support.mail import connect, make_mail, run_pass


@pytest.fixture(autouse=True)
def bodies_afterwards(monkeypatch):
    """These tests are about bodies extracted after the import: every backlog mail is taken from its headers, as
    one too big to parse whole at import is (import_pass.parse_whole; tests/sync/test_bodies_at_import.py)."""
    monkeypatch.setattr(import_pass, "WHOLE_MAIL_BYTES", 0)


def _mail_with_attachment(address: str, word: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Customer <customer@example.net>"
    msg["To"] = address
    msg["Subject"] = "Invoice attached"
    msg["Message-ID"] = make_msgid(domain="example.net")
    msg.set_content(f"Please find the invoice attached. Keyword {word}.")
    msg.add_alternative(f"<p>Please find the <b>invoice</b> attached. Keyword {word}.</p>", subtype="html")
    msg.add_attachment(b"%PDF-1.4 invoice bytes", maintype="application", subtype="pdf", filename="invoice.pdf")
    return msg.as_bytes()


def _backlog(mail_app, org, ca, agent, dovecot, count: int = DEFER_BODIES_FROM + 8):
    account_id, address = connect(mail_app, org, ca, agent)
    special = _mail_with_attachment(address, "zanzibarquux")
    dovecot.deliver(address, special)
    for i in range(count - 1):
        dovecot.deliver(address, make_mail(to=address, subject=f"Backlog {i}", body=f"Body number {i}."))
    return account_id, address


def _headers(app, user) -> dict:
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        token = users.issue_api_token(session, session.get(User, user.id))
    return {"Authorization": f"Bearer {token}"}


def _packs(app) -> list:
    """The pack files beside the SQLite database (PostgreSQL has none: the raw mail is in the table)."""
    files = BlobFiles.for_bind(app.extensions["connector"].db.engine)
    return sorted(files.root.rglob("*.pack")) if files is not None else []


def _in_packs(app) -> bool:
    return app.extensions["connector"].db.is_sqlite


SQLITE_PACKS = pytest.mark.backends("sqlite", reason="pack files exist only beside an SQLite database")


def test_a_backlog_becomes_tickets_from_headers_and_its_bodies_follow(mail_app, org, ca, agent, dovecot):
    account_id, address = _backlog(mail_app, org, ca, agent, dovecot)
    rt = mail_app.extensions["connector"]
    result = run_pass(mail_app, account_id)
    assert result.imported == result.deferred == DEFER_BODIES_FROM + 8
    assert len(_packs(mail_app)) == (1 if _in_packs(mail_app) else 0)  # one batch, one pack file (SQLite)

    with rt.db.session() as session:
        articles = session.scalars(select(Article).where(Article.account_id == account_id)).all()
        assert all(a.body_pending and a.body_text == "" and not a.attachments for a in articles)
        # every raw mail is in the pack, byte for byte, and its row says where
        for article in articles:
            blob = session.get(Blob, article.raw_sha256)
            if _in_packs(mail_app):
                assert blob.pack is not None and blob.data == b""
            else:
                assert blob.pack is None and b"Subject:" in blob.data
            assert b"Subject:" in read_blob(session, article.raw_sha256)
        invoice = next(a for a in articles if a.subject == "Invoice attached")
        invoice_id, ticket_id = invoice.id, invoice.ticket_id

    # text search waits for extraction; the subject is searchable at once
    headers = _headers(mail_app, agent)
    client = mail_app.test_client()
    assert client.get("/api/v1/tickets?q=zanzibarquux", headers=headers).get_json()["items"] == []
    assert [t["id"] for t in client.get("/api/v1/tickets?q=Invoice attached", headers=headers).get_json()["items"]] \
        == [ticket_id]

    # reading the ticket extracts its articles on the spot
    detail = client.get(f"/api/v1/tickets/{ticket_id}", headers=headers).get_json()
    (article,) = detail["articles"]
    assert "Keyword zanzibarquux." in article["body_text"]
    assert [a["filename"] for a in article["attachments"]] == ["invoice.pdf"]
    with rt.db.session() as session:
        assert not session.get(Article, invoice_id).body_pending
        attachment = session.scalar(select(Attachment).where(Attachment.article_id == invoice_id))
        assert read_blob(session, attachment.blob_sha256) == b"%PDF-1.4 invoice bytes"
    assert [t["id"] for t in client.get("/api/v1/tickets?q=zanzibarquux", headers=headers).get_json()["items"]] \
        == [ticket_id]

    # the web page shows the sanitised HTML and the original downloads from the pack
    web = mail_app.test_client()
    login(web, agent.email)
    assert b"invoice.pdf" in web.get(f"/tickets/{ticket_id}").data
    body = web.get(f"/tickets/{ticket_id}/articles/{invoice_id}/body").data
    assert b"<b>invoice</b>" in body
    raw = web.get(f"/tickets/{ticket_id}/raw/{invoice_id}").data
    assert b"zanzibarquux" in raw and b"Invoice attached" in raw

    # the rest is extracted in the background, once
    assert extract.extract_pending(rt.db, max_size=rt.settings.mail.max_message_bytes) == DEFER_BODIES_FROM + 7
    assert extract.extract_pending(rt.db, max_size=rt.settings.mail.max_message_bytes) == 0
    with rt.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Attachment)) == 1
        texts = session.scalars(select(Article.body_text).where(Article.account_id == account_id)).all()
        assert sorted(t for t in texts if t.startswith("Body number")) == \
            sorted(f"Body number {i}." for i in range(DEFER_BODIES_FROM + 7))


def test_new_mail_is_parsed_whole_at_once(mail_app, org, ca, agent, dovecot):
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="Just one", body="Right away."))
    result = run_pass(mail_app, account_id)
    assert (result.imported, result.deferred) == (1, 0)
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        article = session.scalar(select(Article).where(Article.account_id == account_id))
        assert not article.body_pending and "Right away." in article.body_text
        # raw mail in a pack on SQLite, in the table on PostgreSQL
        assert (session.get(Blob, article.raw_sha256).pack is not None) == _in_packs(mail_app)
        assert b"Right away." in read_blob(session, article.raw_sha256)


def test_reading_the_folder_again_leaves_no_pack_behind(mail_app, org, ca, agent, dovecot):
    account_id, _ = _backlog(mail_app, org, ca, agent, dovecot)
    rt = mail_app.extensions["connector"]
    run_pass(mail_app, account_id)
    packs = _packs(mail_app)
    with rt.db.session() as session:
        session.get(Account, account_id).last_uid = 0  # as after a UIDVALIDITY change
    again = run_pass(mail_app, account_id)
    assert (again.imported, again.duplicates) == (0, DEFER_BODIES_FROM + 8)
    assert _packs(mail_app) == packs
    with rt.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Ticket).where(Ticket.account_id == account_id)) \
            == DEFER_BODIES_FROM + 8


@SQLITE_PACKS
def test_a_lost_pack_is_reported_not_hidden(mail_app, org, ca, agent, dovecot):
    account_id, _ = _backlog(mail_app, org, ca, agent, dovecot)
    rt = mail_app.extensions["connector"]
    run_pass(mail_app, account_id)
    for pack in _packs(mail_app):
        pack.write_bytes(b"x" * pack.stat().st_size)  # damaged: same size, other bytes
    assert extract.extract_pending(rt.db, max_size=rt.settings.mail.max_message_bytes) == DEFER_BODIES_FROM + 8
    with rt.db.session() as session:
        article = session.scalar(select(Article).where(Article.account_id == account_id).limit(1))
        assert not article.body_pending and article.body_text == ""
        assert "the raw mail is missing or damaged" in article.notes and "restore" in article.notes
        ticket_id, article_id = article.ticket_id, article.id
    web = mail_app.test_client()
    login(web, agent.email)
    response = web.get(f"/tickets/{ticket_id}/raw/{article_id}")
    assert response.status_code == 404


@SQLITE_PACKS
def test_the_parser_processes_read_packed_mail_themselves(mail_app, org, ca, agent, dovecot):
    """Extraction hands a parser process where a packed mail is (parse_pool.StoredMail), not its bytes; the process
    reads it and checks its SHA-256, and a mail whose pack is gone comes back as missing."""
    from connector import parse_pool

    account_id, _ = _backlog(mail_app, org, ca, agent, dovecot)
    rt = mail_app.extensions["connector"]
    run_pass(mail_app, account_id)
    with rt.db.session() as session:
        ids = extract.pending_ids(session)
        rows = extract._read_raw(session, ids)
        raws = {article.id: read_blob(session, article.raw_sha256)
                for article in session.scalars(select(Article).where(Article.id.in_(ids)))}
    assert rows and all(isinstance(item, parse_pool.StoredMail) for _, item in rows)
    assert all(item.read() == raws[article_id] for article_id, item in rows)
    for pack in _packs(mail_app):
        pack.unlink()
    parsed = extract._start(rows, rt.settings.mail.max_message_bytes)()
    assert [one for _, one in parsed] == [None] * len(rows)


def test_the_worker_extracts_a_backlog_in_the_background(mail_app, org, ca, agent, dovecot):
    from connector.worker import Worker
    from tests.support.mail import counts, wait_until

    account_id, _ = _backlog(mail_app, org, ca, agent, dovecot)
    rt = mail_app.extensions["connector"]

    def pending() -> int:
        with rt.db.session() as session:
            return len(extract.pending_ids(session, [account_id], limit=1000))

    worker = Worker(rt, name="test")
    worker.start_background()
    try:
        wait_until(lambda: counts(mail_app, account_id)[1] == DEFER_BODIES_FROM + 8, timeout=20)
        wait_until(lambda: pending() == 0, timeout=20)
    finally:
        worker.stop(wait=True, timeout=10)
    with rt.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Attachment)) == 1


@SQLITE_PACKS
def test_a_full_disk_stops_the_pass_with_a_reason_and_loses_nothing(mail_app, org, ca, agent, dovecot, mocker):
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="Kept for later", body="Still here."))
    rt = mail_app.extensions["connector"]
    mocker.patch.object(BlobFiles, "write_pack", side_effect=OSError(28, "No space left on device"))
    with pytest.raises(SyncError) as failure:
        run_pass(mail_app, account_id)
    assert "Could not store mail in" in str(failure.value) and "No space left on device" in str(failure.value)
    assert "Free disk space" in str(failure.value) and failure.value.retry_after == 60
    with rt.db.session() as session:
        assert session.get(Account, account_id).last_uid == 0
    mocker.stopall()
    assert run_pass(mail_app, account_id).imported == 1
