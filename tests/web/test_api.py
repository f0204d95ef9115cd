"""REST API v1: health without auth, bearer tokens for the rest, errors as {"error", "detail"}."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from connector import users
from connector.models import Account, AccountMember, ApiToken, User, utcnow
from tests.support.app import connect_mailbox, login, save_registration


def token_for(app, user) -> str:
    with app.extensions["connector"].db.session() as session:
        return users.issue_api_token(session, session.get(User, user.id))


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def add_account(app, owner, address, **fields) -> int:
    with app.extensions["connector"].db.session() as session:
        account = Account(address=address, connected_by_id=owner.id, **fields)
        session.add(account)
        session.flush()
        return account.id


def test_health_needs_no_token_and_tells_strangers_nothing_about_the_host(app, client, agent, admin):
    import os
    import socket

    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    # an agent's token, a wrong token and a signed-in browser get the same short answer
    login(client, agent.email)
    for headers in ({}, bearer(token_for(app, agent)), bearer("ctr_not-a-token"), {"Authorization": "Basic eDp5"}):
        body = client.get("/api/v1/health", headers=headers)
        assert body.status_code == 200 and body.get_json() == {"status": "ok", "database": "ok"}, headers
        text = body.get_data(as_text=True)
        assert socket.gethostname() not in text and str(os.getpid()) not in text

    from connector.worker import Worker

    Worker(app.extensions["connector"], name="health")  # as `connector serve` has one (not started here)
    anonymous = client.get("/api/v1/health")
    assert anonymous.get_json() == {"status": "ok", "database": "ok"}
    assert socket.gethostname() not in anonymous.get_data(as_text=True)
    detailed = client.get("/api/v1/health", headers=bearer(token_for(app, admin))).get_json()
    assert detailed["status"] == "ok" and detailed["worker"]["id"] == f"{socket.gethostname()}:{os.getpid()}:health"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Bearer not-a-token", "Basic dXNlcjpwYXNz",
                                    "ctr_abc"])
def test_accounts_without_a_valid_token_is_401(client, header):
    headers = {"Authorization": header} if header is not None else {}
    response = client.get("/api/v1/accounts", headers=headers)
    assert response.status_code == 401
    body = response.get_json()
    assert body["error"] == "unauthorized" and "connector create-token" in body["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_signed_in_browser_session_is_not_an_api_token(client, agent):
    login(client, agent.email)
    assert client.get("/api/v1/accounts").status_code == 401


def test_accounts_lists_what_the_user_may_see(app, client, admin, agent, make_user):
    other = make_user("agent")
    mine = add_account(app, agent, "mine@company.test")
    add_account(app, other, "theirs@company.test", status="needs_reconnect",
                last_error="Microsoft revoked the sign-in (AADSTS50173): reconnect the mailbox.")
    shared = add_account(app, other, "shared@company.test", last_sync_at=utcnow().replace(microsecond=0))
    with app.extensions["connector"].db.session() as session:
        session.add(AccountMember(account_id=shared, user_id=agent.id))

    agent_view = client.get("/api/v1/accounts", headers=bearer(token_for(app, agent)))
    assert agent_view.status_code == 200 and agent_view.content_type == "application/json"
    rows = agent_view.get_json()
    assert [r["address"] for r in rows] == ["mine@company.test", "shared@company.test"]
    assert set(rows[0]) == {"id", "address", "status", "last_sync_at", "last_error", "provider", "transport"}
    assert rows[0] == {"id": mine, "address": "mine@company.test", "status": "connected", "last_sync_at": None,
                       "last_error": None, "provider": "microsoft", "transport": "imap"}
    assert rows[1]["last_sync_at"].endswith("Z")

    admin_rows = client.get("/api/v1/accounts", headers=bearer(token_for(app, admin))).get_json()
    assert [r["address"] for r in admin_rows] == ["mine@company.test", "shared@company.test", "theirs@company.test"]
    theirs = admin_rows[2]
    assert theirs["status"] == "needs_reconnect" and "AADSTS50173" in theirs["last_error"]


def test_statuses_are_the_contracts(app, client, admin, agent):
    for status in ("connected", "needs_reconnect", "error", "disabled"):
        add_account(app, agent, f"{status}@company.test", status=status)
    rows = client.get("/api/v1/accounts", headers=bearer(token_for(app, admin))).get_json()
    assert {r["address"].split("@")[0]: r["status"] for r in rows} == {
        "connected": "connected", "needs_reconnect": "needs_reconnect", "error": "error", "disabled": "disabled"}


def test_tokens_are_stored_hashed_and_can_be_revoked(app, client, agent):
    token = token_for(app, agent)
    assert token.startswith("ctr_") and len(token) > 40
    with app.extensions["connector"].db.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.user_id == agent.id))
        assert token not in row.token_hash and len(row.token_hash) == 64
    assert client.get("/api/v1/accounts", headers=bearer(token)).status_code == 200
    with app.extensions["connector"].db.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.user_id == agent.id))
        assert row.last_used_at is not None
        row.revoked_at = utcnow()
    assert client.get("/api/v1/accounts", headers=bearer(token)).status_code == 401


def test_a_deactivated_users_token_stops_working(app, client, agent):
    token = token_for(app, agent)
    with app.extensions["connector"].db.session() as session:
        session.get(User, agent.id).is_active = False
    assert client.get("/api/v1/accounts", headers=bearer(token)).status_code == 401


def test_api_errors_are_json(app, client, agent):
    token = token_for(app, agent)
    missing = client.get("/api/v1/nothing-here", headers=bearer(token))
    assert missing.status_code == 404 and set(missing.get_json()) == {"error", "detail"}
    wrong_method = client.delete("/api/v1/accounts", headers=bearer(token))
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"] == "method_not_allowed"


def test_the_api_after_a_real_connection(app, client, admin, agent, org, ca):
    login(client, admin.email)
    save_registration(client, org)
    mailbox = org.add_user("sam")
    connect_mailbox(client, ca.ca_path, mailbox)
    rows = client.get("/api/v1/accounts", headers=bearer(token_for(app, admin))).get_json()
    assert [(r["address"], r["status"], r["last_error"]) for r in rows] == [(mailbox, "connected", None)]
    assert client.get("/api/v1/accounts", headers=bearer(token_for(app, agent))).get_json() == []
