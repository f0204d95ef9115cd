"""Signing in: password hashing, session cookies, safe redirects (throttling: test_signin_throttle.py;
session lifetime: test_sessions.py)."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from connector.models import User
from tests.support.app import PASSWORD, csrf_token, login
from tests.support.signin import sign_in as _login_as


def test_sign_in_and_out(client, agent):
    response = login(client, agent.email)
    assert response.status_code == 302 and response.headers["Location"] == "/tickets"
    page = client.get("/accounts").get_data(as_text=True)
    assert agent.email in page and "Sign out" in page
    response = client.post("/logout", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert client.get("/accounts").status_code == 302  # signed out for real
    assert client.get("/logout").status_code == 405  # signing out is a POST with a CSRF token


def test_wrong_password_and_unknown_user_look_the_same(client, agent):
    wrong = login(client, agent.email, "not the password")
    unknown = login(client, "nobody@helpdesk.test", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    for response in (wrong, unknown):
        assert "Wrong email or password." in response.get_data(as_text=True)
    assert client.get("/accounts").status_code == 302


def test_email_is_case_insensitive(client, agent):
    assert login(client, agent.email.upper()).status_code == 302


def test_passwords_are_hashed_with_scrypt(app, agent):
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        stored = session.scalar(select(User.password_hash).where(User.id == agent.id))
    assert stored.startswith("scrypt:") and PASSWORD not in stored


def test_session_cookie_is_httponly_and_samesite(client, agent):
    response = login(client, agent.email)
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("session="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert "httponly" in attributes
    assert "samesite=lax" in cookie.lower()
    assert "secure" not in attributes  # plain http://localhost in the tests


def test_session_cookie_is_secure_behind_https(make_app):
    app = make_app(app={"base_url": "https://helpdesk.example"})
    client = app.test_client()
    page = client.get("/login", base_url="https://helpdesk.example")
    cookie = next(h for h in page.headers.getlist("Set-Cookie") if h.startswith("session="))
    assert "; secure" in cookie.lower() and "httponly" in cookie.lower()


def test_next_leads_back_to_the_page_asked_for(client, agent):
    bounced = client.get("/accounts")
    assert bounced.status_code == 302 and "/login?next=" in bounced.headers["Location"]
    response = _login_as(client, agent.email, next="/accounts")
    assert response.headers["Location"] == "/accounts"


@pytest.mark.parametrize("target", [
    "https://evil.test/", "//evil.test/", "///evil.test/", "/\\evil.test", "\\\\evil.test", "/\t/evil.test",
    "/\\/evil.test", "javascript:alert(1)", "http:evil.test", " //evil.test",
])
def test_next_cannot_send_people_elsewhere(client, agent, target):
    response = _login_as(client, agent.email, next=target)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location == "/tickets", location
    # and once signed in, /login?next= is just as careful
    again = client.get("/login", query_string={"next": target})
    assert again.headers["Location"] == "/tickets"


def _browser_target(location: str) -> str:
    """Where a browser would go: it treats backslashes as slashes and drops tabs and newlines."""
    cleaned = location.replace("\\", "/").replace("\t", "").replace("\n", "").replace("\r", "")
    return urlsplit(cleaned).netloc


def test_local_next_with_query_is_kept(client, agent):
    response = _login_as(client, agent.email, next="/tickets?status=open")
    assert response.headers["Location"] == "/tickets?status=open"
    assert _browser_target(response.headers["Location"]) == ""


def test_inactive_user_cannot_sign_in(app, client, agent):
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        session.get(User, agent.id).is_active = False
    assert login(client, agent.email).status_code == 401


def test_a_deactivated_user_is_signed_out(app, client, agent):
    assert login(client, agent.email).status_code == 302
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        session.get(User, agent.id).is_active = False
    assert client.get("/accounts").status_code == 302
