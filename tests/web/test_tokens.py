"""API tokens: /account/tokens makes, lists and revokes them; expiry, revocation, deactivation and the
once-a-minute last-use write are enforced where the API checks a token (connector/api_tokens.py)."""
from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from connector import api_tokens
from connector.models import ApiToken, User, utcnow
from tests.support.app import csrf_token, login

API = "/api/v1/accounts"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def create_on_page(client, name: str, expires: str = "90"):
    page = client.get("/account/tokens").get_data(as_text=True)
    return client.post("/account/tokens", data={"name": name, "expires": expires, "csrf_token": csrf_token(page)})


def shown_token(response) -> str:
    match = re.search(r'id="new-token" type="text" value="(ctr_[A-Za-z0-9_-]+)"', response.get_data(as_text=True))
    assert match, "the new token is not on the page"
    return match.group(1)


def revoke_on_page(client, token_id: int):
    page = client.get("/account/tokens").get_data(as_text=True)
    return client.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf_token(page)})


def token_row(app, token_id: int) -> ApiToken:
    with app.extensions["connector"].db.session() as session:
        return session.get(ApiToken, token_id)


def only_token_id(app, user) -> int:
    with app.extensions["connector"].db.session() as session:
        (token_id,) = session.scalars(select(ApiToken.id).where(ApiToken.user_id == user.id)).all()
        return token_id


def test_the_page_needs_a_sign_in_not_a_token(app, client, agent):
    assert client.get("/account/tokens").status_code == 302
    with app.extensions["connector"].db.session() as session:
        token = api_tokens.issue_api_token(session, session.get(User, agent.id))
    assert client.get("/account/tokens", headers=bearer(token)).status_code == 302


def test_create_shows_the_token_once_and_it_works(app, client, agent):
    login(client, agent.email)
    assert "API tokens" in client.get("/tickets").get_data(as_text=True)  # in the navigation
    response = create_on_page(client, "reporting script", "30")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    token = shown_token(response)
    text = response.get_data(as_text=True)
    assert "Copy it now: it is shown only this once." in text and 'data-copy="new-token"' in text
    listing = client.get("/account/tokens").get_data(as_text=True)
    assert token not in listing and "reporting script" in listing
    row = token_row(app, only_token_id(app, agent))
    assert row.name == "reporting script" and row.token_hash != token and token not in row.token_hash
    assert timedelta(days=29, hours=23) < row.expires_at - row.created_at <= timedelta(days=30)
    assert row.last_used_at is None
    assert re.search(r'class="last-used"[^>]*>never</td>', listing)
    api = app.test_client()
    assert api.get(API, headers=bearer(token)).status_code == 200
    used = token_row(app, row.id).last_used_at
    listing = client.get("/account/tokens").get_data(as_text=True)
    assert f'class="last-used" data-label="Last used">{used:%Y-%m-%d %H:%M} UTC</td>' in listing
    assert f'class="expires" data-label="Expires">{row.expires_at:%Y-%m-%d %H:%M} UTC</td>' in listing


def test_a_token_without_expiry(client, app, agent):
    login(client, agent.email)
    response = create_on_page(client, "forever", "never")
    assert "It does not expire." in response.get_data(as_text=True)
    assert token_row(app, only_token_id(app, agent)).expires_at is None


@pytest.mark.parametrize("name, expires, message", [
    ("", "30", "Give the token a name"),
    ("x" * 101, "30", "Field cannot be longer than 100 characters."),
    ("fine", "4000", "Not a valid choice"),
    ("bad\u202ename", "30", "may not contain control or formatting characters"),
])
def test_bad_input_is_a_sentence(app, client, agent, name, expires, message):
    login(client, agent.email)
    response = create_on_page(client, name, expires)
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    with app.extensions["connector"].db.session() as session:
        assert session.scalar(select(ApiToken.id)) is None


def test_revoked_tokens_get_401_with_a_sentence(app, client, agent):
    login(client, agent.email)
    token = shown_token(create_on_page(client, "ci"))
    api = app.test_client()
    assert api.get(API, headers=bearer(token)).status_code == 200
    token_id = only_token_id(app, agent)
    response = revoke_on_page(client, token_id)
    assert response.status_code == 302
    assert "revoked: it stops working at once" in client.get("/account/tokens").get_data(as_text=True)
    refused = api.get(API, headers=bearer(token))
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Bearer realm="connector"'
    body = refused.get_json()
    assert body["error"] == "unauthorized" and body["detail"].startswith("This token was revoked on ")
    assert "/account/tokens" in body["detail"]
    again = revoke_on_page(client, token_id)
    assert again.status_code == 302 and "was revoked already" in client.get("/account/tokens").get_data(as_text=True)
    listing = client.get("/account/tokens").get_data(as_text=True)
    assert f'data-token-id="{token_id}" data-state="revoked"' in listing


def test_expired_tokens_get_401_with_a_sentence(app, client, agent, mocker):
    login(client, agent.email)
    token = shown_token(create_on_page(client, "short-lived", "7"))
    api = app.test_client()
    mocker.patch("connector.api_tokens.utcnow", return_value=utcnow() + timedelta(days=6, hours=23))
    assert api.get(API, headers=bearer(token)).status_code == 200
    mocker.patch("connector.api_tokens.utcnow", return_value=utcnow() + timedelta(days=7, minutes=1))
    refused = api.get(API, headers=bearer(token))
    assert refused.status_code == 401 and refused.get_json()["detail"].startswith("This token expired on ")
    assert 'data-state="expired"' in client.get("/account/tokens").get_data(as_text=True)


def test_unknown_tokens_get_401_with_a_sentence(client):
    refused = client.get(API, headers=bearer("ctr_not-a-token-we-made"))
    assert refused.status_code == 401 and refused.get_json()["detail"].startswith("This token is not valid")


def test_a_deactivated_users_tokens_stop_working(app, client, agent):
    login(client, agent.email)
    token = shown_token(create_on_page(client, "script"))
    with app.extensions["connector"].db.session() as session:
        session.get(User, agent.id).is_active = False
    refused = app.test_client().get(API, headers=bearer(token))
    assert refused.status_code == 401 and "deactivated" in refused.get_json()["detail"]


def test_last_use_is_written_at_most_once_a_minute(app, agent, mocker):
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        token = api_tokens.issue_api_token(session, session.get(User, agent.id), "busy script")
    writes = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE") and "api_tokens" in statement:
            writes.append(statement)
    event.listen(rt.db.engine, "before_cursor_execute", count)
    try:
        start = utcnow()
        clock = mocker.patch("connector.api_tokens.utcnow", return_value=start)
        api = app.test_client()
        for _ in range(5):
            assert api.get(API, headers=bearer(token)).status_code == 200
        assert len(writes) == 1
        clock.return_value = start + timedelta(seconds=59)
        assert api.get(API, headers=bearer(token)).status_code == 200
        assert len(writes) == 1
        clock.return_value = start + timedelta(seconds=61)
        for _ in range(3):
            assert api.get(API, headers=bearer(token)).status_code == 200
        assert len(writes) == 2
    finally:
        event.remove(rt.db.engine, "before_cursor_execute", count)
    with rt.db.session() as session:
        assert session.scalar(select(ApiToken.last_used_at)) == start + timedelta(seconds=61)


def test_people_see_and_revoke_only_their_own_tokens(app, agent, make_user):
    other = make_user("agent")
    mine, theirs = app.test_client(), app.test_client()
    login(mine, agent.email)
    login(theirs, other.email)
    token = shown_token(create_on_page(theirs, "their secret script"))
    assert "their secret script" not in mine.get("/account/tokens").get_data(as_text=True)
    refused = revoke_on_page(mine, only_token_id(app, other))
    assert refused.status_code == 404
    assert revoke_on_page(mine, 999999).status_code == 404  # the same answer as for a token that exists
    assert app.test_client().get(API, headers=bearer(token)).status_code == 200


def test_admins_see_and_revoke_everyones_tokens(app, agent, admin):
    people, boss = app.test_client(), app.test_client()
    login(people, agent.email)
    login(boss, admin.email)
    token = shown_token(create_on_page(people, "leaked script"))
    page = boss.get("/account/tokens").get_data(as_text=True)
    assert "Other people's tokens" in page and "leaked script" in page and agent.email in page
    assert token not in page
    response = revoke_on_page(boss, only_token_id(app, agent))
    assert response.status_code == 302
    assert f"of {agent.email} revoked" in boss.get("/account/tokens").get_data(as_text=True)
    assert app.test_client().get(API, headers=bearer(token)).status_code == 401
    # an agent's page has no such section
    assert "Other people" not in people.get("/account/tokens").get_data(as_text=True)


def test_tokens_appear_in_no_log_and_no_other_page(app, client, agent, caplog):
    caplog.set_level(logging.DEBUG)
    login(client, agent.email)
    created = create_on_page(client, "watched")
    token = shown_token(created)
    pages = [client.get(path).get_data(as_text=True) for path in ("/account/tokens", "/tickets", "/accounts")]
    api = app.test_client()
    api.get(API, headers=bearer(token))
    api.get("/api/v1/tickets", headers=bearer(token))
    revoke_on_page(client, only_token_id(app, agent))
    refused = api.get(API, headers=bearer(token))
    assert refused.status_code == 401
    assert token not in caplog.text and token[4:] not in caplog.text
    assert "API token" in caplog.text  # the creation and revocation were logged, by number
    for text in pages + [refused.get_data(as_text=True)]:
        assert token not in text
