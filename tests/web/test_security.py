"""Security properties that must hold whatever the page: CSRF, secrets at rest, nothing leaked to pages or logs."""
from __future__ import annotations

import json
import logging
import re
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask import request_finished
from sqlalchemy import select

from connector.crypto import KEY_FILE, SECRET_KEY_FILE
from connector.identity.microsoft import IdentityError
from connector.models import Account, AppRegistration
from connector import tokens
from connector.identity.microsoft import MAIL_SCOPES
from tests.idp.driver import complete_authorization
from tests.support.app import (PASSWORD, connect_mailbox, csrf_token, finish_connect, login, save_registration,
                               start_connect)


def _text(response) -> str:
    return response.get_data(as_text=True)


def _db_path(app) -> Path:
    return Path(app.extensions["connector"].db.engine.url.database)


def _data_dir(app) -> Path:
    return app.extensions["connector"].settings.data_path


# -- CSRF -------------------------------------------------------------------------------------------------

# Exempt from CSRF, each authenticated otherwise: the REST API (its token) and Microsoft Graph's notifications
# (the subscription's clientState; Microsoft posts them, no browser). Nothing else may be.
CSRF_EXEMPT = {"api", "graph_hooks"}


def _post_rules(app):
    """Every form POST of the web app (not the exempt blueprints)."""
    csrf = app.extensions["csrf"]
    assert {bp.name for bp in csrf._exempt_blueprints} == CSRF_EXEMPT and not csrf._exempt_views
    for rule in app.url_map.iter_rules():
        if "POST" in rule.methods and rule.endpoint.split(".")[0] not in CSRF_EXEMPT:
            yield rule


def _url(rule) -> str:
    return re.sub(r"<(?:int:)?(\w+)>", "1", rule.rule)


def test_csrf_is_on_in_the_tested_app(app):
    assert app.testing and app.config.get("WTF_CSRF_ENABLED", True) is True
    assert "csrf" in app.extensions
    assert len(list(_post_rules(app))) >= 10


def test_every_form_post_without_a_csrf_token_is_refused(app, client, admin, org):
    login(client, admin.email)
    assert save_registration(client, org).status_code == 302
    before = _stored_registration(app)
    for rule in _post_rules(app):
        response = client.post(_url(rule), data={"client_id": "x", "email": "x@y.test"})
        assert response.status_code == 400, rule.rule
        assert "CSRF check failed" in _text(response), rule.rule
    assert _stored_registration(app) == before
    assert client.get("/admin/microsoft").status_code == 200  # still signed in: logout was refused too


def test_a_csrf_token_of_another_session_is_refused(app, client, admin, make_user, org):
    other = app.test_client()
    foreign = csrf_token(_text(other.get("/login")))
    login(client, admin.email)
    response = client.post("/admin/microsoft", data={"client_id": org.client_id, "tenant": org.tenant_id,
                                                      "client_secret": org.secret, "csrf_token": foreign})
    assert response.status_code == 400 and "CSRF check failed" in _text(response)
    assert _stored_registration(app) is None
    response = client.post("/admin/users", data={"email": "mallory@helpdesk.test", "role": "admin",
                                                  "password": "long enough password", "csrf_token": "garbage"})
    assert response.status_code == 400
    assert login(app.test_client(), "mallory@helpdesk.test", "long enough password").status_code == 401


def test_sign_in_without_a_csrf_token_is_refused(client, agent):
    response = client.post("/login", data={"email": agent.email, "password": PASSWORD})
    assert response.status_code == 400 and "CSRF check failed" in _text(response)
    assert client.get("/accounts").status_code == 302


def test_the_api_is_exempt_from_csrf_but_needs_a_bearer_token(client, agent):
    login(client, agent.email)
    response = client.post("/api/v1/tickets/1/reply", json={"body_text": "hi"})
    assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"


def _stored_registration(app):
    with app.extensions["connector"].db.session() as session:
        row = session.scalar(select(AppRegistration))
        return None if row is None else (row.client_id, row.tenant, row.client_secret_enc)


# -- no secret or token in any page or log line ------------------------------------------------------------

def _token_secrets(cache_json: str) -> set[str]:
    cache = json.loads(cache_json)
    found = set()
    for section in ("AccessToken", "RefreshToken", "IdToken"):
        for entry in cache.get(section, {}).values():
            found.add(entry["secret"])
    return found


def test_secrets_and_tokens_appear_in_no_response_and_no_log(app, client, admin, agent, org, ca, idp, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "connector", "werkzeug"):  # msal stays at the level the app gives it
        caplog.set_level(logging.DEBUG, logger=name)
    # See every record as the app emitted it: the stderr handler's redaction filter (runtime.py) rewrites
    # records in place, and it must be the last line of defence, not the reason this test passes.
    root = logging.getLogger()
    root.removeHandler(caplog.handler)
    root.handlers.insert(0, caplog.handler)
    responses = []

    def record(sender, response, **extra):
        responses.append(response)
    request_finished.connect(record, app)
    rt = app.extensions["connector"]

    login(client, admin.email)
    save_registration(client, org, secret="a-wrong-secret-value")  # refused: the wrong one is not echoed
    save_registration(client, org)
    client.get("/admin/microsoft")
    client.post("/logout", data={"csrf_token": csrf_token(_text(client.get("/accounts")))})

    login(client, agent.email)
    mailbox = org.add_user("alice")
    authorize_url = start_connect(client)
    redirect = complete_authorization(authorize_url, mailbox, "pw", ca_path=ca.ca_path)
    code = dict(p.split("=", 1) for p in redirect.split("?", 1)[1].split("&"))["code"]
    finish_connect(client, redirect)
    client.get("/accounts")
    secrets = {org.secret, "a-wrong-secret-value", code, PASSWORD}
    with rt.db.session() as session:
        account = session.scalar(select(Account))
        secrets |= _token_secrets(rt.vault.decrypt_text(account.token_cache_enc))
        # a silent refresh: the worker's path to an IMAP/SMTP token
        secrets.add(tokens.refreshed_token(session, rt.vault, rt.identity(session), account, MAIL_SCOPES,
                                                       force_refresh=True))
        secrets |= _token_secrets(rt.vault.decrypt_text(account.token_cache_enc))

    connect_mailbox(client, ca.ca_path, mailbox)  # reconnect
    connect_mailbox(client, ca.ca_path, org.add_user("bob"), consent=False)  # declined
    idp.revoke(mailbox)
    with rt.db.session() as session:
        account = session.scalar(select(Account).where(Account.address == mailbox))
        secrets |= _token_secrets(rt.vault.decrypt_text(account.token_cache_enc))
        with pytest.raises(IdentityError):
            tokens.refreshed_token(session, rt.vault, rt.identity(session), account, MAIL_SCOPES, force_refresh=True)
    page = client.get("/accounts")
    client.get("/api/v1/accounts", headers={"Authorization": "Bearer " + _api_token(app, agent)})
    client.post(f"/accounts/{account.id}/disconnect", data={"csrf_token": csrf_token(_text(page))})
    client.get("/accounts")

    request_finished.disconnect(record, app)
    secrets |= {(_data_dir(app) / KEY_FILE).read_text().strip(), (_data_dir(app) / SECRET_KEY_FILE).read_text().strip()}
    secrets = {s for s in secrets if s}
    assert len(secrets) >= 10 and len(responses) >= 15

    for response in responses:
        body = response.get_data(as_text=True)
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        for secret in secrets:
            assert secret not in body, f"a secret in the body of a {response.status_code} response"
            assert secret not in headers, "a secret in a response header"
    # caplog.text is formatted when each record is emitted, before any filter rewrites the record
    lines = [line for line in caplog.text.splitlines() if " tests." not in line]  # not the test IdP's own
    assert any("connector.accounts" in line for line in lines)  # the app did log
    for line in lines:
        for secret in secrets:
            assert secret not in line, f"a secret in the log line {line[:60]!r}..."
        assert "eyJ0eX" not in line and "eyJhbGci" not in line, line[:60]  # nothing JWT-shaped either


def _api_token(app, user) -> str:
    from connector import users
    with app.extensions["connector"].db.session() as session:
        return users.issue_api_token(session, session.get(type(user), user.id))


def test_the_log_filter_withholds_lines_that_look_like_tokens():
    from connector.runtime import _RedactSecrets

    for text in ("user=a@b.test\x01auth=Bearer abc\x01\x01", "{'access_token': 'x'}", "token eyJ0eXAiOiJKV1QifQ.e.s"):
        record = logging.LogRecord("connector.test", logging.INFO, __file__, 1, "sent %s", (text,), None)
        assert _RedactSecrets().filter(record) is True
        assert record.getMessage() == "[a log line that contained a secret was withheld]"
    harmless = logging.LogRecord("connector.test", logging.INFO, __file__, 1, "mailbox %s connected", ("a@b",), None)
    _RedactSecrets().filter(harmless)
    assert harmless.getMessage() == "mailbox a@b connected"


# -- secrets at rest ------------------------------------------------------------------------------------------

def test_token_cache_and_client_secret_are_not_plaintext_in_the_database(app, client, admin, org, ca):
    login(client, admin.email)
    save_registration(client, org)
    mailbox = org.add_user("carol")
    connect_mailbox(client, ca.ca_path, mailbox)
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        cache = rt.vault.decrypt_text(session.scalar(select(Account)).token_cache_enc)
    refresh_tokens = [e["secret"] for e in json.loads(cache)["RefreshToken"].values()]
    assert refresh_tokens

    with rt.db.engine.connect() as raw:
        [(token_cache,)] = raw.exec_driver_sql("SELECT token_cache_enc FROM accounts").all()
        [(client_secret,)] = raw.exec_driver_sql("SELECT client_secret_enc FROM app_registration").all()
        token_cache, client_secret = bytes(token_cache), bytes(client_secret)
        # nor anywhere in the database: SQLite's files (the WAL included), or every row of PostgreSQL's tables
        if rt.db.is_sqlite:
            everything = {str(path): path.read_bytes() for path in _db_path(app).parent.glob(_db_path(app).name + "*")}
        else:
            tables = raw.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").scalars()
            everything = {table: b"\n".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode()
                                             for row in raw.exec_driver_sql(f'SELECT * FROM "{table}"') for v in row)
                          for table in list(tables)}
    rt.db.dispose()
    for column in (token_cache, client_secret):
        assert column.startswith(b"gAAAAA")  # a Fernet token
    assert org.secret.encode() not in client_secret
    for needle in [b"RefreshToken", b"AccessToken", mailbox.encode()] + [t.encode() for t in refresh_tokens]:
        assert needle not in token_cache
    assert any(mailbox.encode() in data for data in everything.values())  # the search does see the database
    for where, data in everything.items():
        assert org.secret.encode() not in data, where
        for token in refresh_tokens:
            assert token.encode() not in data, where


def test_key_files_are_private(app):
    for name in (KEY_FILE, SECRET_KEY_FILE):
        path = _data_dir(app) / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    Fernet(( _data_dir(app) / KEY_FILE).read_bytes().strip())  # a real Fernet key


def test_the_key_files_are_reused_not_regenerated(app, make_app):
    key = (_data_dir(app) / KEY_FILE).read_bytes()
    secret_key = app.config["SECRET_KEY"]
    again = make_app()
    assert (_data_dir(again) / KEY_FILE).read_bytes() == key and again.config["SECRET_KEY"] == secret_key


@pytest.fixture
def keys():
    return [Fernet.generate_key().decode() for _ in range(2)]


def _connect_one(app, admin_email, org, ca, local):
    client = app.test_client()
    login(client, admin_email)
    save_registration(client, org)
    connect_mailbox(client, ca.ca_path, org.add_user(local))
    return client


def test_encryption_key_from_the_environment(make_app, org, ca, monkeypatch, keys):
    monkeypatch.setenv("CONNECTOR_ENCRYPTION_KEY", keys[0])
    app = make_app()
    assert not (_data_dir(app) / KEY_FILE).exists()  # no key file when the environment gives one
    admin = make_user_for(app, "admin")
    _connect_one(app, admin, org, ca, "dora")
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        Fernet(keys[0]).decrypt(session.scalar(select(AppRegistration)).client_secret_enc)
        Fernet(keys[0]).decrypt(session.scalar(select(Account)).token_cache_enc)


def make_user_for(app, role):
    from connector import users
    email = f"{role}-{id(app)}@helpdesk.test"
    with app.extensions["connector"].db.session() as session:
        users.create_user(session, email, PASSWORD, role)
    return email


def test_rotated_keys_still_decrypt_and_new_data_uses_the_first(make_app, org, ca, monkeypatch, keys):
    old, new = keys
    monkeypatch.setenv("CONNECTOR_ENCRYPTION_KEY", old)
    app = make_app()
    admin = make_user_for(app, "admin")
    _connect_one(app, admin, org, ca, "emil")

    monkeypatch.setenv("CONNECTOR_ENCRYPTION_KEY", f"{new}, {old}")
    rotated = make_app()  # same database, two keys
    rt = rotated.extensions["connector"]
    with rt.db.session() as session:
        assert rt.identity(session) is not None  # the old client secret decrypts
        account = session.scalar(select(Account))
        token = tokens.refreshed_token(session, rt.vault, rt.identity(session), account, MAIL_SCOPES,
                                                   force_refresh=True)
        assert token
        Fernet(new).decrypt(session.scalar(select(Account)).token_cache_enc)  # re-saved under the new key
    client = rotated.test_client()
    login(client, admin)
    page = _text(client.get("/accounts"))
    assert 'data-status="connected"' in page and "Connect Microsoft 365</button>" in page
    assert save_registration(client, org).status_code == 302
    with rt.db.session() as session:
        Fernet(new).decrypt(session.scalar(select(AppRegistration)).client_secret_enc)


def test_a_lost_key_means_reconnecting_not_a_crash(make_app, org, ca, monkeypatch, keys):
    monkeypatch.setenv("CONNECTOR_ENCRYPTION_KEY", keys[0])
    app = make_app()
    admin = make_user_for(app, "admin")
    _connect_one(app, admin, org, ca, "finn")

    monkeypatch.setenv("CONNECTOR_ENCRYPTION_KEY", keys[1])  # the old key is gone
    lost = make_app()
    client = lost.test_client()
    login(client, admin)
    page = client.get("/accounts")
    assert page.status_code == 200 and "finn@" in _text(page)
    assert client.get("/admin/microsoft").status_code == 200
    connect = client.post("/accounts/connect/microsoft", data={"csrf_token": csrf_token(_text(page))})
    assert connect.status_code < 500
    assert "cannot be decrypted with the configured encryption key" in _text(connect)
    assert "save the client secret again" in _text(connect)
    keep = save_registration(client, org, secret="")  # "keep the stored secret" cannot work now
    assert keep.status_code == 400 and "paste the client secret again" in _text(keep)
    assert save_registration(client, org).status_code == 302  # pasting it again fixes it
    rt = lost.extensions["connector"]
    with rt.db.session() as session:
        account = session.scalar(select(Account))
        with pytest.raises(IdentityError):
            tokens.refreshed_token(session, rt.vault, rt.identity(session), account, MAIL_SCOPES)
    with rt.db.session() as session:
        account = session.scalar(select(Account))
        assert account.status == "needs_reconnect" and "cannot be decrypted" in account.last_error
    assert connect_mailbox(client, ca.ca_path, account.address).status_code == 302
    with rt.db.session() as session:
        assert session.scalar(select(Account)).status == "connected"


# -- pages never show a stack trace; headers ---------------------------------------------------------------------

def test_an_unexpected_error_shows_no_stack_trace(app, client, agent, mocker, caplog):
    login(client, agent.email)
    mocker.patch("connector.mailbox_list.mailbox_page", side_effect=RuntimeError("internal detail 1234"))
    response = client.get("/accounts")
    assert response.status_code == 500
    page = _text(response)
    assert "Something went wrong" in page and "Traceback" not in page and "internal detail 1234" not in page
    assert any("unexpected error on GET /accounts" in r.getMessage() for r in caplog.records)


def test_security_headers(client, agent):
    response = client.get("/login")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    login(client, agent.email)
    assert client.get("/auth/microsoft/callback").headers["Cache-Control"] == "no-store"
