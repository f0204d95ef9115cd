"""Signing in from a chosen client address (and proxy header), reading the throttle's counters, moving clocks."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from connector.models import LoginThrottle, utcnow
from tests.support.app import PASSWORD, csrf_token

SESSION_COOKIE = "session"


def environ(ip: str | None = None, forwarded_for: str | None = None) -> dict:
    """WSGI environ for a request from `ip`, optionally carrying an X-Forwarded-For header."""
    env = {"REMOTE_ADDR": ip} if ip else {}
    if forwarded_for is not None:
        env["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return env


def sign_in(client, email: str, password: str = PASSWORD, ip: str | None = None,
            forwarded_for: str | None = None, **query):
    env = environ(ip, forwarded_for)
    page = client.get("/login", environ_base=env)
    return client.post("/login", query_string=query, environ_base=env, data={
        "email": email, "password": password, "csrf_token": csrf_token(page.get_data(as_text=True))})


def sign_out(client, ip: str | None = None) -> None:
    env = environ(ip)
    page = client.get("/account/password", environ_base=env).get_data(as_text=True)
    response = client.post("/logout", data={"csrf_token": csrf_token(page)}, environ_base=env)
    assert response.status_code == 302 and response.headers["Location"] == "/login"


def wait_seconds(response) -> int:
    text = response.get_data(as_text=True)
    assert "Too many failed sign-ins. Wait " in text, text
    return int(text.split("Too many failed sign-ins. Wait ")[1].split(" ")[0])


def failures(app, key: str) -> int:
    """The failure count stored under a throttle key (0 when there is no row)."""
    with app.extensions["connector"].db.session() as session:
        return session.scalar(select(LoginThrottle.failures).where(LoginThrottle.key == key)) or 0


def session_cookie(client) -> str:
    cookie = client.get_cookie(SESSION_COOKIE)
    assert cookie is not None, "no session cookie"
    return cookie.value


def thief_with(app, cookie_value: str):
    """Another browser holding a copy of someone's session cookie."""
    thief = app.test_client()
    thief.set_cookie(SESSION_COOKIE, cookie_value, domain="localhost")
    return thief


class Clock:
    """Moves the throttle's clock (UTC datetimes) forward; `advance(seconds)`."""

    def __init__(self, mocker, target: str = "connector.throttle.utcnow") -> None:
        self.now = utcnow()
        mocker.patch(target, side_effect=lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
