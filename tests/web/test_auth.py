"""Signing in: password hashing, session cookies, throttling of wrong passwords, safe redirects."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from connector.models import LoginThrottle, User, utcnow
from tests.support.app import PASSWORD, csrf_token, login


def _login_as(client, email, password=PASSWORD, ip=None, **query):
    environ = {"REMOTE_ADDR": ip} if ip else {}
    page = client.get("/login", environ_base=environ)
    return client.post("/login", query_string=query, environ_base=environ, data={
        "email": email, "password": password, "csrf_token": csrf_token(page.get_data(as_text=True))})


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


def test_five_wrong_passwords_lock_the_address_until_it_waits(client, agent, mocker):
    for _ in range(5):
        assert _login_as(client, agent.email, "wrong password").status_code == 401
    refused = _login_as(client, agent.email)  # even the right password
    assert refused.status_code == 429
    text = refused.get_data(as_text=True)
    assert "Too many failed sign-ins. Wait" in text and "seconds" in text
    assert client.get("/accounts").status_code == 302  # not signed in

    later = utcnow() + timedelta(minutes=20)
    mocker.patch("connector.users.utcnow", return_value=later)
    assert _login_as(client, agent.email).status_code == 302


def test_a_successful_sign_in_resets_the_count(app, client, agent):
    for _ in range(4):
        assert _login_as(client, agent.email, "wrong password").status_code == 401
    assert _login_as(client, agent.email).status_code == 302
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        assert session.get(LoginThrottle, f"email:{agent.email}") is None
    client.post("/logout", data={"csrf_token": csrf_token(client.get("/accounts").get_data(as_text=True))})
    for _ in range(4):  # four more: without the reset this would be nine, and locked
        assert _login_as(client, agent.email, "wrong password").status_code == 401
    assert _login_as(client, agent.email).status_code == 302


def test_the_lock_grows_with_more_failures(client, agent, mocker):
    for _ in range(5):
        _login_as(client, agent.email, "wrong password")
    first = _login_as(client, agent.email).get_data(as_text=True)
    mocker.patch("connector.users.utcnow", return_value=utcnow() + timedelta(minutes=1))
    assert _login_as(client, agent.email, "wrong again").status_code == 401  # sixth failure
    second = _login_as(client, agent.email)
    assert second.status_code == 429
    wait = lambda text: int(text.split("Wait ")[1].split(" ")[0])  # noqa: E731
    assert wait(second.get_data(as_text=True)) > wait(first)


def test_one_client_guessing_many_addresses_is_slowed_down(client, make_user):
    victim = make_user("agent")
    for n in range(20):
        _login_as(client, f"guess{n}@helpdesk.test", "wrong password", ip="203.0.113.7")
    assert _login_as(client, victim.email, ip="203.0.113.7").status_code == 429
    assert _login_as(client, victim.email, ip="198.51.100.2").status_code == 302


def test_old_failures_are_forgotten(client, make_user, mocker):
    """An office behind one address must not be locked out for good by weeks of typos."""
    user = make_user("agent")
    for n in range(19):
        _login_as(client, f"typo{n}@helpdesk.test", "wrong password", ip="203.0.113.9")
    mocker.patch("connector.users.utcnow", return_value=utcnow() + timedelta(hours=2))
    _login_as(client, "typo-late@helpdesk.test", "wrong password", ip="203.0.113.9")  # the twentieth
    assert _login_as(client, user.email, ip="203.0.113.9").status_code == 302


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
