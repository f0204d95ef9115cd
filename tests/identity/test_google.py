"""connector.identity.google against the Google stand-in over HTTPS: access tokens for IMAP/SMTP from a
mailbox's stored tokens (refresh under 5 minutes left, and every way a refresh token dies, in words),
and the ID token rules the connect flow verifies with authlib.

Tokens are obtained the way Google gives them to the app: the stand-in's authorize pages (driven by
tests/google/driver.py) and a code exchange with PKCE; the function under test then only sees the JSON
the app stores.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import replace
from urllib.parse import urlencode

import pytest
import requests
from authlib.integrations.flask_client import OAuth
from flask import Flask
from joserfc.errors import JoseError
from sqlalchemy import select

from connector import tokens
from connector.identity.google import GoogleApp, GoogleIdentity, GoogleTokenError, GoogleTokens
from connector.models import Account
from tests.google import complete_authorization
from tests.google.tokens import Signer, at_hash
from tests.support.google import GOOGLE_CALLBACK, MAIL_SCOPES, GoogleOrg, google, make_google_org  # noqa: F401
from tests.support.net import free_port

DAY = 86400
MAIL = "https://mail.google.com/"


def identity_of(org: GoogleOrg, ca, authority: str | None = None, secret: str | None = None) -> GoogleIdentity:
    return GoogleIdentity(GoogleApp(org.client_id, secret or org.secret), authority or org.provider.url,
                          str(ca.ca_path), GOOGLE_CALLBACK)


def signed_in_tokens(org: GoogleOrg, ca, email: str, password: str = "pw") -> GoogleTokens:
    """A sign-in with offline access, as the app stores it right after the callback."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    url = f"{org.provider.url}/o/oauth2/v2/auth?" + urlencode({
        "client_id": org.client_id, "redirect_uri": GOOGLE_CALLBACK, "response_type": "code",
        "scope": MAIL_SCOPES, "state": "s", "nonce": "n", "access_type": "offline", "prompt": "consent",
        "code_challenge": challenge, "code_challenge_method": "S256"})
    redirect = complete_authorization(url, email, password, ca_path=ca.ca_path)
    code = dict(p.split("=", 1) for p in redirect.split("?", 1)[1].split("&"))["code"]
    http = requests.Session()
    http.verify, http.trust_env = str(ca.ca_path), False
    answer = http.post(f"{org.provider.url}/token", data={
        "grant_type": "authorization_code", "code": requests.utils.unquote(code), "redirect_uri": GOOGLE_CALLBACK,
        "code_verifier": verifier, "client_id": org.client_id, "client_secret": org.secret}).json()
    now = time.time()
    return GoogleTokens(refresh_token=answer["refresh_token"], access_token=answer["access_token"],
                        expires_at=now + answer["expires_in"], scope=answer["scope"], issued_at=now)


def days_ago(tokens: GoogleTokens, days: float) -> GoogleTokens:
    """The app's record of a sign-in made `days` ago (with google.age_refresh_tokens(days) at the stand-in)."""
    return replace(tokens, issued_at=tokens.issued_at - days * DAY,
                   refreshed_at=None if tokens.refreshed_at is None else tokens.refreshed_at - days * DAY)


@pytest.fixture
def org(make_google_org) -> GoogleOrg:
    return make_google_org()


@pytest.fixture
def testing_org(make_google_org) -> GoogleOrg:
    """An External app left in Testing, with its test user."""
    org = make_google_org(user_type="external", publishing_status="testing")
    return org


# -- access tokens ------------------------------------------------------------------------------------------

def test_a_token_with_time_left_is_used_without_asking_google(org, ca, google):
    tokens = signed_in_tokens(org, ca, org.user("amy").email)
    google.clear_log()
    access, new_json = identity_of(org, ca).mail_token(tokens.to_json())
    assert access == tokens.access_token and new_json is None
    assert not google.calls("token")


def test_under_five_minutes_left_it_is_refreshed_and_the_new_json_returned(org, ca, google):
    tokens = signed_in_tokens(org, ca, org.user("ben").email)
    stale = replace(tokens, expires_at=time.time() + 299)
    google.clear_log()
    access, new_json = identity_of(org, ca).mail_token(stale.to_json())
    assert access != tokens.access_token
    assert google.store.live_access(access) is not None and MAIL in google.store.live_access(access).scopes
    [call] = google.calls("token", grant_type="refresh_token")
    assert call.client_id == org.client_id and call.error is None
    stored = GoogleTokens.from_json(new_json)
    assert stored.access_token == access and stored.refresh_token == tokens.refresh_token  # Google does not rotate
    assert stored.issued_at == tokens.issued_at and stored.refreshed_at >= tokens.issued_at
    assert stored.expires_at - time.time() > 3000
    # with five minutes or more left, the stored token is used
    assert identity_of(org, ca).mail_token(replace(tokens, expires_at=time.time() + 301).to_json())[1] is None


def test_force_refresh_asks_google_even_with_time_left(org, ca, google):
    tokens = signed_in_tokens(org, ca, org.user("cal").email)
    access, new_json = identity_of(org, ca).mail_token(tokens.to_json(), force_refresh=True)
    assert access != tokens.access_token and new_json is not None


def test_a_new_refresh_token_from_google_is_kept(org, ca, mocker):
    """Google keeps refresh tokens, but should one come back it replaces the stored one (unit test of that
    branch: the stand-in, like Google, never sends one on refresh)."""
    tokens = replace(signed_in_tokens(org, ca, org.user("cat").email), expires_at=0)
    mocker.patch("authlib.integrations.requests_client.OAuth2Session.refresh_token",
                 return_value={"access_token": "ya29.new", "expires_in": 3599, "scope": MAIL,
                               "refresh_token": "1//0new-refresh-token"})
    _, new_json = identity_of(org, ca).mail_token(tokens.to_json())
    stored = GoogleTokens.from_json(new_json)
    assert stored.refresh_token == "1//0new-refresh-token" and stored.issued_at > tokens.issued_at


def _refused(identity: GoogleIdentity, tokens: GoogleTokens) -> GoogleTokenError:
    with pytest.raises(GoogleTokenError) as refused:
        identity.mail_token(replace(tokens, expires_at=0).to_json())
    return refused.value


def test_revoked_by_the_user_needs_reconnect_with_the_reason(org, ca, google):
    dan = org.user("dan")
    tokens = signed_in_tokens(org, ca, dan.email)
    google.revoke(dan.email, org.client_id)
    error = _refused(identity_of(org, ca), tokens)
    assert error.needs_reconnect and error.error == "invalid_grant" and error.reason == "revoked"
    message = error.explained.message
    assert message.startswith("Google no longer accepts the mailbox's sign-in (invalid_grant): its access was removed")
    assert "password was changed" in message and message.endswith("Reconnect the mailbox.")
    assert "Testing" not in message


def test_a_password_change_needs_reconnect(org, ca, google):
    eve = org.user("eve")
    tokens = signed_in_tokens(org, ca, eve.email)
    google.change_password(eve.email)
    error = _refused(identity_of(org, ca), tokens)
    assert error.needs_reconnect and error.reason == "revoked" and "password was changed" in error.explained.message


def test_an_external_app_in_testing_loses_its_mailboxes_after_seven_days_and_says_why(testing_org, ca, google):
    fay = google.add_user(f"fay@{testing_org.domain}")
    google.add_test_user(testing_org.client_id, fay.email)
    tokens = signed_in_tokens(testing_org, ca, fay.email)
    identity = identity_of(testing_org, ca)
    # day 6: still fine, and the refresh is recorded
    google.age_refresh_tokens(6, email=fay.email)
    _, new_json = identity.mail_token(replace(days_ago(tokens, 6), expires_at=0).to_json())
    day6 = GoogleTokens.from_json(new_json)
    # day 7: Google ends it
    google.age_refresh_tokens(1, email=fay.email)
    error = _refused(identity, days_ago(day6, 1))
    assert error.needs_reconnect and error.reason == "testing_expired"
    message = error.explained.message
    assert message.startswith("Google ended the mailbox's sign-in 7 days after it was given (invalid_grant).")
    assert "External app whose OAuth consent screen is still in \"Testing\"" in message
    assert "publish the app" in message and "make it Internal" in message and "reconnect the mailbox" in message


def test_a_token_that_worked_past_day_seven_is_not_blamed_on_testing(org, ca, google):
    gus = org.user("gus")
    tokens = signed_in_tokens(org, ca, gus.email)
    identity = identity_of(org, ca)
    google.age_refresh_tokens(30, email=gus.email)
    _, new_json = identity.mail_token(replace(days_ago(tokens, 30), expires_at=0).to_json())  # works on day 30
    google.revoke(gus.email, org.client_id)
    error = _refused(identity, GoogleTokens.from_json(new_json))
    assert error.reason == "revoked" and "Testing" not in error.explained.message


def test_six_months_without_use(org, ca, google):
    hal = org.user("hal")
    tokens = signed_in_tokens(org, ca, hal.email)
    google.age_refresh_tokens(184, email=hal.email)
    error = _refused(identity_of(org, ca), days_ago(tokens, 184))
    assert error.needs_reconnect and error.reason == "disuse"
    assert "not used for six months" in error.explained.message


def test_a_workspace_admin_block_is_explained_and_waits(org, ca, google):
    ian = org.user("ian")
    tokens = signed_in_tokens(org, ca, ian.email)
    google.restrict_app(org.domain, org.client_id)
    try:
        with pytest.raises(GoogleTokenError) as refused:
            identity_of(org, ca).mail_token(replace(tokens, expires_at=0).to_json(), hosted_domain=org.domain)
    finally:
        google.unrestrict_app(org.domain, org.client_id)
    assert not refused.value.needs_reconnect and refused.value.reason == "admin_policy"
    assert refused.value.explained.message.startswith(f"An admin of {org.domain} now blocks this app")
    assert identity_of(org, ca).mail_token(replace(tokens, expires_at=0).to_json())[0]  # unblocked: works again


def test_a_token_of_another_client_needs_reconnect(org, make_google_org, ca, google):
    tokens = signed_in_tokens(org, ca, org.user("jay").email)
    other = make_google_org()
    error = _refused(identity_of(other, ca), tokens)
    assert error.needs_reconnect and error.reason == "client_changed"


def test_a_wrong_client_secret_is_no_reason_to_reconnect(org, ca):
    tokens = signed_in_tokens(org, ca, org.user("kim").email)
    error = _refused(identity_of(org, ca, secret="GOCSPX-changed"), tokens)
    assert not error.needs_reconnect and error.reason == "client_credentials"
    assert error.explained.message.startswith("Google refused the app's credentials (invalid_client)")


def test_google_out_of_reach_is_transient(org, ca):
    tokens = signed_in_tokens(org, ca, org.user("lee").email)
    identity = identity_of(org, ca, authority=f"https://127.0.0.1:{free_port()}")
    with pytest.raises(GoogleTokenError) as refused:
        identity.mail_token(replace(tokens, expires_at=0).to_json())
    assert not refused.value.needs_reconnect and "cannot be reached" in refused.value.explained.message


@pytest.mark.parametrize("stored", ["", "{}", "not json", '{"refresh_token": ""}', "[1, 2]"])
def test_unreadable_stored_tokens_need_reconnect(org, ca, stored):
    with pytest.raises(GoogleTokenError) as refused:
        identity_of(org, ca).mail_token(stored)
    assert refused.value.needs_reconnect and "reconnect the mailbox" in refused.value.explained.message


def test_tokens_json_round_trips():
    tokens = GoogleTokens("1//0r", "ya29.a", 1.5, MAIL, 1.0, 2.0)
    assert GoogleTokens.from_json(tokens.to_json()) == tokens
    assert json.loads(tokens.to_json())["refresh_token"] == "1//0r"


# -- the worker's side (tokens.access_token): the account is marked, the new JSON stored --------------------------

@pytest.fixture
def google_app(make_app, google, org):
    """The app with [google] authority at the stand-in and the Google app saved (checked there)."""
    from connector import google_registration

    application = make_app(google={"authority": google.url})
    rt = application.extensions["connector"]
    with rt.db.session() as session:
        google_registration.save(session, rt.settings, rt.vault, client_id=org.client_id, client_secret=org.secret,
                                 by="test")
        session.commit()
    return application


def _store_account(app, org, person, tokens: GoogleTokens) -> int:
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        account = Account(address=person.email, provider="google", token_owner=person.email,
                          token_subject=person.sub, tenant_id=org.domain,
                          token_cache_enc=rt.vault.encrypt(tokens.to_json()))
        session.add(account)
        session.commit()
        return account.id


def _stored_tokens(app, account_id: int) -> GoogleTokens:
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        return GoogleTokens.from_json(rt.vault.decrypt_text(session.get(Account, account_id).token_cache_enc))


def test_access_token_refreshes_stores_and_marks_only_the_dead_mailbox(google_app, org, ca, google):
    rt = google_app.extensions["connector"]
    max_, ida = org.user("max"), org.user("ida")
    max_id = _store_account(google_app, org, max_, replace(signed_in_tokens(org, ca, max_.email), expires_at=0))
    ida_id = _store_account(google_app, org, ida, replace(signed_in_tokens(org, ca, ida.email), expires_at=0))
    with rt.db.session() as session:
        token = tokens.access_token(session, rt, session.get(Account, max_id))
    stored = _stored_tokens(google_app, max_id)
    assert stored.access_token == token and stored.refreshed_at is not None  # the refresh was saved at once
    info = requests.get(f"{google.url}/tokeninfo", params={"access_token": token}, verify=str(ca.ca_path)).json()
    assert info["email"] == max_.email and MAIL in info["scope"].split()
    with rt.db.session() as session:  # a fresh token is used as it is: no second refresh
        assert tokens.access_token(session, rt, session.get(Account, max_id)) == token

    google.revoke(max_.email, org.client_id)
    with rt.db.session() as session:
        with pytest.raises(tokens.TokenUnavailable) as refused:
            tokens.access_token(session, rt, session.get(Account, max_id), force_refresh=True)
        assert refused.value.reconnect and refused.value.fix_needed
        assert tokens.access_token(session, rt, session.get(Account, ida_id))  # the other mailbox works on
    with rt.db.session() as session:
        assert session.get(Account, ida_id).status != "needs_reconnect"
        account = session.get(Account, max_id)
        assert account.status == "needs_reconnect"
        assert account.last_error.startswith("Google no longer accepts the mailbox's sign-in (invalid_grant)")


def test_a_testing_app_token_dies_at_7_days_and_the_mailbox_says_why(make_google_org, make_app, google, ca):
    from connector import google_registration

    org = make_google_org(user_type="external", publishing_status="testing")
    person = org.user("tess")
    google.add_test_user(org.client_id, person.email)
    app = make_app(google={"authority": google.url})
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        google_registration.save(session, rt.settings, rt.vault, client_id=org.client_id, client_secret=org.secret,
                                 by="test")
        session.commit()
    account_id = _store_account(app, org, person, days_ago(replace(signed_in_tokens(org, ca, person.email),
                                                                   expires_at=0), 7.01))
    google.age_refresh_tokens(7.01, email=person.email)
    with rt.db.session() as session:
        with pytest.raises(tokens.TokenUnavailable) as refused:
            tokens.access_token(session, rt, session.get(Account, account_id))
    assert refused.value.reconnect
    with rt.db.session() as session:
        account = session.get(Account, account_id)
        assert account.status == "needs_reconnect"
        assert "7 days" in account.last_error and "Testing" in account.last_error
        assert "Publish app" in account.last_error


def test_a_google_mailbox_has_no_graph_token(google_app, org, ca):
    rt = google_app.extensions["connector"]
    person = org.user("gus")
    account_id = _store_account(google_app, org, person, signed_in_tokens(org, ca, person.email))
    with rt.db.session() as session:
        with pytest.raises(tokens.TokenUnavailable) as refused:
            tokens.access_token(session, rt, session.get(Account, account_id), "graph")
    assert "IMAP and SMTP only" in refused.value.message


def test_no_google_app_means_no_token_and_no_reconnect(make_app, google, org, ca):
    app = make_app(google={"authority": google.url})
    rt = app.extensions["connector"]
    person = org.user("nora")
    account_id = _store_account(app, org, person, signed_in_tokens(org, ca, person.email))
    with rt.db.session() as session:
        with pytest.raises(tokens.TokenUnavailable) as refused:
            tokens.access_token(session, rt, session.get(Account, account_id))
        assert not refused.value.reconnect and "Google app is not registered" in refused.value.message
        assert session.get(Account, account_id).status != "needs_reconnect"


# -- the ID token rules (what authorize_access_token is given) ---------------------------------------------------

def _claims(org: GoogleOrg, **changes) -> dict:
    now = int(time.time())
    claims = {"iss": org.provider.issuer, "azp": org.client_id, "aud": org.client_id, "sub": "1" * 21,
              "email": f"nia@{org.domain}", "email_verified": True, "hd": org.domain, "nonce": "the-nonce",
              "at_hash": at_hash("ya29.token"), "iat": now, "exp": now + 3600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _verify(org: GoogleOrg, ca, id_token: str, nonce: str = "the-nonce") -> dict:
    identity = identity_of(org, ca)
    app = Flask("verify")
    client = OAuth(app).register("google", **identity.oauth_client_settings())
    return client.parse_id_token({"id_token": id_token, "access_token": "ya29.token"}, nonce=nonce,
                                 claims_options=identity.claims_options())


def test_a_good_id_token_is_accepted(org, ca, google):
    claims = _verify(org, ca, google.signer.sign(_claims(org)))
    assert claims["sub"] == "1" * 21 and claims["hd"] == org.domain
    # Google writes its issuer with or without https://
    assert _verify(org, ca, google.signer.sign(_claims(org, iss=google.issuer.removeprefix("https://"))))


@pytest.mark.parametrize("change", [
    {"aud": "another-client.apps.googleusercontent.com"},
    {"aud": None},
    {"iss": "https://accounts.evil.example"},
    {"iss": None},
    {"exp": int(time.time()) - 3600},
    {"exp": None},
    {"sub": None},
    {"nonce": "another-nonce"},
    {"nonce": None},
    {"azp": "another-client.apps.googleusercontent.com"},
    {"at_hash": at_hash("ya29.another-token")},
], ids=lambda change: "-".join(f"{k}={'missing' if v is None else 'wrong'}" for k, v in change.items()))
def test_an_id_token_with_a_wrong_claim_is_refused(org, ca, google, change):
    with pytest.raises(JoseError):
        _verify(org, ca, google.signer.sign(_claims(org, **change)))


def test_an_id_token_signed_by_another_key_is_refused(org, ca, google):
    forger = Signer()
    forger.current.kid = google.signer.current.kid  # even under a kid the JWKS publishes
    with pytest.raises(JoseError):
        _verify(org, ca, forger.sign(_claims(org)))


def test_a_rotated_signing_key_is_fetched(org, ca, google):
    google.rotate_signing_key()
    assert _verify(org, ca, google.signer.sign(_claims(org)))["sub"] == "1" * 21
