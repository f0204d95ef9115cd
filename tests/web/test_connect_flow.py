"""The foundation end to end, without a browser: register the app, connect a mailbox, see it."""
from __future__ import annotations

from sqlalchemy import select

from connector.models import Account
from tests.support.app import connect_mailbox, csrf_token, login, save_registration


def test_admin_registers_and_agent_connects(app, client, admin, agent, org, ca, idp):
    assert login(client, admin.email).status_code == 302
    response = save_registration(client, org)
    assert response.status_code == 302, response.get_data(as_text=True)
    page = client.get("/admin/microsoft").get_data(as_text=True)
    assert org.client_id in page
    assert "http://localhost/auth/microsoft/callback" in page
    assert org.secret not in page

    client.post("/logout", data={"csrf_token": csrf_token(page)})
    assert login(client, agent.email).status_code == 302
    mailbox = org.add_user("alice")
    response = connect_mailbox(client, ca.ca_path, mailbox)
    assert response.status_code == 302, response.get_data(as_text=True)
    listing = client.get("/accounts").get_data(as_text=True)
    assert mailbox in listing and "connected" in listing

    rt = app.extensions["connector"]
    with rt.db.session() as session:
        account = session.scalar(select(Account).where(Account.address == mailbox))
        assert account.status == "connected"
        assert b"RefreshToken" not in account.token_cache_enc and b"secret" not in account.token_cache_enc
        assert "RefreshToken" in rt.vault.decrypt_text(account.token_cache_enc)
