"""Mailboxes: connecting through the test IdP, every way it can go wrong, reconnect, disconnect, who sees what,
who may change what, and that a mailbox stays with the Microsoft identity that connected it.

Shared mailboxes (a delegate's access proven against Dovecot) are in tests/sync/test_shared_mailbox.py.
"""
from __future__ import annotations

import html
import json
import re
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from sqlalchemy import func, select

from connector import accounts as accounts_service
from connector.identity.microsoft import IdentityError
from connector.models import Account, AccountMember, Ticket
from connector.web.accounts import connect_csp
from connector import tokens
from connector.identity.microsoft import MAIL_SCOPES
from tests.idp.driver import complete_authorization
from tests.support.app import (connect_mailbox, csrf_token, finish_connect, login, post_form, reconnect_mailbox,
                               save_registration, start_connect, start_reconnect)


def _text(response) -> str:
    return response.get_data(as_text=True)


def _connect_error(response) -> str:
    """The sentence on the "not connected" page, unescaped; the page must be a clean 4xx."""
    page = _text(response)
    assert 400 <= response.status_code < 500, (response.status_code, page)
    assert "Traceback" not in page and "Something went wrong" not in page
    match = re.search(r'<p class="problem" role="alert" id="connect-error">(.*?)</p>', page, re.S)
    assert match, page
    return html.unescape(match.group(1))


def _accounts(app) -> list[Account]:
    with app.extensions["connector"].db.session() as session:
        return list(session.scalars(select(Account).order_by(Account.id)))


def _row(page: str, address: str) -> str:
    match = re.search(rf'<tr data-address="{re.escape(address)}".*?</tr>', page, re.S)
    assert match, f"{address} is not listed"
    return match.group(0)


def _with_query(url: str, **changes) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def registered(client, admin, org):
    """The app is registered (by an admin, who is then signed out again)."""
    login(client, admin.email)
    assert save_registration(client, org).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(_text(client.get("/admin/microsoft")))})
    return org


def sign_in(client, user):
    assert login(client, user.email).status_code == 302
    return user


def refresh_tokens(app, account_id: int) -> set[str]:
    """The refresh tokens in a mailbox's stored (decrypted) cache: what a reconnect replaces."""
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        sealed = session.get(Account, account_id).token_cache_enc
        cache = json.loads(rt.vault.decrypt_text(sealed)) if sealed else {}
    return {entry["secret"] for entry in cache.get("RefreshToken", {}).values()}


def members_of(app, account_id: int) -> set[int]:
    with app.extensions["connector"].db.session() as session:
        return set(session.scalars(select(AccountMember.user_id).where(AccountMember.account_id == account_id)))


def api_accounts(app, user) -> list[dict]:
    from connector import users
    with app.extensions["connector"].db.session() as session:
        token = users.issue_api_token(session, session.get(type(user), user.id))
    response = app.test_client().get("/api/v1/accounts", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    return response.get_json()


# -- connecting ------------------------------------------------------------------------------------------

def test_connect_sends_the_browser_straight_to_the_authority(client, agent, registered, idp):
    sign_in(client, agent)
    page = _text(client.get("/accounts"))
    form = re.search(r'<form class="actions" method="post" action="/accounts/connect/microsoft">(.*?)</form>',
                     page, re.S)
    assert form and 'name="csrf_token"' in form.group(1) and ">Connect Microsoft 365</button>" in form.group(1)
    location = start_connect(client)
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == idp.url
    assert parts.path == f"/{registered.tenant_id}/oauth2/v2.0/authorize"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["client_id"] == registered.client_id
    assert query["redirect_uri"] == "http://localhost/auth/microsoft/callback"
    assert query["response_type"] == "code" and query["prompt"] == "select_account"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) >= 43
    assert len(query["state"]) >= 16 and len(query["nonce"]) >= 16
    assert set(query["scope"].split()) == {
        "offline_access", "openid", "profile", "email",
        "https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send"}
    assert "code_verifier" not in parts.query and registered.secret not in location


def test_starting_a_connect_is_a_post_with_a_csrf_token(app, client, agent, registered, ca):
    """A link or a form on another site cannot start a sign-in in an agent's session."""
    sign_in(client, agent)
    assert client.get("/accounts/connect/microsoft").status_code == 405
    assert client.get("/accounts/connect/microsoft?mailbox=support@org.test").status_code == 405
    for data in ({}, {"csrf_token": "forged"}, {"mailbox": "support@org.test"}):
        response = client.post("/accounts/connect/microsoft", data=data)
        assert response.status_code == 400 and "CSRF check failed" in _text(response)
        assert "Location" not in response.headers
    with client.session_transaction() as session:
        assert "ms_flow" not in session
    connect_mailbox(client, ca.ca_path, registered.add_user("zoe"))
    [account] = _accounts(app)
    assert client.get(f"/accounts/{account.id}/reconnect").status_code == 405
    response = client.post(f"/accounts/{account.id}/reconnect")
    assert response.status_code == 400 and "Location" not in response.headers


def test_connect_forms_may_reach_the_configured_authority_and_nothing_else(client, agent, registered, idp):
    """Chromium applies form-action to the redirect after a form POST: the authority must be allowed there."""
    sign_in(client, agent)
    csp = client.get("/accounts").headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert directives["form-action"] == ["'self'", idp.url]
    assert directives["default-src"] == ["'self'"] and directives["script-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'self'"] and directives["object-src"] == ["'none'"]
    # pages without a connect form keep form-action 'self' alone
    for path in ("/tickets", "/account/password"):
        assert "form-action 'self';" in client.get(path).headers["Content-Security-Policy"]


@pytest.mark.parametrize("authority, allowed", [
    ("https://login.microsoftonline.com", "https://login.microsoftonline.com"),
    ("https://login.microsoftonline.us/", "https://login.microsoftonline.us"),
    ("https://127.0.0.1:8443/", "https://127.0.0.1:8443"),
    ("http://login.example", None),  # msal never talks to a plain-http authority
    ("https://evil.example; script-src *", None),
    ("https://a.example 'unsafe-inline'", None),
    ("https://*.example", None),
])
def test_the_connect_csp_names_one_https_origin(authority, allowed):
    form_action = next(d for d in connect_csp(authority).split("; ") if d.startswith("form-action"))
    assert form_action == ("form-action 'self'" + (f" {allowed}" if allowed else ""))
    assert connect_csp(authority).count(";") == connect_csp("https://x.example").count(";")


def test_each_connect_has_its_own_state_and_pkce(client, agent, registered):
    sign_in(client, agent)
    first, second = (parse_qs(urlsplit(start_connect(client)).query) for _ in range(2))
    for key in ("state", "nonce", "code_challenge"):
        assert first[key] != second[key]


def test_connecting_lists_the_mailbox_as_connected(app, client, agent, registered, ca):
    sign_in(client, agent)
    mailbox = registered.add_user("alice", name="Alice Example")
    response = connect_mailbox(client, ca.ca_path, mailbox)
    assert response.status_code == 302 and response.headers["Location"] == "/accounts"
    page = _text(client.get("/accounts"))
    assert f"{mailbox} is connected." in page
    row = _row(page, mailbox)
    assert 'data-status="connected"' in row and ">Reconnect</button>" in row and ">Disconnect</button>" in row
    assert re.search(rf'<td class="owner" data-label="Owner">{re.escape(agent.email)} <small class="badge">you</small>', row)
    [account] = _accounts(app)
    assert (account.address, account.status, account.connected_by_id) == (mailbox, "connected", agent.id)
    assert account.display_name == "Alice Example" and account.tenant_id == registered.tenant_id
    assert account.token_subject == registered.idp.users[mailbox].oid  # the ID token's oid, not the name
    assert account.home_account_id.endswith("." + registered.tenant_id)


def test_connect_before_the_app_is_registered(client, agent, admin):
    sign_in(client, agent)
    page = _text(client.get("/accounts"))
    assert "The Microsoft 365 app is not registered yet." in page and "Ask an admin to register it." in page
    assert "Connect Microsoft 365</button>" not in page
    response = post_form(client, "/accounts/connect/microsoft")
    assert response.status_code == 409
    assert "cannot be connected. Ask an admin to do it." in _text(response)


def test_connect_needs_a_sign_in(client, registered):
    for path in ("/accounts", "/auth/microsoft/callback?code=x&state=y"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    token = csrf_token(_text(client.get("/login")))  # a real token, of an anonymous session
    for path in ("/accounts/connect/microsoft", "/accounts/1/reconnect"):
        response = client.post(path, data={"csrf_token": token})
        assert response.status_code == 302 and response.headers["Location"].startswith("/login")


# -- consent and sign-in problems: a sentence, never a stack trace -----------------------------------------

def test_declined_consent(app, client, agent, registered, ca):
    sign_in(client, agent)
    mailbox = registered.add_user("bob")
    message = _connect_error(connect_mailbox(client, ca.ca_path, mailbox, consent=False))
    assert message == ("The permissions were declined at Microsoft (AADSTS65004), so no mailbox was connected: "
                       "click \"Connect Microsoft 365\" again and choose Accept.")
    assert _accounts(app) == []


def test_missing_admin_consent_then_granted(app, client, agent, registered, ca, idp):
    sign_in(client, agent)
    mailbox = registered.add_user("carol", needs_admin_consent=True)
    message = _connect_error(connect_mailbox(client, ca.ca_path, mailbox))
    assert "the admin has not consented to IMAP.AccessAsUser.All and SMTP.Send for this tenant (AADSTS65001)" \
        in message
    consent_url = f"{idp.url}/{registered.tenant_id}/v2.0/adminconsent?client_id={registered.client_id}"
    assert f"ask an admin to grant consent (an admin can open {consent_url}" in message
    assert message.endswith("then reconnect.")
    assert _accounts(app) == []
    idp.grant_admin_consent(registered.tenant, registered.app)
    assert connect_mailbox(client, ca.ca_path, mailbox).status_code == 302
    assert [a.address for a in _accounts(app)] == [mailbox]


def test_single_tenant_app_saved_as_organizations(app, client, admin, agent, org, ca):
    sign_in(client, admin)
    assert save_registration(client, org, tenant="organizations").status_code == 302
    mailbox = org.add_user("dave")
    message = _connect_error(connect_mailbox(client, ca.ca_path, mailbox))
    assert message.startswith("The app is registered for a single tenant, but the Tenant ID here is "
                              "\"organizations\" (AADSTS50194): enter the app's Directory (tenant) ID")
    assert _accounts(app) == []


def test_a_user_of_another_organisation(app, client, agent, registered, make_org, ca):
    stranger = make_org().add_user("eve")
    sign_in(client, agent)
    message = _connect_error(connect_mailbox(client, ca.ca_path, stranger))
    assert "is not a member of the app's tenant (AADSTS50020)" in message
    assert "sign in with an account of that organisation" in message


def test_the_authority_is_unreachable_when_connecting(make_app, client, agent, registered):
    from tests.support.net import free_port
    offline = make_app(microsoft={"authority_host": f"https://127.0.0.1:{free_port()}"})  # same database
    other = offline.test_client()
    sign_in(other, agent)
    response = post_form(other, "/accounts/connect/microsoft")
    assert response.status_code == 502
    page = _text(response)
    assert "cannot be reached (ConnectionError)" in page and "Traceback" not in page


def test_the_token_endpoint_fails_at_the_callback(app, client, agent, registered, ca, mocker):
    sign_in(client, agent)
    mailbox = registered.add_user("frank")
    redirect = complete_authorization(start_connect(client), mailbox, "pw", ca_path=ca.ca_path)
    mocker.patch.object(requests.Session, "post", side_effect=requests.exceptions.ConnectTimeout("slow"))
    message = _connect_error(finish_connect(client, redirect))
    assert "cannot be reached (ConnectTimeout)" in message
    assert _accounts(app) == []


# -- state: the answer must belong to a sign-in started here, once ---------------------------------------------

def test_a_callback_with_a_wrong_state_is_refused(app, client, agent, registered, ca):
    sign_in(client, agent)
    mailbox = registered.add_user("gina")
    redirect = complete_authorization(start_connect(client), mailbox, "pw", ca_path=ca.ca_path)
    message = _connect_error(finish_connect(client, _with_query(redirect, state="forged-state")))
    assert "does not belong to a sign-in started here (the state does not match)" in message
    assert "Start again with \"Connect Microsoft 365\"" in message
    assert _accounts(app) == []
    # the sign-in it interrupted is spent too: its state cannot be tried again
    assert "state does not match" in _connect_error(finish_connect(client, redirect))
    assert _accounts(app) == []


def test_a_replayed_callback_is_refused(app, client, agent, registered, ca):
    sign_in(client, agent)
    mailbox = registered.add_user("hank")
    redirect = complete_authorization(start_connect(client), mailbox, "pw", ca_path=ca.ca_path)
    assert finish_connect(client, redirect).status_code == 302
    assert "state does not match" in _connect_error(finish_connect(client, redirect))
    assert len(_accounts(app)) == 1


def test_a_callback_stolen_into_another_session_is_refused(app, client, agent, make_user, registered, ca):
    sign_in(client, agent)
    mailbox = registered.add_user("ivy")
    redirect = complete_authorization(start_connect(client), mailbox, "pw", ca_path=ca.ca_path)
    attacker = app.test_client()
    sign_in(attacker, make_user("agent"))
    start_connect(attacker)  # even with a sign-in of its own under way
    assert "state does not match" in _connect_error(finish_connect(attacker, redirect))
    assert _accounts(app) == []


def test_a_forged_callback_without_a_sign_in_is_refused(app, client, agent, registered):
    sign_in(client, agent)
    for query in ({"code": "1.AQforged", "state": "x"}, {"error": "access_denied", "state": "x"}, {}):
        assert "state does not match" in _connect_error(client.get("/auth/microsoft/callback", query_string=query))
    assert _accounts(app) == []


def test_a_sign_in_started_by_another_user_is_not_used(app, client, agent, make_user, registered, ca):
    """Agent A starts a connect and walks away; B signs in on the same browser and A's answer arrives."""
    sign_in(client, agent)
    mailbox = registered.add_user("ida")
    redirect = complete_authorization(start_connect(client), mailbox, "pw", ca_path=ca.ca_path)
    post_form(client, "/logout")
    sign_in(client, make_user("agent"))
    message = _connect_error(finish_connect(client, redirect))
    # refused for what it is (another user's sign-in), or earlier if signing in cleared the pending flow
    assert "started by another user of this browser" in message or "state does not match" in message
    assert _accounts(app) == []


def test_a_tampered_flow_cookie_is_refused(app, client, agent, registered, ca):
    sign_in(client, agent)
    mailbox = registered.add_user("jack")
    redirect = complete_authorization(start_connect(client), mailbox, "pw", ca_path=ca.ca_path)
    with client.session_transaction() as session:
        session["ms_flow"] = "not-a-fernet-token"
    assert "state does not match" in _connect_error(finish_connect(client, redirect))


# -- reconnect, disconnect, needs reconnect ----------------------------------------------------------------

def test_connecting_the_same_mailbox_again_reconnects_it(app, client, agent, registered, ca):
    sign_in(client, agent)
    mailbox = registered.add_user("kim")
    connect_mailbox(client, ca.ca_path, mailbox)
    [first] = _accounts(app)
    response = connect_mailbox(client, ca.ca_path, mailbox.upper())  # sign in with other case
    assert response.status_code == 302
    assert f"{mailbox} is reconnected." in _text(client.get("/accounts"))
    [again] = _accounts(app)
    assert again.id == first.id and again.token_cache_enc != first.token_cache_enc


def test_reconnect_button_goes_to_the_authority_with_a_login_hint(app, client, agent, registered, ca, idp):
    sign_in(client, agent)
    mailbox = registered.add_user("lena")
    connect_mailbox(client, ca.ca_path, mailbox)
    [account] = _accounts(app)
    before = refresh_tokens(app, account.id)
    row = _row(_text(client.get("/accounts")), mailbox)
    assert f'<form method="post" action="/accounts/{account.id}/reconnect" class="inline">' in row
    location = start_reconnect(client, account.id)
    assert location.startswith(idp.url + "/")
    assert parse_qs(urlsplit(location).query)["login_hint"] == [mailbox]
    redirect = complete_authorization(location, mailbox, "pw", ca_path=ca.ca_path)
    assert finish_connect(client, redirect).status_code == 302
    assert f"{mailbox} is reconnected." in _text(client.get("/accounts"))
    assert len(_accounts(app)) == 1 and refresh_tokens(app, account.id).isdisjoint(before)


def test_reconnect_must_sign_in_as_that_mailbox(app, client, agent, registered, ca):
    sign_in(client, agent)
    mailbox, other = registered.add_user("lars"), registered.add_user("lisa")
    connect_mailbox(client, ca.ca_path, mailbox)
    [account] = _accounts(app)
    before = refresh_tokens(app, account.id)
    message = _connect_error(reconnect_mailbox(client, ca.ca_path, account.id, other))
    assert message == (f"You signed in as {other}, but Reconnect was for {mailbox}: nothing was changed. Click "
                       f"Reconnect again and sign in as {mailbox}.")
    assert [a.address for a in _accounts(app)] == [mailbox]  # and lisa's mailbox was not added either
    assert refresh_tokens(app, account.id) == before


def test_a_revoked_grant_shows_needs_reconnect_and_reconnecting_fixes_it(app, client, agent, registered, ca, idp):
    sign_in(client, agent)
    mailbox = registered.add_user("mona")
    connect_mailbox(client, ca.ca_path, mailbox)
    idp.revoke(mailbox, code=50173)
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        account = session.scalar(select(Account))
        with pytest.raises(IdentityError):
            tokens.refreshed_token(session, rt.vault, rt.identity(session), account, MAIL_SCOPES, force_refresh=True)
    row = _row(_text(client.get("/accounts")), mailbox)
    assert 'data-status="needs_reconnect"' in row and "needs reconnect" in row
    assert "Microsoft revoked the sign-in, for example after a password change (AADSTS50173): reconnect the " \
           "mailbox." in row
    assert ">Reconnect</button>" in row
    api = api_accounts(app, agent)
    assert api[0]["status"] == "needs_reconnect" and "AADSTS50173" in api[0]["last_error"]

    account_id = _accounts(app)[0].id
    assert reconnect_mailbox(client, ca.ca_path, account_id, mailbox).status_code == 302
    [account] = _accounts(app)
    assert account.status == "connected" and account.last_error is None


def test_disconnect_drops_the_tokens_and_keeps_the_mail(app, client, agent, registered, ca):
    sign_in(client, agent)
    mailbox = registered.add_user("nina")
    connect_mailbox(client, ca.ca_path, mailbox)
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        account = session.scalar(select(Account))
        session.add(Ticket(number=1, account_id=account.id, subject="Printer on fire"))
    page = _text(client.get("/accounts"))
    response = client.post(f"/accounts/{account.id}/disconnect", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    page = _text(client.get("/accounts"))
    assert f"{mailbox} is disconnected: its tokens are deleted, its tickets stay." in page
    row = _row(page, mailbox)
    assert 'data-status="disabled"' in row and ">Reconnect</button>" in row and ">Disconnect</button>" not in row
    assert f"Disconnected by {agent.email}: reconnect to resume." in row
    [account] = _accounts(app)
    assert account.status == "disabled" and account.token_cache_enc is None
    with rt.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
    assert connect_mailbox(client, ca.ca_path, mailbox).status_code == 302  # and it can come back
    [account] = _accounts(app)
    assert account.status == "connected" and account.token_cache_enc is not None


def test_disconnect_is_a_post_with_csrf(app, client, agent, registered, ca):
    sign_in(client, agent)
    connect_mailbox(client, ca.ca_path, registered.add_user("olga"))
    [account] = _accounts(app)
    assert client.get(f"/accounts/{account.id}/disconnect").status_code == 405
    assert client.post(f"/accounts/{account.id}/disconnect").status_code == 400
    assert _accounts(app)[0].status == "connected"


def test_a_shared_mailbox_address_must_be_an_address(app, client, agent, registered):
    sign_in(client, agent)
    bad = post_form(client, "/accounts/connect/microsoft", {"mailbox": "not an address"})
    assert bad.status_code == 400 and "enter the shared mailbox&#39;s full address" in _text(bad)
    assert _accounts(app) == []


# -- who sees which mailbox, who may change it -----------------------------------------------------------------

@pytest.fixture
def two_agents(app, make_user, registered, ca):
    """Agent A connected a mailbox (A owns it); agent B did not."""
    a, b = make_user("agent"), make_user("agent")
    client_a = app.test_client()
    sign_in(client_a, a)
    mailbox = registered.add_user("quinn")
    connect_mailbox(client_a, ca.ca_path, mailbox)
    client_b = app.test_client()
    sign_in(client_b, b)
    return a, b, client_a, client_b, mailbox, _accounts(app)[0].id


MANAGING = ("reconnect", "disconnect", "settings", "members", "members/{member}/remove")


def _try_managing(client, account_id: int, member_id: int) -> dict[str, int]:
    """Every managing action, each as a valid form POST; returns action -> status."""
    token = csrf_token(_text(client.get("/accounts")))
    prefix = f"a{account_id}-"
    data = {"csrf_token": token, "email": "someone@helpdesk.test", prefix + "folder": "Private",
            prefix + "post_import_action": "delete", prefix + "move_to_folder": "", prefix + "csrf_token": token}
    return {action: client.post(f"/accounts/{account_id}/{action.format(member=member_id)}", data=data).status_code
            for action in MANAGING}


def test_an_agent_does_not_see_another_agents_mailbox(app, two_agents):
    a, b, client_a, client_b, mailbox, account_id = two_agents
    assert mailbox in _text(client_a.get("/accounts"))
    page_b = _text(client_b.get("/accounts"))
    assert mailbox not in page_b and "No mailboxes yet." in page_b
    assert [x["address"] for x in api_accounts(app, a)] == [mailbox]
    assert api_accounts(app, b) == []
    assert _try_managing(client_b, account_id, a.id) == dict.fromkeys(MANAGING, 404)
    [account] = _accounts(app)
    assert (account.status, account.folder, account.post_import_action) == ("connected", "INBOX", "keep")
    assert members_of(app, account_id) == set()


def test_members_read_and_answer_but_do_not_manage(app, two_agents, make_user):
    """A member added "to see tickets" cannot point the sync elsewhere, delete mail, disconnect or add people."""
    a, b, client_a, client_b, mailbox, account_id = two_agents
    response = post_form(client_a, f"/accounts/{account_id}/members", {"email": b.email})
    assert response.status_code == 302
    assert f"{b.email} can now see the tickets of {mailbox}." in _text(client_a.get("/accounts"))
    other = make_user("agent")
    post_form(client_a, f"/accounts/{account_id}/members", {"email": other.email})
    before = refresh_tokens(app, account_id)

    page = _text(client_b.get("/accounts"))
    row = _row(page, mailbox)
    assert f'<td class="owner" data-label="Owner">{a.email}</td>' in row and '<small class="muted">member</small>' in row
    for control in (">Reconnect</button>", ">Disconnect</button>", "<summary>Settings</summary>",
                    "<summary>Members</summary>", "/settings", "/members", "/reconnect", "/disconnect"):
        assert control not in row
    assert [x["address"] for x in api_accounts(app, b)] == [mailbox]

    assert _try_managing(client_b, account_id, other.id) == dict.fromkeys(MANAGING, 403)
    [account] = _accounts(app)
    assert (account.status, account.folder, account.post_import_action) == ("connected", "INBOX", "keep")
    assert refresh_tokens(app, account_id) == before
    assert members_of(app, account_id) == {b.id, other.id}
    with client_b.session_transaction() as session:
        assert "ms_flow" not in session  # the refused reconnect did not start a sign-in either


def test_the_owner_manages_members(app, two_agents, make_user):
    a, b, client_a, client_b, mailbox, account_id = two_agents
    post_form(client_a, f"/accounts/{account_id}/members", {"email": b.email})
    row = _row(_text(client_a.get("/accounts")), mailbox)
    assert f'<li data-member="{b.email}">' in row
    assert f'action="/accounts/{account_id}/members/{b.id}/remove"' in row
    assert mailbox in _text(client_b.get("/accounts"))

    for email, said in ((b.email, f"{b.email} is a member of {mailbox} already."),
                        (a.email, f"{a.email} owns {mailbox} already."),
                        (make_user("admin").email, "is an admin: admins see every mailbox already."),
                        ("nobody@helpdesk.test", "No active user nobody@helpdesk.test: add them under Admin > Users")):
        post_form(client_a, f"/accounts/{account_id}/members", {"email": email})
        assert said in html.unescape(_text(client_a.get("/accounts")))
    assert members_of(app, account_id) == {b.id}

    assert post_form(client_a, f"/accounts/{account_id}/members/{b.id}/remove").status_code == 302
    assert f"{b.email} can no longer see the tickets of {mailbox}." in _text(client_a.get("/accounts"))
    assert mailbox not in _text(client_b.get("/accounts"))
    assert api_accounts(app, b) == [] and members_of(app, account_id) == set()


def test_admins_see_every_mailbox_and_manage_members(app, client, admin, two_agents):
    a, b, client_a, client_b, mailbox, account_id = two_agents
    sign_in(client, admin)
    page = _text(client.get("/accounts"))
    row = _row(page, mailbox)
    assert f'<td class="owner" data-label="Owner">{a.email}</td>' in row and "only admins and the owner" in row
    assert ">Reconnect</button>" in row and ">Disconnect</button>" in row and "<summary>Settings</summary>" in row
    assert [x["address"] for x in api_accounts(app, admin)] == [mailbox]
    response = post_form(client, f"/accounts/{account_id}/members", {"email": b.email})
    assert response.status_code == 302
    assert f"{b.email} can now see the tickets of {mailbox}." in _text(client.get("/accounts"))
    assert mailbox in _text(client_b.get("/accounts"))
    assert [x["address"] for x in api_accounts(app, b)] == [mailbox]

    post_form(client, f"/accounts/{account_id}/members/{b.id}/remove")
    assert mailbox not in _text(client_b.get("/accounts"))
    assert api_accounts(app, b) == []


def test_settings_and_disconnect_by_owner_and_admin(app, client, admin, two_agents):
    a, b, client_a, client_b, mailbox, account_id = two_agents
    statuses = _try_managing(client_a, account_id, b.id)
    assert statuses["settings"] == statuses["disconnect"] == statuses["members"] == 302
    assert statuses["reconnect"] == 302  # to the authority
    [account] = _accounts(app)
    assert (account.folder, account.post_import_action, account.status) == ("Private", "delete", "disabled")
    sign_in(client, admin)
    statuses = _try_managing(client, account_id, b.id)
    assert statuses["settings"] == statuses["members"] == statuses["reconnect"] == 302


def test_another_agent_who_signs_in_as_the_mailbox_joins_it_without_replacing_the_token(app, two_agents, ca):
    """B can sign in as the mailbox (same Microsoft identity): proven access, so B may read it; A stays the
    owner, A's sign-in stays in use, and B still cannot manage it."""
    a, b, client_a, client_b, mailbox, account_id = two_agents
    before = refresh_tokens(app, account_id)
    assert connect_mailbox(client_b, ca.ca_path, mailbox).status_code == 302
    page = _text(client_b.get("/accounts"))
    assert (f"{mailbox} is already connected by {a.email}; you proved your access and can see its tickets. Only "
            "its owner or an admin can reconnect it or change its settings.") in page
    assert members_of(app, account_id) == {b.id}
    assert refresh_tokens(app, account_id) == before
    with app.extensions["connector"].db.session() as session:
        assert session.get(Account, account_id).connected_by_id == a.id
    assert _try_managing(client_b, account_id, b.id)["settings"] == 403


def test_an_admin_reconnects_someones_mailbox_and_the_owner_stays(app, client, admin, two_agents, ca):
    a, b, client_a, client_b, mailbox, account_id = two_agents
    before = refresh_tokens(app, account_id)
    sign_in(client, admin)
    assert reconnect_mailbox(client, ca.ca_path, account_id, mailbox).status_code == 302
    assert f"{mailbox} is reconnected." in _text(client.get("/accounts"))
    with app.extensions["connector"].db.session() as session:
        account = session.get(Account, account_id)
        assert (account.connected_by_id, account.status) == (a.id, "connected")
    assert refresh_tokens(app, account_id).isdisjoint(before)
    assert members_of(app, account_id) == set()  # admins see everything; no membership is added
    assert ">Reconnect</button>" in _row(_text(client_a.get("/accounts")), mailbox)  # A still manages it


# -- a mailbox stays with the Microsoft identity (tid + oid) that connected it ------------------------------------

def test_a_new_holder_of_a_reused_name_cannot_take_the_mailbox(app, two_agents, registered, ca, idp):
    """preferred_username is mutable: quinn@ leaves, the name goes to someone else (a new oid). Neither an
    agent nor the owner can reconnect the old mailbox with the new person's sign-in."""
    a, b, client_a, client_b, mailbox, account_id = two_agents
    old_oid = idp.users[mailbox].oid
    before = refresh_tokens(app, account_id)
    registered.add_user("quinn", password="new-pw")  # same name, new person
    assert idp.users[mailbox].oid != old_oid
    for client in (client_b, client_a):
        message = _connect_error(connect_mailbox(client, ca.ca_path, mailbox, password="new-pw"))
        assert message == (f"{mailbox} is connected with another Microsoft account than the one you signed in "
                           "with (Microsoft identifies people by tenant and object ID, not by name), so nothing was "
                           "changed. If you have Full Access to it, use \"Connect a shared mailbox\"; otherwise ask "
                           "its owner or an admin.")
    assert _connect_error(reconnect_mailbox(client_a, ca.ca_path, account_id, mailbox, password="new-pw"))
    [account] = _accounts(app)
    assert (account.token_subject, account.status) == (old_oid, "connected")
    assert refresh_tokens(app, account_id) == before
    assert members_of(app, account_id) == set()
    assert mailbox not in _text(client_b.get("/accounts"))


def test_the_same_person_in_another_tenant_is_another_identity(app, agent):
    """tid + oid: an identical oid from another tenant does not match."""
    from connector.identity.microsoft import Connected

    rt = app.extensions["connector"]
    with rt.db.session() as session:
        user = session.get(type(agent), agent.id)
        first = Connected("kai@org.test", "Kai", "tenant-a", "oid-1", "oid-1.tenant-a", "{}")
        account = accounts_service.connect(session, rt.vault, user, first).account
        for other in (Connected("kai@org.test", "Kai", "tenant-b", "oid-1", "oid-1.tenant-b", "{}"),
                      Connected("kai@org.test", "Kai", "tenant-a", "oid-2", "oid-2.tenant-a", "{}")):
            with pytest.raises(accounts_service.ConnectRefused):
                accounts_service.connect(session, rt.vault, user, other)
        again = accounts_service.connect(session, rt.vault, user, first)
        assert (again.account.id, again.outcome) == (account.id, "reconnected")
        assert account.provider == "microsoft"
        account.provider = "google"  # the same address connected through another provider is left alone
        with pytest.raises(accounts_service.ConnectRefused) as other_provider:
            accounts_service.connect(session, rt.vault, user, first)
        assert str(other_provider.value).startswith("kai@org.test is connected through Google, not Microsoft 365")
        account.provider = "microsoft"
        with pytest.raises(ValueError):  # a shared mailbox is never connected without the proof
            accounts_service.connect(session, rt.vault, user, first, shared_address="team@org.test")


def test_mailbox_settings(app, client, agent, registered, ca):
    sign_in(client, agent)
    connect_mailbox(client, ca.ca_path, registered.add_user("rita"))
    [account] = _accounts(app)
    page = _text(client.get("/accounts"))
    prefix = f"a{account.id}-"
    response = client.post(f"/accounts/{account.id}/settings", data={
        prefix + "folder": "Support", prefix + "post_import_action": "move", prefix + "move_to_folder": "Done",
        prefix + "csrf_token": csrf_token(page), "csrf_token": csrf_token(page)})
    assert response.status_code == 302
    assert f"Settings of {account.address} saved." in _text(client.get("/accounts"))
    [account] = _accounts(app)
    assert (account.folder, account.post_import_action, account.move_to_folder) == ("Support", "move", "Done")
