"""Connecting a mailbox with a chosen transport through the real connect flow (form, IdP, callback)."""
from __future__ import annotations

import itertools

from sqlalchemy import select

from connector import registration
from connector.models import Account
from tests.idp.driver import complete_authorization
from tests.support.app import finish_connect, login, post_form

_n = itertools.count(1)


def connect_with_transport(app, org, ca_path, user, transport: str, local: str | None = None,
                           mailbox: str | None = None) -> tuple[int, str]:
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        if registration.stored(session) is None:
            registration.save(session, rt.settings, rt.vault, client_id=org.client_id, tenant=org.tenant_id,
                              client_secret=org.secret, secret_expires_on=None, by="test")
    local = local or f"gbox{next(_n)}"
    address = f"{local}@{org.domain}"
    if address.lower() not in org.idp.users:
        org.add_user(local)
    client = app.test_client()
    login(client, user.email)
    form = {"transport": transport, **({"mailbox": mailbox} if mailbox else {})}
    started = post_form(client, "/accounts/connect/microsoft", form)
    assert started.status_code == 302, started.get_data(as_text=True)
    redirect = complete_authorization(started.headers["Location"], address, "pw", ca_path=ca_path)
    done = finish_connect(client, redirect)
    assert done.status_code == 302, done.get_data(as_text=True)
    with rt.db.session() as session:
        account = session.scalar(select(Account).where(Account.address == (mailbox or address)))
        return account.id, account.address
