"""Sign-in sessions end when they should: sign-out and password change void every copy of the cookie,
inactivity ends them, and signing in starts from a clean session (connector/web/sessions.py)."""
from __future__ import annotations

import time

from flask_login.utils import encode_cookie

from connector.models import User
from tests.support.app import PASSWORD, csrf_token, login
from tests.support.signin import session_cookie, sign_out, thief_with

IDLE_MINUTES = 480  # the default of [app] session_idle_minutes


def _signed_in(client) -> bool:
    response = client.get("/accounts")
    return response.status_code == 200


def test_a_copied_session_cookie_dies_with_sign_out(app, client, agent):
    assert login(client, agent.email).status_code == 302
    stolen = session_cookie(client)
    thief = thief_with(app, stolen)
    assert _signed_in(thief)  # the copy works as long as the session does...
    sign_out(client)
    assert not _signed_in(client)
    assert not _signed_in(thief_with(app, stolen))  # ...and not a moment longer
    assert thief.get("/accounts").headers["Location"].startswith("/login")


def test_sign_out_ends_the_users_other_browsers_too_but_not_other_users(app, agent, make_user):
    laptop, phone = app.test_client(), app.test_client()
    colleague = app.test_client()
    other = make_user("agent")
    for browser, person in ((laptop, agent), (phone, agent), (colleague, other)):
        assert login(browser, person.email).status_code == 302
    sign_out(laptop)
    assert not _signed_in(phone)
    assert _signed_in(colleague)


def test_a_copied_session_cookie_dies_with_a_password_change(app, client, agent):
    login(client, agent.email)
    stolen = session_cookie(client)
    assert _signed_in(thief_with(app, stolen))
    page = client.get("/account/password").get_data(as_text=True)
    response = client.post("/account/password", data={"current": PASSWORD, "new": "a brand new secret",
                                                      "confirm": "a brand new secret", "csrf_token": csrf_token(page)})
    assert response.status_code == 302
    assert _signed_in(client)  # the browser that changed it stays signed in, with a new cookie
    assert session_cookie(client) != stolen
    thief = thief_with(app, stolen)
    bounced = thief.get("/accounts", follow_redirects=True).get_data(as_text=True)
    assert "Your session has ended" in bounced


def test_a_session_idle_past_the_limit_is_over(app, client, agent, mocker):
    now = [int(time.time())]
    mocker.patch("connector.web.sessions._now", side_effect=lambda: now[0])
    login(client, agent.email)
    stolen = session_cookie(client)
    now[0] += (IDLE_MINUTES - 1) * 60
    assert _signed_in(client)  # used in time: the idle clock starts again
    now[0] += (IDLE_MINUTES - 1) * 60
    assert _signed_in(client)
    # the copy taken at sign-in was not used since: it is idle past the limit
    page = thief_with(app, stolen).get("/tickets", follow_redirects=True).get_data(as_text=True)
    assert f"You were signed out after {IDLE_MINUTES} minutes without activity" in page
    now[0] += IDLE_MINUTES * 60 + 1
    assert not _signed_in(client)


def test_the_idle_limit_is_configurable(make_app, mocker):
    app = make_app(app={"session_idle_minutes": 5})
    from connector import users

    with app.extensions["connector"].db.session() as session:
        users.create_user(session, "brief@helpdesk.test", PASSWORD, "agent")
    now = [int(time.time())]
    mocker.patch("connector.web.sessions._now", side_effect=lambda: now[0])
    client = app.test_client()
    login(client, "brief@helpdesk.test")
    now[0] += 4 * 60
    assert _signed_in(client)
    now[0] += 5 * 60 + 1
    assert not _signed_in(client)


def test_the_idle_clock_is_not_rewritten_on_every_request(client, agent):
    login(client, agent.email)
    client.get("/accounts")
    again = client.get("/accounts")
    assert not any(h.startswith("session=") for h in again.headers.getlist("Set-Cookie"))


def test_sign_in_starts_a_fresh_session(app, client, agent):
    page = client.get("/login").get_data(as_text=True)
    before_token = csrf_token(page)
    with client.session_transaction() as session:
        session["ms_flow"] = "a connect flow started before signing in"
        session["anything"] = "else"
    before = session_cookie(client)
    response = client.post("/login", data={"email": agent.email, "password": PASSWORD, "csrf_token": before_token})
    assert response.status_code == 302
    assert session_cookie(client) != before
    with client.session_transaction() as session:
        assert "ms_flow" not in session and "anything" not in session
        assert "csrf_token" not in session  # a new one is made for the next form
    # a form posted with the token from before the sign-in is refused
    refused = client.post("/logout", data={"csrf_token": before_token})
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)
    assert _signed_in(client)
    # and the cookie from before the sign-in is no sign-in at all
    assert not _signed_in(thief_with(app, before))


def test_a_remember_me_cookie_signs_nobody_in(app, agent):
    """Flask-Login would restore a session from a valid remember cookie; ours brings no generation."""
    with app.test_request_context():
        forged = encode_cookie(str(agent.id))  # as valid as one signed with the app's own key can be
    client = app.test_client()
    client.set_cookie("remember_token", forged)
    assert not _signed_in(client)
    # and signing in never hands one out
    fresh = app.test_client()
    response = login(fresh, agent.email)
    assert response.status_code == 302 and fresh.get_cookie("remember_token") is None


def test_a_deactivated_users_copies_end_too(app, client, agent):
    login(client, agent.email)
    thief = thief_with(app, session_cookie(client))
    with app.extensions["connector"].db.session() as session:
        session.get(User, agent.id).is_active = False
    assert not _signed_in(thief) and not _signed_in(client)
