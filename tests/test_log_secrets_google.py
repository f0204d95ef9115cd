"""No secret of a Google mailbox reaches a log, even at DEBUG: the Google app's check, Connect Google, a
sync over Gmail-like IMAP, a refresh through authlib and a reply over Gmail-like SMTP, with every library
talking (tests/test_log_secrets.py's two captures, plus authlib at DEBUG).
"""
from __future__ import annotations

import json
import logging
import re

import pytest
from sqlalchemy import select

from connector import tokens as token_service
from connector.models import Account, Ticket
from tests.google import complete_authorization
from tests.outbox.test_send import api, send_due
from tests.support.app import finish_connect, login
from tests.support.gmail import gmail_smtp  # noqa: F401
from tests.support.google import gmail_dovecot, google, make_google_org  # noqa: F401
from tests.support.google_app import register_google, start_google_connect
from tests.support.mail import make_mail, run_pass
from tests.test_log_secrets import debug_logs, pieces, windows  # noqa: F401


@pytest.fixture
def mail_app(make_app, google, gmail_dovecot, gmail_smtp):  # noqa: F811 - debug_logs' app is this one
    return make_app(google={"authority": google.url, "imap_host": "127.0.0.1", "imap_port": gmail_dovecot.imap_port,
                            "smtp_host": "127.0.0.1", "smtp_port": gmail_smtp.port})


def stored_tokens(app) -> set[str]:
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        found = set()
        for account in session.scalars(select(Account)):
            stored = json.loads(rt.vault.decrypt_text(account.token_cache_enc))
            found |= {stored["refresh_token"], stored["access_token"]}
        return found


def test_a_google_connect_sync_refresh_and_send_at_debug_log_no_secret(mail_app, make_google_org, ca, agent,
                                                                       gmail_dovecot, debug_logs):  # noqa: F811
    raw, output = debug_logs
    authlib_logger = logging.getLogger("authlib")
    old_level = authlib_logger.level
    authlib_logger.setLevel(logging.DEBUG)
    try:
        org = make_google_org()
        rt = mail_app.extensions["connector"]
        register_google(mail_app, org)  # the secret proven with a token request
        address = org.user("logged").email
        browser = mail_app.test_client()
        login(browser, agent.email)
        redirect = complete_authorization(start_google_connect(browser), address, "pw", ca_path=ca.ca_path)
        code = dict(p.split("=", 1) for p in redirect.split("?", 1)[1].split("&"))["code"]
        assert finish_connect(browser, redirect).status_code == 302
        with rt.db.session() as session:
            account_id = session.scalar(select(Account.id).where(Account.address == address))
        secrets: set[str] = {org.secret, code, *windows(code)}
        tokens = stored_tokens(mail_app)

        gmail_dovecot.deliver(address, make_mail(to=address, subject="Logged?", body="hello"))
        run_pass(mail_app, account_id)
        with rt.db.session() as session:  # a refresh through authlib: the refresh token goes over the wire
            token_service.access_token(session, rt, session.get(Account, account_id), force_refresh=True)
            ticket_id = session.scalar(select(Ticket.id).where(Ticket.account_id == account_id))
        tokens |= stored_tokens(mail_app)
        reply = mail_app.test_client().post(f"/api/v1/tickets/{ticket_id}/reply", headers=api(mail_app, agent),
                                            json={"body_text": "Logged."})
        assert reply.status_code == 202
        assert send_due(mail_app)
        tokens |= stored_tokens(mail_app)
    finally:
        authlib_logger.setLevel(old_level)

    assert len(tokens) >= 3, "expected a refreshed access token too"
    for token in tokens:
        secrets.update(pieces(address, token))
    assert {"urllib3.connectionpool", "imapclient.imapclient", "connector.google_accounts"} <= raw.names, \
        sorted(raw.names)
    assert sum(1 for line in raw.lines if " DEBUG " in line) > 20
    for source, captured in (("as emitted", "\n".join(raw.lines)), ("in the app's log", output.getvalue())):
        assert not re.search(r'code_verifier"?\s*[:=]\s*"?(?!\*)[\w~.-]{20,}', captured), source
        for piece in secrets:
            assert piece not in captured, f"a secret {source}: ...{piece}... in " + next(
                (line[:200] for line in captured.splitlines() if piece in line), "?")
