"""Connecting Gmail and Google Workspace mailboxes end to end, without a browser: the app's "Connect
Google" form, the Google stand-in's pages driven like a person would (tests/google/driver.py), and the
app's callback. Every request goes over HTTPS with the test CA; nothing of the app is mocked."""
from __future__ import annotations

import base64
import hashlib
import json
import re
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import select

from connector.models import Account, AccountMember
from tests.google import AuthorizationError, complete_authorization
from tests.support.app import connect_mailbox, finish_connect, login, post_form
from tests.support.google_app import (app_config, connect_error, connect_google, google, google_accounts,  # noqa: F401
                                      google_org, make_google_org, query, register_google, start_google_connect,
                                      start_google_reconnect, text)

MAIL = "https://mail.google.com/"


@pytest.fixture
def registered(app, google_org):
    register_google(app, google_org)
    return google_org


def sign_in(client, user):
    assert login(client, user.email).status_code == 302


def _account(app, address: str) -> Account | None:
    with app.extensions["connector"].db.session() as session:
        return session.scalar(select(Account).where(Account.address == address))


def _tokens(app, account: Account) -> dict:
    return json.loads(app.extensions["connector"].vault.decrypt_text(account.token_cache_enc))


def _s256(value: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(value.encode()).digest()).rstrip(b"=").decode()


# -- the button, the form, the redirect ---------------------------------------------------------------------

def test_the_connect_google_form_and_the_pages_csp(client, agent, registered, google):
    sign_in(client, agent)
    response = client.get("/accounts")
    form = re.search(r'<form class="actions" method="post" action="/accounts/connect/google">(.*?)</form>',
                     text(response), re.S)
    assert form and 'name="csrf_token"' in form.group(1) and ">Connect Google</button>" in form.group(1)
    directives = {d.split()[0]: d.split()[1:] for d in response.headers["Content-Security-Policy"].split("; ")}
    assert google.url in directives["form-action"] and directives["form-action"][0] == "'self'"


def test_without_a_google_app_there_is_no_button_and_no_google_origin(client, agent, google):
    sign_in(client, agent)
    response = client.get("/accounts")
    assert "Connect Google</button>" not in text(response)
    assert google.url not in response.headers["Content-Security-Policy"]
    refused = post_form(client, "/accounts/connect/google")
    assert refused.status_code == 409
    assert "The Google app is not registered yet" in connect_error(refused) and "Ask an admin" in connect_error(refused)


def test_connect_sends_the_browser_to_google_with_pkce_state_nonce_and_offline_consent(client, agent, registered,
                                                                                        google):
    sign_in(client, agent)
    location = start_google_connect(client)
    assert location.startswith(f"{google.url}/o/oauth2/v2/auth?")
    sent = query(location)
    assert sent["client_id"] == registered.client_id
    assert sent["redirect_uri"] == "http://localhost/auth/google/callback"
    assert sent["response_type"] == "code" and sent["scope"] == "openid email https://mail.google.com/"
    assert sent["access_type"] == "offline" and sent["prompt"] == "consent"
    assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
    assert sent["state"] and sent["nonce"]
    again = query(start_google_connect(client))
    assert {again[k] for k in ("state", "nonce", "code_challenge")}.isdisjoint(
        {sent[k] for k in ("state", "nonce", "code_challenge")})


def test_starting_a_connect_is_a_post_with_a_csrf_token(client, agent, registered):
    sign_in(client, agent)
    assert client.get("/accounts/connect/google").status_code == 405
    response = client.post("/accounts/connect/google")
    assert response.status_code == 400 and "Location" not in response.headers


def test_the_flow_data_in_the_session_cookie_is_encrypted(client, agent, registered):
    """The session cookie is signed, not encrypted: the PKCE verifier and nonce must not be readable in it."""
    sign_in(client, agent)
    sent = query(start_google_connect(client))
    with client.session_transaction() as session:
        values = json.dumps(dict(session), default=str)
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', values)
    assert sent["nonce"] not in values
    assert not any(_s256(s) == sent["code_challenge"] for s in strings), "the PKCE verifier is in the cookie"


# -- a new mailbox, reconnect, disconnect --------------------------------------------------------------------

def test_a_new_mailbox_end_to_end(app, client, agent, registered, ca, google):
    alice = registered.user("alice", name="Alice Example")
    sign_in(client, agent)
    response = connect_google(client, ca.ca_path, alice.email)
    assert response.status_code == 302 and response.headers["Location"] == "/accounts", text(response)
    page = text(client.get("/accounts"))
    assert f"{alice.email} is connected (Google)." in page
    account = _account(app, alice.email)
    assert account.provider == "google" and account.status == "connected"
    assert account.token_subject == alice.sub and account.tenant_id == registered.domain
    assert account.token_owner == alice.email and account.connected_by_id == agent.id
    assert account.display_name == alice.email  # no "profile" scope is asked for
    tokens = _tokens(app, account)
    assert tokens["refresh_token"].startswith("1//") and tokens["access_token"].startswith("ya29.")
    assert MAIL in tokens["scope"].split() and tokens["expires_at"] > tokens["issued_at"]
    assert tokens["refresh_token"].encode() not in account.token_cache_enc
    # the stored access token is what Gmail's IMAP would accept: the stand-in's tokeninfo says so
    info = google.store.live_access(tokens["access_token"])
    assert info is not None and info.user is google.user(alice.email) and MAIL in info.scopes
    assert google.store.refresh[tokens["refresh_token"]].client is registered.client
    row = re.search(rf'<tr data-address="{re.escape(alice.email)}".*?</tr>', page, re.S).group(0)
    assert "Google</small>" in row and 'data-status="connected"' in row
    assert '"Delete it" moves the mail to the Trash' in row  # Gmail's folder rules, beside its settings


def test_reconnect_goes_to_google_with_the_login_hint_and_replaces_the_token(app, client, agent, registered, ca,
                                                                           google):
    bob = registered.user("bob")
    sign_in(client, agent)
    connect_google(client, ca.ca_path, bob.email)
    account = _account(app, bob.email)
    old = _tokens(app, account)["refresh_token"]
    location = start_google_reconnect(client, account.id)
    sent = query(location)
    assert location.startswith(google.url + "/") and sent["login_hint"] == bob.email
    assert sent["prompt"] == "consent" and sent["access_type"] == "offline"
    response = finish_connect(client, complete_authorization(location, bob.email, "pw", ca_path=ca.ca_path))
    assert response.status_code == 302, text(response)
    assert f"{bob.email} is reconnected (Google)." in text(client.get("/accounts"))
    [again] = [a for a in google_accounts(app) if a.address == bob.email]
    assert again.id == account.id and again.connected_by_id == agent.id
    assert _tokens(app, again)["refresh_token"] != old


def test_reconnect_must_sign_in_as_that_mailbox(app, client, agent, registered, ca):
    carol, dave = registered.user("carol"), registered.user("dave")
    sign_in(client, agent)
    connect_google(client, ca.ca_path, carol.email)
    account = _account(app, carol.email)
    before = account.token_cache_enc
    redirect = complete_authorization(start_google_reconnect(client, account.id), dave.email, "pw",
                                      ca_path=ca.ca_path)
    response = finish_connect(client, redirect)
    assert response.status_code == 403
    assert connect_error(response).startswith(f"You signed in as {dave.email}, but Reconnect was for {carol.email}")
    assert _account(app, carol.email).token_cache_enc == before and _account(app, dave.email) is None


def test_another_user_who_signs_in_as_the_mailbox_joins_it_without_replacing_the_token(app, make_user, registered,
                                                                                      ca):
    erin = registered.user("erin")
    owner, other = make_user("agent"), make_user("agent")
    first, second = app.test_client(), app.test_client()
    sign_in(first, owner)
    connect_google(first, ca.ca_path, erin.email)
    before = _account(app, erin.email).token_cache_enc
    sign_in(second, other)
    response = connect_google(second, ca.ca_path, erin.email)
    assert response.status_code == 302
    assert "is already connected; you signed in as it" in text(second.get("/accounts"))
    account = _account(app, erin.email)
    assert account.token_cache_enc == before and account.connected_by_id == owner.id
    with app.extensions["connector"].db.session() as session:
        assert session.get(AccountMember, (account.id, other.id)) is not None
    # a member is no manager: Reconnect is refused
    assert post_form(second, f"/accounts/{account.id}/reconnect").status_code == 403


def test_a_reused_address_of_another_google_account_cannot_take_the_mailbox(app, client, agent, registered, ca,
                                                                           google):
    frank = registered.user("frank")
    sign_in(client, agent)
    connect_google(client, ca.ca_path, frank.email)
    before = _account(app, frank.email).token_cache_enc
    # frank leaves; the Workspace admin gives his address to a new person: a new Google Account (new `sub`)
    with google.directory_lock:
        del google.users[frank.email]
    newcomer = google.add_user(frank.email, "pw", hd=registered.domain)
    assert newcomer.sub != frank.sub
    response = connect_google(client, ca.ca_path, frank.email)
    assert response.status_code == 403
    assert "connected with another Google Account than the one you signed in with" in connect_error(response)
    assert _account(app, frank.email).token_cache_enc == before


def test_a_google_sign_in_does_not_touch_a_microsoft_mailbox_of_the_same_address(app, client, agent, registered,
                                                                                 ca):
    grace = registered.user("grace")
    with app.extensions["connector"].db.session() as session:
        session.add(Account(address=grace.email, provider="microsoft", connected_by_id=agent.id,
                            token_owner=grace.email, token_subject="an-oid", token_cache_enc=b"microsoft's"))
        session.commit()
    sign_in(client, agent)
    response = connect_google(client, ca.ca_path, grace.email)
    assert response.status_code == 403
    assert connect_error(response).startswith(f"{grace.email} is connected through Microsoft 365, not Google")
    account = _account(app, grace.email)
    assert account.provider == "microsoft" and account.token_cache_enc == b"microsoft's"


def test_a_microsoft_sign_in_does_not_touch_a_google_mailbox_of_the_same_address(make_app, agent, org, ca,
                                                                                 google_org):
    from tests.support.mail import register

    app = make_app()
    register(app, org)
    address = org.add_user("henry")
    with app.extensions["connector"].db.session() as session:
        session.add(Account(address=address, provider="google", connected_by_id=agent.id, token_owner=address,
                            token_subject="1234", token_cache_enc=b"google's"))
        session.commit()
    client = app.test_client()
    sign_in(client, agent)
    response = connect_mailbox(client, ca.ca_path, address)
    assert response.status_code == 403
    assert "connected through Google, not Microsoft 365" in connect_error(response)
    account = _account(app, address)
    assert account.provider == "google" and account.token_cache_enc == b"google's"


def test_disconnect_drops_the_tokens_and_revokes_the_grant_at_google(app, client, agent, registered, ca, google):
    ivy = registered.user("ivy")
    sign_in(client, agent)
    connect_google(client, ca.ca_path, ivy.email)
    account = _account(app, ivy.email)
    refresh = _tokens(app, account)["refresh_token"]
    response = post_form(client, f"/accounts/{account.id}/disconnect")
    assert response.status_code == 302
    assert "is disconnected: its tokens are deleted and its access at Google is revoked" in text(
        client.get("/accounts"))
    account = _account(app, ivy.email)
    assert account.token_cache_enc is None and account.status == "disabled"
    assert google.store.refresh[refresh].dead == "revoked"
    assert google.store.consent(google.user(ivy.email), registered.client) is None


# -- what Google or the person decided ---------------------------------------------------------------------

def test_a_declined_gmail_permission_is_refused_with_a_sentence(app, client, agent, registered, ca):
    jane = registered.user("jane")
    sign_in(client, agent)
    response = connect_google(client, ca.ca_path, jane.email, grant_scopes=[])  # Gmail left unticked
    assert response.status_code == 400
    assert connect_error(response).startswith("You did not tick \"Read, compose, send, and permanently delete all "
                                              "your email from Gmail\" on Google's consent screen")
    assert _account(app, jane.email) is None


def test_cancel_at_google(app, client, agent, registered, ca):
    kate = registered.user("kate")
    sign_in(client, agent)
    response = connect_google(client, ca.ca_path, kate.email, consent=False)
    assert response.status_code == 400
    assert connect_error(response).startswith("The access was not granted at Google")
    assert "Connect Google" in connect_error(response) and "Traceback" not in text(response)
    assert _account(app, kate.email) is None


def test_back_to_safety_on_the_unverified_app_screen(app, client, agent, make_google_org, ca):
    org = make_google_org(user_type="external")
    register_google(app, org)
    person = org.provider.add_user(f"liz@{org.domain}")
    sign_in(client, agent)
    response = connect_google(client, ca.ca_path, person.email, accept_unverified=False)
    assert connect_error(response).startswith("The access was not granted at Google")
    response = connect_google(client, ca.ca_path, person.email)  # "Go to ... (unsafe)", then Continue
    assert response.status_code == 302 and _account(app, person.email).provider == "google"


def test_an_admin_restriction_is_googles_page_then_our_sentence(app, client, agent, registered, ca, google):
    mia = registered.user("mia")
    sign_in(client, agent)
    google.restrict_app(registered.domain, registered.client_id)
    try:
        with pytest.raises(AuthorizationError) as shown:  # Google's own page; nothing reaches the app
            complete_authorization(start_google_connect(client), mia.email, "pw", ca_path=ca.ca_path)
        assert shown.value.code == "admin_policy_enforced"
        google.unrestrict_app(registered.domain, registered.client_id)
        redirect = complete_authorization(start_google_connect(client), mia.email, "pw", ca_path=ca.ca_path)
        google.restrict_app(registered.domain, registered.client_id)  # blocked between consent and code exchange
        response = finish_connect(client, redirect)
    finally:
        google.unrestrict_app(registered.domain, registered.client_id)
    assert connect_error(response) == (
        "An admin of your Google Workspace domain blocks this app (admin_policy_enforced): ask them to mark it Trusted "
        "under Admin console > Security > Access and data control > API controls > Manage third-party app access, "
        "then click \"Connect Google\" again.")
    assert _account(app, mia.email) is None


def test_an_account_outside_an_internal_apps_organization_stays_at_google(app, client, agent, registered, ca, google):
    outsider = google.add_user(f"nick@elsewhere-{registered.domain}", hd=f"elsewhere-{registered.domain}")
    sign_in(client, agent)
    with pytest.raises(AuthorizationError) as shown:
        complete_authorization(start_google_connect(client), outsider.email, "pw", ca_path=ca.ca_path)
    assert shown.value.code == "org_internal"
    assert google_accounts(app) == []


def test_no_refresh_token_is_refused_with_a_sentence(app, client, agent, registered, ca, google):
    olga = registered.user("olga")
    sign_in(client, agent)
    redirect = complete_authorization(start_google_connect(client), olga.email, "pw", ca_path=ca.ca_path)
    google.store.codes[query(redirect)["code"]].issue_refresh = False  # as Google does without a fresh consent
    response = finish_connect(client, redirect)
    assert connect_error(response).startswith("Google sent no refresh token")
    assert _account(app, olga.email) is None


def test_an_unverified_address_cannot_name_a_mailbox(app, client, agent, registered, ca):
    pat = registered.user("pat", email_verified=False)
    sign_in(client, agent)
    response = connect_google(client, ca.ca_path, pat.email)
    assert connect_error(response).startswith(f"Google says the address {pat.email} of this account is not verified")
    assert _account(app, pat.email) is None


def test_a_secret_changed_at_google_is_explained_at_the_callback(app, client, agent, registered, ca):
    quinn = registered.user("quinn")
    sign_in(client, agent)
    redirect = complete_authorization(start_google_connect(client), quinn.email, "pw", ca_path=ca.ca_path)
    old = registered.client.secret
    registered.client.secret = "GOCSPX-rotated-at-google"
    try:
        response = finish_connect(client, redirect)
    finally:
        registered.client.secret = old
    assert connect_error(response).startswith("Google refused the app's credentials (invalid_client)")
    assert _account(app, quinn.email) is None


# -- answers that do not belong to this sign-in -------------------------------------------------------------

def test_an_id_token_for_another_nonce_is_refused(app, client, agent, registered, ca, google):
    rose = registered.user("rose")
    sign_in(client, agent)
    redirect = complete_authorization(start_google_connect(client), rose.email, "pw", ca_path=ca.ca_path)
    google.store.codes[query(redirect)["code"]].nonce = "a-nonce-of-another-sign-in"
    response = finish_connect(client, redirect)
    assert connect_error(response).startswith("Google's answer could not be verified")
    assert _account(app, rose.email) is None


def test_a_replayed_callback_is_refused(app, client, agent, registered, ca):
    sam = registered.user("sam")
    sign_in(client, agent)
    redirect = complete_authorization(start_google_connect(client), sam.email, "pw", ca_path=ca.ca_path)
    assert finish_connect(client, redirect).status_code == 302
    assert "state does not match" in connect_error(finish_connect(client, redirect))


def test_a_callback_stolen_into_another_session_is_refused(app, client, agent, make_user, registered, ca):
    tom = registered.user("tom")
    sign_in(client, agent)
    redirect = complete_authorization(start_google_connect(client), tom.email, "pw", ca_path=ca.ca_path)
    attacker = app.test_client()
    sign_in(attacker, make_user("agent"))
    start_google_connect(attacker)  # even with a sign-in of its own under way
    assert "state does not match" in connect_error(finish_connect(attacker, redirect))
    assert _account(app, tom.email) is None


def test_a_forged_callback_without_a_sign_in_is_refused(app, client, agent, registered):
    sign_in(client, agent)
    for args in ({"code": "4/0Aforged", "state": "x"}, {"error": "access_denied", "state": "x"}, {}):
        assert "state does not match" in connect_error(client.get("/auth/google/callback", query_string=args))
    assert google_accounts(app) == []


def test_a_sign_in_started_by_another_user_is_not_used(app, client, agent, make_user, registered, ca):
    uma = registered.user("uma")
    sign_in(client, agent)
    redirect = complete_authorization(start_google_connect(client), uma.email, "pw", ca_path=ca.ca_path)
    post_form(client, "/logout")
    sign_in(client, make_user("agent"))
    message = connect_error(finish_connect(client, redirect))
    assert "started by another user of this browser" in message or "state does not match" in message
    assert _account(app, uma.email) is None


def test_an_answer_naming_another_issuer_is_refused(app, client, agent, registered, ca):
    vic = registered.user("vic")
    sign_in(client, agent)
    redirect = complete_authorization(start_google_connect(client), vic.email, "pw", ca_path=ca.ca_path)
    args = query(redirect) | {"iss": "https://accounts.evil.example"}
    response = client.get("/auth/google/callback?" + urlencode(args))
    assert connect_error(response).startswith("This sign-in answer names another sign-in service")
    assert _account(app, vic.email) is None


def test_a_tampered_flow_cookie_is_refused(app, client, agent, registered, ca):
    wes = registered.user("wes")
    sign_in(client, agent)
    redirect = complete_authorization(start_google_connect(client), wes.email, "pw", ca_path=ca.ca_path)
    with client.session_transaction() as session:
        session["google_flow"] = "not-a-fernet-token"
    assert "state does not match" in connect_error(finish_connect(client, redirect))
    assert urlsplit(redirect).path == "/auth/google/callback"
