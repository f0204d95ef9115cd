"""Every real-world corpus mail goes through the whole pipeline (Dovecot, IMAP, parse, tickets) without error.

What each mail must parse to (subject, sender, attachment MD5s against Zammad's expectations) is
checked in tests/test_corpus.py; here we check that the pipeline stores exactly what the parser
gives, for every mail, and that none fails or is quarantined. The 108 mails arrive as one backlog,
which the pass parses whole at import (most through the parser's fast path, mail/fastpath.py); run again
with every mail taken from its headers and its body extracted afterwards (extract.py), as a mail too big
for the import's allowance is. Either way the result must be what one full stdlib parse gives.
"""
from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from connector import extract
from connector.mail.parse import parse_message
from connector.blobs import read_blob
from connector.models import Article, ImportFailure
from connector.sync import AccountSync, import_pass
from connector.ingest import synthetic_message_id
from tests.conftest import require
from tests.corpus import CORPUS_DIR, corpus_names, load_mail
from tests.support.mail import connect


@pytest.mark.parametrize("bodies", ["at import", "afterwards"])
def test_every_corpus_mail_imports_through_imap(mail_app, org, ca, agent, dovecot, monkeypatch, bodies):
    # "afterwards" is the default (headers first); "at import" parses the backlog whole
    monkeypatch.setattr(import_pass, "WHOLE_MAIL_BYTES", 0 if bodies == "afterwards" else 64 * 1024 * 1024)
    names = corpus_names()
    require(bool(names), f"the mail corpus is not at {CORPUS_DIR} (it lives in ../shared/corpus/)")
    account_id, address = connect(mail_app, org, ca, agent)
    for name in names:
        raw = load_mail(name).raw
        dovecot.deliver(address, raw)
    rt = mail_app.extensions["connector"]
    sync = AccountSync(rt, account_id)
    try:
        result = sync.run_pass()
    finally:
        sync.close()
    assert (result.failed, result.quarantined) == (0, 0)
    assert result.imported + result.duplicates + result.ignored == len(names)
    deferred = result.imported if bodies == "afterwards" else 0
    assert result.deferred == deferred
    with rt.db.session() as session:
        assert len(extract.pending_ids(session, [account_id], limit=1000)) == deferred
    assert extract.extract_pending(rt.db, max_size=rt.settings.mail.max_message_bytes) == deferred
    assert extract.extract_pending(rt.db, max_size=rt.settings.mail.max_message_bytes) == 0

    # Compare what was stored with a fresh parse of what the server handed out (LMTP adds headers).
    with rt.db.session() as session:
        assert session.scalar(select(ImportFailure).where(ImportFailure.account_id == account_id)) is None
        articles = session.scalars(select(Article).where(Article.account_id == account_id)).all()
        assert len(articles) == result.imported
        for article in articles:
            raw = read_blob(session, article.raw_sha256)
            parsed = parse_message(raw)
            assert article.message_id == (parsed.headers.message_id or synthetic_message_id(raw))
            assert article.subject == parsed.headers.subject
            assert article.from_addr == (parsed.headers.from_.address if parsed.headers.from_ else "")
            assert not article.body_pending
            assert article.body_text == parsed.body_text
            assert article.body_html == parsed.body_html
            assert article.display == parsed.display
            assert [(a.filename, a.content_type, a.size, a.content_id, a.inline) for a in article.attachments] == \
                [(p.filename, p.content_type, len(p.data), p.content_id, p.inline) for p in parsed.attachments]
            assert article.notes == "\n".join(parsed.notes)
            stored = sorted(hashlib.md5(read_blob(session, a.blob_sha256)).hexdigest()
                            for a in article.attachments)
            assert stored == sorted(hashlib.md5(p.data).hexdigest() for p in parsed.attachments)
    assert articles
