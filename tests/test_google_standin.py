"""The Google stand-in behaves as Google documents, for authlib (the app's client) and for plain
HTTP clients, and Dovecot 2.3 accepts its tokens for Gmail-like XOAUTH2 logins.

Every flow goes through real HTTPS with the test CA; authlib's Flask client is used exactly as
the Google provider will use it (discovery, PKCE S256, nonce, access_type=offline), and ID
tokens are verified independently with joserfc against the published JWKS.
"""
from __future__ import annotations

import base64
import hashlib
import html
import imaplib
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from authlib.integrations.requests_client import OAuth2Session
from flask import Flask, jsonify
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.google import AuthorizationError, authorize, browser, complete_authorization
from tests.google import scopes as scope_rules
from tests.google.dovecot import GmailDovecot, dovecot_available
from tests.google.tokens import at_hash
from tests.support.google import (GOOGLE_CALLBACK, MAIL_SCOPES, GoogleOrg,  # noqa: F401
                                  gmail_dovecot, google, google_org, make_google_org)

MAIL = scope_rules.MAIL
REVOKED = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class Flow:
    """Plain-HTTP client of the stand-in for one org: authorize URL, driver, token calls."""

    def __init__(self, org: GoogleOrg, ca) -> None:
        self.org, self.google, self.ca = org, org.provider, ca
        self.http = requests.Session()
        self.http.verify = str(ca.ca_path)
        self.http.trust_env = False

    def url(self, scope: str | None = MAIL_SCOPES, **params: str | None) -> tuple[str, str]:
        """An authorization URL and its PKCE verifier; a parameter set to None is left out."""
        verifier, challenge = pkce()
        query_params = {"client_id": self.org.client_id,
                        "redirect_uri": GOOGLE_CALLBACK, "response_type": "code",
                        "scope": scope, "state": "st-" + secrets.token_hex(4),
                        "nonce": "n-" + secrets.token_hex(4), "access_type": "offline",
                        "code_challenge": challenge, "code_challenge_method": "S256"}
        query_params.update(params)
        query_params = {k: v for k, v in query_params.items() if v is not None}
        return f"{self.google.url}/o/oauth2/v2/auth?{urlencode(query_params)}", verifier

    def sign_in(self, email: str, password: str = "pw", scope: str = MAIL_SCOPES,
                driver: dict | None = None, **params: str | None):
        url, verifier = self.url(scope, **params)
        result = authorize(url, email, password, ca_path=self.ca.ca_path, **(driver or {}))
        return result, verifier

    def exchange(self, code: str, verifier: str | None, /, basic: bool = False,
                 **overrides: str | None) -> requests.Response:
        data = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": GOOGLE_CALLBACK, "code_verifier": verifier}
        auth = None
        if basic:
            auth = (self.org.client_id, self.org.secret)
        else:
            data.update(client_id=self.org.client_id, client_secret=self.org.secret)
        data.update(overrides)
        data = {k: v for k, v in data.items() if v is not None}
        return self.http.post(f"{self.google.url}/token", data=data, auth=auth)

    def tokens(self, email: str, **params) -> dict:
        result, verifier = self.sign_in(email, **params)
        response = self.exchange(result.params["code"], verifier)
        assert response.status_code == 200, response.text
        return response.json()

    def refresh(self, refresh_token: str, /, **overrides: str) -> requests.Response:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token,
                "client_id": self.org.client_id, "client_secret": self.org.secret}
        data.update(overrides)
        return self.http.post(f"{self.google.url}/token", data=data)

    def tokeninfo(self, access_token: str) -> requests.Response:
        return self.http.get(f"{self.google.url}/tokeninfo",
                             params={"access_token": access_token})


@pytest.fixture
def flow(google_org, ca) -> Flow:
    return Flow(google_org, ca)


@pytest.fixture
def alice(google_org):
    return google_org.user("alice", name="Alice Example")


# ---- discovery and keys ------------------------------------------------------------------


def test_discovery_document_has_googles_fields_all_on_the_issuer(google, flow):
    doc = flow.http.get(f"{google.url}/.well-known/openid-configuration").json()
    assert doc["issuer"] == google.url
    assert doc["authorization_endpoint"] == f"{google.url}/o/oauth2/v2/auth"
    for key in ("token_endpoint", "userinfo_endpoint", "revocation_endpoint", "jwks_uri"):
        assert doc[key].startswith(google.url + "/")
        assert flow.http.options(doc[key]).status_code != 404, key
    assert doc["response_types_supported"] == ["code"]
    assert doc["subject_types_supported"] == ["public"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["scopes_supported"] == ["openid", "email", "profile"]
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_post",
                                                            "client_secret_basic"]
    assert {"sub", "email", "email_verified", "aud", "iss"} <= set(doc["claims_supported"])
    assert doc["code_challenge_methods_supported"] == ["plain", "S256"]


def test_jwks_publishes_public_rs256_keys_only(google, flow):
    keys = flow.http.get(f"{google.url}/oauth2/v3/certs").json()["keys"]
    assert keys and all(k["kty"] == "RSA" and k["alg"] == "RS256" and k["use"] == "sig"
                        for k in keys)
    assert all(not {"d", "p", "q", "dp", "dq", "qi"} & k.keys() for k in keys)


# ---- authlib, as the app will use it -------------------------------------------------------


def authlib_app(google, org: GoogleOrg, ca, **authorize_params: str) -> tuple[Flask, OAuth]:
    app = Flask("authlib_client")
    app.secret_key = secrets.token_hex(16)
    oauth = OAuth(app)
    oauth.register("google", client_id=org.client_id, client_secret=org.secret,
                   server_metadata_url=f"{google.url}/.well-known/openid-configuration",
                   client_kwargs={"scope": MAIL_SCOPES, "code_challenge_method": "S256",
                                  "verify": str(ca.ca_path), "trust_env": False})

    @app.get("/login")
    def login():
        return oauth.google.authorize_redirect(GOOGLE_CALLBACK, **authorize_params)

    @app.get("/auth/google/callback")
    def callback():
        try:
            token = oauth.google.authorize_access_token()
        except OAuthError as err:
            return jsonify({"oauth_error": err.error, "description": err.description}), 400
        return jsonify(token)

    return app, oauth


def connect_with_authlib(google, org, ca, email, consent=True, **params):
    app, oauth = authlib_app(google, org, ca, access_type="offline", prompt="consent", **params)
    client = app.test_client()
    start = client.get("/login")
    assert start.status_code == 302
    authorize_url = start.headers["Location"]
    callback = complete_authorization(authorize_url, email, "pw", consent=consent,
                                      ca_path=ca.ca_path)
    assert callback.startswith(GOOGLE_CALLBACK + "?")
    answer = client.get(callback[len("http://localhost"):])
    return authorize_url, answer, oauth


def test_authlib_code_flow_with_pkce_nonce_and_id_token(google, google_org, ca, alice):
    authorize_url, answer, _ = connect_with_authlib(google, google_org, ca, alice.email)
    sent = query(authorize_url)
    assert sent["code_challenge_method"] == "S256" and sent["nonce"] and sent["state"]
    assert answer.status_code == 200, answer.get_json()
    token = answer.get_json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3599
    assert token["access_token"].startswith("ya29.")
    assert token["refresh_token"].startswith("1//")
    assert token["scope"].split() == [MAIL, scope_rules.EMAIL, "openid"]
    # authlib verified the ID token (signature, iss, aud, nonce, at_hash) into `userinfo`
    claims = token["userinfo"]
    assert claims["email"] == alice.email and claims["hd"] == google_org.domain
    assert claims["sub"] == alice.sub and claims["nonce"] == sent["nonce"]


def test_id_token_verifies_with_joserfc_against_the_jwks(google, google_org, ca, alice, flow):
    result, verifier = flow.sign_in(alice.email, scope="openid email profile " + MAIL,
                                    nonce="n-fixed")
    token = flow.exchange(result.params["code"], verifier).json()
    keys = KeySet.import_key_set(flow.http.get(f"{google.url}/oauth2/v3/certs").json())
    decoded = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
    claims = decoded.claims
    assert decoded.header["alg"] == "RS256" and decoded.header["kid"]
    assert claims["iss"] == google.url
    assert claims["aud"] == claims["azp"] == google_org.client_id
    assert claims["sub"] == alice.sub and len(alice.sub) == 21 and alice.sub.isdigit()
    assert claims["email"] == alice.email and claims["email_verified"] is True
    assert claims["hd"] == google_org.domain
    assert claims["nonce"] == "n-fixed"
    assert claims["at_hash"] == at_hash(token["access_token"])
    assert claims["name"] == "Alice Example" and claims["given_name"] == "Alice"
    assert claims["exp"] - claims["iat"] == 3600 and abs(claims["iat"] - time.time()) < 60
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": google.url}).validate(claims)


def test_consumer_account_has_no_hd_claim(google, ca, make_google_org):
    org = make_google_org(user_type="external", verified=True)
    email = f"bob{secrets.token_hex(3)}@gmail.test"
    google.add_user(email, "pw")
    flow = Flow(org, ca)
    result, verifier = flow.sign_in(email)
    assert "hd" not in result.params
    claims = jwt.decode(flow.exchange(result.params["code"], verifier).json()["id_token"],
                        KeySet.import_key_set(google.signer.jwks())).claims
    assert "hd" not in claims and claims["email"] == email


def test_authlib_refresh_keeps_the_same_refresh_token(google, google_org, ca, alice):
    _, answer, oauth = connect_with_authlib(google, google_org, ca, alice.email)
    token = answer.get_json()
    session = OAuth2Session(google_org.client_id, google_org.secret, verify=str(ca.ca_path),
                            trust_env=False)
    endpoint = oauth.google.server_metadata["token_endpoint"]
    first = session.refresh_token(endpoint, refresh_token=token["refresh_token"])
    second = session.refresh_token(endpoint, refresh_token=token["refresh_token"])
    for renewed in (first, second):
        assert renewed["access_token"] != token["access_token"]
        assert renewed["refresh_token"] == token["refresh_token"]  # authlib keeps the old one
        assert renewed["expires_in"] == 3599 and "id_token" in renewed
    raw = Flow(google_org, ca).refresh(token["refresh_token"]).json()
    assert "refresh_token" not in raw  # Google does not rotate refresh tokens
    assert Flow(google_org, ca).tokeninfo(first["access_token"]).status_code == 200


def test_authlib_revocation_ends_the_grant(google, google_org, ca, alice):
    _, answer, oauth = connect_with_authlib(google, google_org, ca, alice.email)
    token = answer.get_json()
    session = OAuth2Session(google_org.client_id, google_org.secret, verify=str(ca.ca_path),
                            trust_env=False)
    revoked = session.revoke_token(oauth.google.server_metadata["revocation_endpoint"],
                                   token=token["refresh_token"],
                                   token_type_hint="refresh_token")
    assert revoked.status_code == 200
    flow = Flow(google_org, ca)
    assert flow.refresh(token["refresh_token"]).json() == REVOKED
    assert flow.tokeninfo(token["access_token"]).status_code == 400
    # the consent is gone too: the next sign-in asks again
    result, _ = flow.sign_in(alice.email)
    assert "consent" in result.pages


def test_authlib_refetches_the_jwks_after_key_rotation(google, google_org, ca, alice):
    app, oauth = authlib_app(google, google_org, ca, access_type="offline")
    oauth.google.load_server_metadata()
    oauth.google.fetch_jwk_set()  # cached, with the old key only
    google.rotate_signing_key()
    before = len(google.calls("jwks"))
    client = app.test_client()
    callback = complete_authorization(client.get("/login").headers["Location"], alice.email,
                                      "pw", ca_path=ca.ca_path)
    answer = client.get(callback[len("http://localhost"):])
    assert answer.status_code == 200, answer.get_json()
    assert len(google.calls("jwks")) == before + 1


def test_authlib_reports_a_declined_consent(google, google_org, ca, alice):
    _, answer, _ = connect_with_authlib(google, google_org, ca, alice.email, consent=False)
    assert answer.status_code == 400
    assert answer.get_json()["oauth_error"] == "access_denied"


# ---- the authorization response ------------------------------------------------------------


def test_code_redirect_carries_state_iss_scope_and_hd(google, flow, alice):
    url, _ = flow.url()
    result = authorize(url, alice.email, "pw", ca_path=flow.ca.ca_path)
    sent = query(url)
    assert list(result.params)[:3] == ["state", "iss", "code"]
    assert result.params["state"] == sent["state"] and result.params["iss"] == google.url
    assert result.params["code"].startswith("4/0A")
    assert result.params["scope"].split() == [MAIL, scope_rules.EMAIL, "openid"]
    assert result.params["hd"] == flow.org.domain and result.params["prompt"] == "consent"
    assert result.pages == ("signin", "consent")  # Internal app: no unverified-app warning


def page_after_sign_in(flow: Flow, email: str, session: requests.Session | None = None,
                       **params: str) -> str:
    """The text of the page shown right after the password (consent, warning, error...)."""
    session = session or browser(flow.ca.ca_path)
    page = session.get(flow.url(**params)[0])
    rid = page.text.split('name="rid" value="')[1].split('"')[0]
    return html.unescape(session.post(f"{flow.google.url}/signin/identifier",
                                      data={"rid": rid, "identifier": email, "Passwd": "pw"},
                                      allow_redirects=False).text)


def test_consent_page_words_the_gmail_scope_like_google(google, flow, alice):
    session = browser(flow.ca.ca_path)
    consent = page_after_sign_in(flow, alice.email, session)
    assert f"{flow.org.client.name} wants access to your Google Account" in consent
    assert "Read, compose, send, and permanently delete all your email from Gmail" in consent
    assert "See your primary Google Account email address" in consent
    assert f'value="{MAIL}"' in consent  # a granular-consent checkbox
    assert session.cookies.get("SID")


def test_declining_consent_sends_access_denied_back(flow, alice):
    result, _ = flow.sign_in(alice.email, driver={"consent": False})
    assert result.params["error"] == "access_denied" and "code" not in result.params
    assert result.params["state"].startswith("st-")


def test_unticked_gmail_box_grants_sign_in_scopes_only(flow, alice):
    result, verifier = flow.sign_in(alice.email, driver={"grant_scopes": ["openid", "email"]})
    token = flow.exchange(result.params["code"], verifier).json()
    assert MAIL not in token["scope"].split()
    assert MAIL not in flow.tokeninfo(token["access_token"]).json()["scope"].split()


def test_include_granted_scopes_adds_earlier_grants(flow, alice):
    flow.tokens(alice.email, scope="openid email")
    narrow = flow.tokens(alice.email, scope=MAIL)
    assert narrow["scope"].split() == [MAIL]
    wide = flow.tokens(alice.email, scope=MAIL, include_granted_scopes="true")
    assert set(wide["scope"].split()) == {MAIL, scope_rules.EMAIL, "openid"}


# ---- refresh tokens: when they come -------------------------------------------------------


def test_online_access_gets_no_refresh_token(flow, alice):
    assert "refresh_token" not in flow.tokens(alice.email, access_type="online")


def test_repeated_authorization_skips_consent_and_returns_no_refresh_token(flow, alice):
    first = flow.tokens(alice.email)
    result, verifier = flow.sign_in(alice.email)
    assert "consent" not in result.pages and result.params["prompt"] == "none"
    again = flow.exchange(result.params["code"], verifier).json()
    assert "refresh_token" not in again and "access_token" in again
    forced, verifier = flow.sign_in(alice.email, prompt="consent")
    assert "consent" in forced.pages
    fresh = flow.exchange(forced.params["code"], verifier).json()
    assert fresh["refresh_token"] != first["refresh_token"]
    for token in (first["refresh_token"], fresh["refresh_token"]):  # both stay valid
        assert flow.refresh(token).status_code == 200


def test_the_101st_refresh_token_kills_the_oldest(google, flow, alice):
    client = flow.org.client
    tokens = [google.store.issue(client, alice, [MAIL], "offline", new_refresh=True)[1]
              for _ in range(101)]
    assert flow.refresh(tokens[0].token).json() == REVOKED
    assert flow.refresh(tokens[1].token).status_code == 200


# ---- refresh tokens: when they die -------------------------------------------------------


def _revoke_access_token(flow, tokens, email):
    return flow.http.post(f"{flow.google.url}/revoke", data={"token": tokens["access_token"]})


def _revoke_refresh_token(flow, tokens, email):
    return flow.http.post(f"{flow.google.url}/revoke", data={"token": tokens["refresh_token"]},
                          headers={"Content-Type": "application/x-www-form-urlencoded"})


def _user_removes_access(flow, tokens, email):
    flow.google.revoke(email, flow.org.client_id)


def _password_change(flow, tokens, email):
    flow.google.change_password(email)


def _six_months_unused(flow, tokens, email):
    flow.google.age_refresh_tokens(183, email=email)


@pytest.mark.parametrize("kill", [_revoke_access_token, _revoke_refresh_token,
                                  _user_removes_access, _password_change, _six_months_unused])
def test_dead_refresh_token_is_invalid_grant(flow, alice, kill):
    tokens = flow.tokens(alice.email)
    assert flow.refresh(tokens["refresh_token"]).status_code == 200
    answer = kill(flow, tokens, alice.email)
    if answer is not None:
        assert answer.status_code == 200 and answer.json() == {}
    dead = flow.refresh(tokens["refresh_token"])
    assert dead.status_code == 400 and dead.json() == REVOKED
    assert flow.tokeninfo(tokens["access_token"]).json() == {
        "error": "invalid_token", "error_description": "Invalid Value"}


def test_refresh_token_survives_almost_six_months_of_disuse(flow, alice):
    tokens = flow.tokens(alice.email)
    flow.google.age_refresh_tokens(180, email=alice.email)
    assert flow.refresh(tokens["refresh_token"]).status_code == 200


def test_password_change_spares_tokens_without_gmail_scopes(flow, alice):
    tokens = flow.tokens(alice.email, scope="openid email")
    flow.google.change_password(alice.email, "new-pw")
    assert flow.refresh(tokens["refresh_token"]).status_code == 200
    with pytest.raises(AuthorizationError, match="Wrong password"):
        flow.sign_in(alice.email, "pw")


@pytest.mark.parametrize("scope,status,days", [
    (MAIL_SCOPES, "testing", 7), (MAIL_SCOPES, "testing", 6.9),
    ("openid email profile", "testing", 30), (MAIL_SCOPES, "production", 30)])
def test_testing_apps_refresh_tokens_expire_after_seven_days(google, ca, make_google_org,
                                                            scope, status, days):
    org = make_google_org(user_type="external", publishing_status=status)
    user = google.add_user(f"tester{secrets.token_hex(4)}@gmail.test", "pw")
    org.client.test_users.add(user.email)
    flow = Flow(org, ca)
    tokens = flow.tokens(user.email, scope=scope)
    google.age_refresh_tokens(days, client_id=org.client_id)
    answer = flow.refresh(tokens["refresh_token"])
    dies = status == "testing" and days >= 7 and scope == MAIL_SCOPES
    assert (answer.json() == REVOKED) if dies else answer.status_code == 200


def test_admin_restriction_blocks_sign_in_and_refresh(google, flow, alice):
    tokens = flow.tokens(alice.email)
    google.restrict_app(flow.org.domain, flow.org.client_id)
    try:
        answer = flow.refresh(tokens["refresh_token"])
        assert answer.status_code == 400 and answer.json()["error"] == "admin_policy_enforced"
        assert flow.org.domain in answer.json()["error_description"]
        with pytest.raises(AuthorizationError) as err:
            flow.sign_in(alice.email)
        assert (err.value.code, err.value.status) == ("admin_policy_enforced", 400)
    finally:
        google.unrestrict_app(flow.org.domain, flow.org.client_id)
    assert flow.refresh(tokens["refresh_token"]).status_code == 200


# ---- token endpoint errors -----------------------------------------------------------------


def test_client_secret_basic_and_post_are_both_accepted(google, flow, alice):
    for basic in (True, False):
        result, verifier = flow.sign_in(alice.email)
        assert flow.exchange(result.params["code"], verifier, basic=basic).status_code == 200
    methods = [r.auth_method for r in google.calls("token", client_id=flow.org.client_id)]
    assert methods == ["client_secret_basic", "client_secret_post"]


@pytest.mark.parametrize("overrides,status,body", [
    ({"client_secret": "GOCSPX-wrong"}, 401,
     {"error": "invalid_client", "error_description": "Unauthorized"}),
    ({"client_id": "1-x.apps.googleusercontent.com"}, 401,
     {"error": "invalid_client", "error_description": "The OAuth client was not found."}),
    ({"client_secret": ""}, 400,
     {"error": "invalid_request", "error_description": "client_secret is missing."}),
    ({"grant_type": "password"}, 400,
     {"error": "unsupported_grant_type", "error_description": "Invalid grant_type: password"}),
    ({"code": ""}, 400,
     {"error": "invalid_request", "error_description": "Missing required parameter: code"}),
    ({"code": "not-a-code"}, 400,
     {"error": "invalid_grant", "error_description": "Malformed auth code."}),
    ({"code": "4/0AbcdefUnknown"}, 400,
     {"error": "invalid_grant", "error_description": "Bad Request"}),
    ({"redirect_uri": GOOGLE_CALLBACK + "/"}, 400,
     {"error": "redirect_uri_mismatch", "error_description": "Bad Request"}),
    ({"code_verifier": None}, 400,
     {"error": "invalid_grant", "error_description": "Missing code verifier."}),
    ({"code_verifier": "x" * 50}, 400,
     {"error": "invalid_grant", "error_description": "Invalid code verifier."}),
])
def test_token_errors_have_googles_shapes(flow, alice, overrides, status, body):
    result, verifier = flow.sign_in(alice.email)
    answer = flow.exchange(result.params["code"], verifier, **overrides)
    assert (answer.status_code, answer.json()) == (status, body)
    assert "no-store" in answer.headers["Cache-Control"]


def test_wrong_basic_secret_is_401(flow, alice):
    result, verifier = flow.sign_in(alice.email)
    answer = flow.http.post(f"{flow.google.url}/token", auth=(flow.org.client_id, "bad"),
                            data={"grant_type": "authorization_code",
                                  "code": result.params["code"],
                                  "redirect_uri": GOOGLE_CALLBACK, "code_verifier": verifier})
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


def test_code_is_single_use(flow, alice):
    result, verifier = flow.sign_in(alice.email)
    assert flow.exchange(result.params["code"], verifier).status_code == 200
    again = flow.exchange(result.params["code"], verifier)
    assert (again.status_code, again.json()) == (
        400, {"error": "invalid_grant", "error_description": "Bad Request"})


def test_code_expires(google, flow, alice):
    result, verifier = flow.sign_in(alice.email)
    google.store.codes[result.params["code"]].issued -= google.code_lifetime + 1
    assert flow.exchange(result.params["code"], verifier).json()["error"] == "invalid_grant"


def test_code_of_another_client_is_refused(ca, flow, alice, make_google_org):
    result, verifier = flow.sign_in(alice.email)
    other = Flow(make_google_org(), ca)
    answer = other.exchange(result.params["code"], verifier)
    assert answer.json() == {"error": "invalid_grant", "error_description": "Bad Request"}
    assert flow.exchange(result.params["code"], verifier).status_code == 200


def test_plain_pkce_and_no_pkce(flow, alice):
    verifier = secrets.token_urlsafe(48)
    result, _ = flow.sign_in(alice.email, code_challenge=verifier, code_challenge_method="plain")
    assert flow.exchange(result.params["code"], verifier).status_code == 200
    result, _ = flow.sign_in(alice.email, code_challenge=None, code_challenge_method=None)
    extra = flow.exchange(result.params["code"], "unneeded-" + "v" * 40)
    assert extra.json() == {"error": "invalid_grant",
                            "error_description": "code_verifier or verifier is not needed."}
    assert flow.exchange(result.params["code"], None).status_code == 200


def test_refresh_errors(ca, flow, alice, make_google_org):
    tokens = flow.tokens(alice.email)
    other = Flow(make_google_org(), ca)
    stolen = other.refresh(tokens["refresh_token"])
    assert (stolen.status_code, stolen.json()) == (
        401, {"error": "unauthorized_client", "error_description": "Unauthorized"})
    assert flow.refresh("1//0unknown").json() == {"error": "invalid_grant",
                                                  "error_description": "Bad Request"}
    assert flow.refresh("").json()["error"] == "invalid_request"
    wider = flow.refresh(tokens["refresh_token"],
                         scope="https://www.googleapis.com/auth/gmail.send")
    assert wider.json()["error"] == "invalid_scope"
    narrower = flow.refresh(tokens["refresh_token"], scope=MAIL).json()
    assert narrower["scope"] == MAIL and "id_token" not in narrower


def test_revoking_an_online_access_token(flow, alice):
    tokens = flow.tokens(alice.email, access_type="online")
    assert "refresh_token" not in tokens and flow.tokeninfo(tokens["access_token"]).ok
    revoked = flow.http.post(f"{flow.google.url}/revoke", data={"token": tokens["access_token"]})
    assert revoked.status_code == 200
    assert flow.tokeninfo(tokens["access_token"]).status_code == 400
    userinfo = flow.http.get(f"{flow.google.url}/v1/userinfo",
                             headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401


def test_revoke_errors(flow, alice):
    tokens = flow.tokens(alice.email)
    url = f"{flow.google.url}/revoke"
    assert flow.http.post(url, params={"token": tokens["refresh_token"]}).status_code == 200
    again = flow.http.post(url, data={"token": tokens["refresh_token"]})
    assert (again.status_code, again.json()["error"]) == (400, "invalid_token")
    assert flow.http.post(url, data={"token": "ya29.nothing"}).status_code == 400
    assert flow.http.post(url, data={}).json()["error"] == "invalid_request"


# ---- pages that never go back to the app --------------------------------------------------


def _page_error(flow, email: str, url: str) -> AuthorizationError:
    raw = flow.http.get(url, allow_redirects=False)
    assert "Location" not in raw.headers  # Google shows these, it never redirects
    with pytest.raises(AuthorizationError) as err:
        authorize(url, email, "pw", ca_path=flow.ca.ca_path)
    return err.value


@pytest.mark.parametrize("params,status,code", [
    ({"redirect_uri": "http://localhost/auth/google/callback/"}, 400, "redirect_uri_mismatch"),
    ({"redirect_uri": "http://evil.test/auth/google/callback"}, 400, "redirect_uri_mismatch"),
    ({"client_id": "123-nope.apps.googleusercontent.com"}, 401, "invalid_client"),
    ({"client_id": None}, 400, "invalid_request"),
    ({"response_type": None}, 400, "invalid_request"),
    ({"scope": None}, 400, "invalid_request"),
    ({"scope": "openid https://www.googleapis.com/auth/nope"}, 400, "invalid_scope"),
    ({"access_type": "forever"}, 400, "invalid_request"),
    ({"prompt": "none consent"}, 400, "invalid_request"),
    ({"code_challenge_method": "S512"}, 400, "invalid_request"),
])
def test_bad_authorization_requests_show_googles_error_page(flow, alice, params, status, code):
    url, _ = flow.url(**params)
    err = _page_error(flow, alice.email, url)
    assert (err.status, err.code) == (status, code)


def test_internal_app_refuses_other_organizations(google, flow, make_google_org, ca):
    outsider = make_google_org().user("eve")
    consumer = google.add_user(f"carol{secrets.token_hex(3)}@gmail.test", "pw")
    for user in (outsider, consumer):
        err = _page_error(flow, user.email, flow.url()[0])
        assert (err.status, err.code) == (403, "org_internal")


def test_testing_app_admits_test_users_only(google, ca, make_google_org):
    org = make_google_org(user_type="external", publishing_status="testing")
    flow = Flow(org, ca)
    stranger = google.add_user(f"dave{secrets.token_hex(3)}@gmail.test", "pw")
    err = _page_error(flow, stranger.email, flow.url()[0])
    assert (err.status, err.code) == (403, "access_denied")
    google.add_test_user(org.client_id, stranger.email)
    notice = page_after_sign_in(flow, stranger.email)
    assert "Google hasn't verified this app" in notice
    assert "an app that's currently being tested" in notice
    result, _ = flow.sign_in(stranger.email)
    assert result.pages == ("signin", "warning", "consent") and "code" in result.params


def test_unverified_external_app_shows_the_warning(google, ca, make_google_org):
    def person():
        return google.add_user(f"erin{secrets.token_hex(3)}@gmail.test", "pw").email

    unverified = Flow(make_google_org(user_type="external"), ca)
    notice = page_after_sign_in(unverified, person())
    assert "Until the developer (admin@" in notice and "(unsafe)" in notice
    result, _ = unverified.sign_in(person())
    assert result.pages == ("signin", "warning", "consent")
    back, _ = unverified.sign_in(person(), driver={"accept_unverified": False})
    assert back.pages == ("signin", "warning") and back.params["error"] == "access_denied"
    signin_only, _ = unverified.sign_in(person(), scope="openid email")
    assert signin_only.pages == ("signin", "consent")
    verified = Flow(make_google_org(user_type="external", verified=True), ca)
    assert verified.sign_in(person())[0].pages == ("signin", "consent")


def test_wrong_password_keeps_the_user_on_the_sign_in_page(flow, alice):
    with pytest.raises(AuthorizationError, match="Wrong password"):
        flow.sign_in(alice.email, "not-the-password")
    with pytest.raises(AuthorizationError, match="Couldn't find your Google Account"):
        flow.sign_in("nobody@" + flow.org.domain)


# ---- browser sessions: chooser, login_hint, prompt=none -------------------------------------


def test_chooser_login_hint_and_prompt_none(google, flow, alice):
    session = browser(flow.ca.ca_path)
    first = authorize(flow.url()[0], alice.email, "pw", ca_path=flow.ca.ca_path,
                      session=session)
    assert first.pages == ("signin", "consent")
    again = authorize(flow.url(prompt="select_account")[0], alice.email, "pw",
                      ca_path=flow.ca.ca_path, session=session)
    assert again.pages == ("chooser",) and "code" in again.params
    hinted = authorize(flow.url(login_hint=alice.email)[0], alice.email, "pw",
                       ca_path=flow.ca.ca_path, session=session)
    assert hinted.pages == () and "code" in hinted.params
    silent = authorize(flow.url(prompt="none")[0], alice.email, "pw",
                       ca_path=flow.ca.ca_path, session=session)
    assert silent.pages == () and silent.params["prompt"] == "none"
    wider = authorize(flow.url(prompt="none", scope=MAIL_SCOPES + " profile")[0],
                      alice.email, "pw", ca_path=flow.ca.ca_path, session=session)
    assert wider.params["error"] == "consent_required"
    google.change_password(alice.email, "pw2")  # ends the browser session
    gone = authorize(flow.url(prompt="none")[0], alice.email, "pw", ca_path=flow.ca.ca_path,
                     session=session)
    assert gone.params["error"] == "login_required"


def test_hd_parameter_narrows_the_account_chooser(google, flow, alice):
    session = browser(flow.ca.ca_path)
    consumer = google.add_user(f"frank{secrets.token_hex(3)}@gmail.test", "pw")
    for user in (alice, consumer):  # both signed in to this browser
        page_after_sign_in(flow, user.email, session)
    both = session.get(flow.url()[0]).text
    assert alice.email in both and consumer.email in both and "Choose an account" in both
    narrowed = session.get(flow.url(hd=flow.org.domain)[0]).text
    assert alice.email in narrowed and consumer.email not in narrowed


# ---- tokeninfo, userinfo, request log ------------------------------------------------------


def test_tokeninfo_answers_like_google(flow, alice):
    tokens = flow.tokens(alice.email)
    info = flow.tokeninfo(tokens["access_token"]).json()
    assert info["azp"] == info["aud"] == flow.org.client_id
    assert info["sub"] == alice.sub and info["email"] == alice.email
    assert info["email_verified"] == "true" and info["access_type"] == "offline"
    assert set(info["scope"].split()) == {MAIL, scope_rules.EMAIL, "openid"}
    assert 3590 <= int(info["expires_in"]) <= 3599
    assert abs(int(info["exp"]) - time.time() - 3599) < 10
    assert all(isinstance(v, str) for v in info.values())
    by_id = flow.http.get(f"{flow.google.url}/tokeninfo",
                          params={"id_token": tokens["id_token"]}).json()
    assert by_id["email"] == alice.email and by_id["email_verified"] == "true"
    flow.google.expire_access_tokens(alice.email)
    assert flow.tokeninfo(tokens["access_token"]).status_code == 400
    renewed = flow.refresh(tokens["refresh_token"]).json()
    assert flow.tokeninfo(renewed["access_token"]).status_code == 200


def test_userinfo_by_bearer_token(flow, alice):
    tokens = flow.tokens(alice.email, scope="openid email profile")
    url = f"{flow.google.url}/v1/userinfo"
    claims = flow.http.get(url, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert claims.json() == {"sub": alice.sub, "name": "Alice Example", "given_name": "Alice",
                             "family_name": "Example", "email": alice.email,
                             "email_verified": True, "hd": flow.org.domain}
    bad = flow.http.get(url, headers={"Authorization": "Bearer ya29.forged"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["WWW-Authenticate"]


def test_request_log_holds_no_secrets(google, flow, alice):
    google.clear_log()
    tokens = flow.tokens(alice.email)
    flow.refresh(tokens["refresh_token"])
    logged = repr(google.requests)
    for secret in (tokens["access_token"], tokens["refresh_token"], tokens["id_token"],
                   flow.org.secret):
        assert secret not in logged
    assert [r.grant_type for r in google.calls("token")] == ["authorization_code",
                                                             "refresh_token"]


# ---- Dovecot checks the stand-in's tokens for Gmail-like XOAUTH2 logins ----------------------


def imap_login(server: GmailDovecot, ca, login: str, token: str) -> str:
    """XOAUTH2 login; returns "OK" or the server's NO text."""
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.imap_port, ssl_context=ca.client_context())
    auth = f"user={login}\x01auth=Bearer {token}\x01\x01".encode()
    try:
        imap.authenticate("XOAUTH2", lambda challenge: b"" if challenge else auth)
        folders = imap.list()[1]
        assert any(b"[Gmail]/All Mail" in f and b"\\All" in f for f in folders)
        return "OK"
    except imaplib.IMAP4.error as err:
        return str(err)
    finally:
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def test_dovecot_accepts_a_live_token_and_refuses_a_revoked_one(gmail_dovecot, ca, flow, alice):
    tokens = flow.tokens(alice.email)
    assert imap_login(gmail_dovecot, ca, alice.email, tokens["access_token"]) == "OK", \
        gmail_dovecot.log_tail()
    assert imap_login(gmail_dovecot, ca, alice.email.upper(), tokens["access_token"]) == "OK"
    flow.http.post(f"{flow.google.url}/revoke", data={"token": tokens["access_token"]})
    refused = imap_login(gmail_dovecot, ca, alice.email, tokens["access_token"])
    assert "AUTHENTICATIONFAILED" in refused


def test_dovecot_refuses_expired_foreign_and_mail_less_tokens(gmail_dovecot, ca, flow, alice,
                                                              google_org):
    bob = google_org.user("bob")
    tokens = flow.tokens(alice.email)
    assert "AUTHENTICATIONFAILED" in imap_login(gmail_dovecot, ca, bob.email,
                                                tokens["access_token"])
    no_mail = flow.tokens(alice.email, prompt="consent",
                          driver={"grant_scopes": ["openid", "email"]})
    assert MAIL not in no_mail["scope"]
    assert "AUTHENTICATIONFAILED" in imap_login(gmail_dovecot, ca, alice.email,
                                                no_mail["access_token"])
    google_org.provider.expire_access_tokens(alice.email)
    assert "AUTHENTICATIONFAILED" in imap_login(gmail_dovecot, ca, alice.email,
                                                tokens["access_token"])
    renewed = flow.refresh(tokens["refresh_token"]).json()
    assert imap_login(gmail_dovecot, ca, alice.email, renewed["access_token"]) == "OK"


def test_dovecot_introspection_get_mode_fails_revoked_tokens_as_temporary(ca, google, flow,
                                                                         alice):
    if not dovecot_available():
        pytest.skip("Dovecot is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="connector-gmail-get-"))
    try:
        with GmailDovecot(workdir, ca, google.url, mode="introspection") as server:
            tokens = flow.tokens(alice.email)
            assert imap_login(server, ca, alice.email, tokens["access_token"]) == "OK"
            google.revoke(alice.email)
            refused = imap_login(server, ca, alice.email, tokens["access_token"])
            assert "UNAVAILABLE" in refused  # Dovecot 2.3 ignores the 400 status in this mode
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
