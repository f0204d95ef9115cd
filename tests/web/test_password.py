"""People change their own password (the first-run admin's generated one, above all)."""
from __future__ import annotations

from tests.support.app import PASSWORD, csrf_token, login


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
