"""People change their own password (the first-run admin's generated one, above all)."""
from __future__ import annotations

import re

from tests.support.app import PASSWORD, csrf_token, login
from connector.web import devices
from tests.support.signin import failures, sign_in


def change(client, current, new, confirm=None):
    page = client.get("/account/password").get_data(as_text=True)
    return client.post("/account/password", data={"current": current, "new": new, "confirm": confirm or new,
                                                    "csrf_token": csrf_token(page)})


def test_change_password(app, client, agent):
    login(client, agent.email)
    assert change(client, "wrong password", "a brand new secret").status_code == 400
    assert "current password is wrong" in change(client, "wrong password", "a brand new secret").get_data(True)
    assert "at least 10" in change(client, PASSWORD, "short").get_data(as_text=True)
    assert "differ" in change(client, PASSWORD, "a brand new secret", "something else").get_data(as_text=True)
    assert change(client, PASSWORD, "a brand new secret").status_code == 302
    fresh = app.test_client()
    assert login(fresh, agent.email, PASSWORD).status_code == 401
    assert login(fresh, agent.email, "a brand new secret").status_code == 302


def test_password_page_needs_sign_in_and_csrf(client, agent):
    assert client.get("/account/password").status_code == 302
    login(client, agent.email)
    response = client.post("/account/password", data={"current": PASSWORD, "new": "another long one",
                                                      "confirm": "another long one"})
    assert response.status_code == 400


def test_the_current_password_check_is_throttled(app, client, agent):
    """A borrowed signed-in browser must not become a way to guess the password (and then change it)."""
    login(client, agent.email)
    for n in range(5):
        response = change(client, f"guess number {n}", "a brand new secret")
        assert response.status_code == 400 and "current password is wrong" in response.get_data(as_text=True)
    refused = change(client, PASSWORD, "a brand new secret")  # even the right one is not checked now
    assert refused.status_code == 429
    # the first lock is 5 s from the last failure; a loaded machine may take a second to get here
    assert re.search(r"Too many failed sign-ins\. Wait [1-5] seconds", refused.get_data(as_text=True))
    assert login(app.test_client(), agent.email, PASSWORD).status_code == 302  # unchanged


def test_without_a_device_cookie_the_password_page_and_sign_in_share_the_count(app, client, agent):
    login(client, agent.email)
    client.delete_cookie(devices.COOKIE)
    for n in range(5):
        assert change(client, f"guess number {n}", "a brand new secret").status_code == 400
    # the sign-in form from the same address is held up as well: it is the same guessing
    assert sign_in(app.test_client(), agent.email).status_code == 429


def test_a_right_current_password_gives_its_attempt_back(app, client, agent):
    login(client, agent.email)
    client.delete_cookie(devices.COOKIE)  # counted by address then
    for n in range(4):
        change(client, f"guess number {n}", "a brand new secret")
    assert change(client, PASSWORD, "a brand new secret").status_code == 302
    assert failures(app, f"pair:{agent.email}|127.0.0.1") == 0
    assert failures(app, "client:127.0.0.1") == 4  # the four wrong ones stay, the right one is given back
