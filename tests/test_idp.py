"""The test identity provider speaks Microsoft's v2.0 protocol well enough for the real msal.

Every flow here goes through msal's ConfidentialClientApplication exactly as the app uses it
(authority on the IdP, instance_discovery=False, a session trusting the test CA), so a protocol
slip in the IdP shows up as an msal failure here rather than as a puzzling app test failure.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import msal
import pytest
import requests

from tests.idp import MSA_TENANT_ID, IdentityProvider
from tests.idp.driver import AuthorizationError, authorize, complete_authorization
from tests.support.tls import TestCA

REDIRECT = "http://127.0.0.1:5000/auth/microsoft/callback"
MAIL_SCOPES = ["https://outlook.office.com/IMAP.AccessAsUser.All",
               "https://outlook.office.com/SMTP.Send"]
ROOT = Path(__file__).resolve().parents[1]

# msal nudges towards response_mode=form_post; both modes are exercised here.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("idp-ca"))


@pytest.fixture(scope="module")
def idp(ca: TestCA):
    with IdentityProvider(ca) as server:
        yield server


@dataclass
class World:
    idp: IdentityProvider
    ca: TestCA
    tenant: object
    app: object
    user: object

    def http(self) -> requests.Session:
        session = requests.Session()
        session.verify = str(self.ca.ca_path)
        session.trust_env = False
        return session

    def msal_app(self, authority: str | None = None, client_id: str | None = None,
                 secret: str = "s3cret", cache: msal.SerializableTokenCache | None = None
                 ) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            client_id or self.app.client_id, client_credential=secret,
            authority=authority or f"{self.idp.url}/{self.tenant.tenant_id}",
            instance_discovery=False, http_client=self.http(),
            token_cache=cache if cache is not None else msal.SerializableTokenCache())

    def sign_in(self, cca: msal.ConfidentialClientApplication, email: str | None = None,
                consent: bool = True, scopes: list[str] | None = None,
                **flow_kwargs) -> tuple[dict, dict]:
        flow = cca.initiate_auth_code_flow(scopes or MAIL_SCOPES, redirect_uri=REDIRECT,
                                           prompt="select_account", **flow_kwargs)
        final = complete_authorization(flow["auth_uri"], email or self.user.email, "pw",
                                       consent=consent, ca_path=self.ca.ca_path)
        assert final.startswith(REDIRECT + "?")
        return flow, query(final)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
def world(idp: IdentityProvider, ca: TestCA, request: pytest.FixtureRequest) -> World:
    """A fresh tenant, single-tenant app and user per test; global knobs reset afterwards."""
    domain = f"{request.node.name.replace('_', '-')[:40]}.test".lower()
    tenant = idp.add_tenant(domain)
    app = idp.add_app(tenant, secret="s3cret", redirect_uris=[REDIRECT])
    user = idp.add_user(tenant, f"alice@{domain}", password="pw", name="Alice Example")
    yield World(idp, ca, tenant, app, user)
    idp.access_token_lifetime = 3600
    idp.strict_rotation = True


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_discovery_documents(world: World) -> None:
    http, url, tid = world.http(), world.idp.url, world.tenant.tenant_id
    by_guid = http.get(f"{url}/{tid}/v2.0/.well-known/openid-configuration").json()
    assert by_guid["issuer"] == f"{url}/{tid}/v2.0"
    assert by_guid["token_endpoint"] == f"{url}/{tid}/oauth2/v2.0/token"
    domain = world.tenant.domain
    by_domain = http.get(f"{url}/{domain}/v2.0/.well-known/openid-configuration").json()
    assert by_domain["authorization_endpoint"] == f"{url}/{tid}/oauth2/v2.0/authorize"
    for name in ("common", "organizations"):
        doc = http.get(f"{url}/{name}/v2.0/.well-known/openid-configuration").json()
        assert doc["issuer"] == f"{url}/{{tenantid}}/v2.0"
        assert doc["token_endpoint"] == f"{url}/{name}/oauth2/v2.0/token"
        assert {"jwks_uri", "end_session_endpoint", "response_types_supported"} <= doc.keys()
    missing = http.get(f"{url}/nowhere.test/v2.0/.well-known/openid-configuration")
    assert missing.status_code == 400
    assert missing.json()["error_codes"] == [90002]


def test_auth_code_flow_with_pkce(world: World) -> None:
    cca = world.msal_app()
    flow, response = world.sign_in(cca)
    assert "code" in response and response["state"] == flow["state"]
    result = cca.acquire_token_by_auth_code_flow(flow, response)
    assert "access_token" in result, result
    assert set(MAIL_SCOPES) <= set(result["scope"].split())
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3600
    assert result["refresh_token"]
    at = claims(result["access_token"])
    assert at["aud"] == "https://outlook.office.com"
    assert set(at["scp"].split()) == {"IMAP.AccessAsUser.All", "SMTP.Send"}
    assert at["upn"] == world.user.email and at["tid"] == world.tenant.tenant_id
    assert at["appid"] == world.app.client_id and at["exp"] > at["iat"]
    assert 1200 < len(result["access_token"]) < 2600  # JWT-sized like Exchange Online's
    idc = result["id_token_claims"]
    assert idc["aud"] == world.app.client_id and idc["oid"] == world.user.oid
    assert idc["preferred_username"] == world.user.email and idc["ver"] == "2.0"
    account = cca.get_accounts()[0]
    assert account["username"] == world.user.email
    assert account["home_account_id"] == f"{world.user.oid}.{world.tenant.tenant_id}"
    assert world.idp.token_calls[(world.user.email, "authorization_code")] == 1


def test_form_post_response_mode(world: World) -> None:
    cca = world.msal_app()
    flow = cca.initiate_auth_code_flow(MAIL_SCOPES, redirect_uri=REDIRECT,
                                       response_mode="form_post")
    answer = authorize(flow["auth_uri"], world.user.email, "pw", ca_path=world.ca.ca_path)
    assert answer.method == "POST" and answer.url == REDIRECT
    assert answer.params["state"] == flow["state"]
    assert "access_token" in cca.acquire_token_by_auth_code_flow(flow, answer.params)


def test_jwks_verifies_id_token(world: World) -> None:
    cca = world.msal_app()
    result = cca.acquire_token_by_auth_code_flow(*world.sign_in(cca))
    http, tid = world.http(), world.tenant.tenant_id
    doc = http.get(f"{world.idp.url}/{tid}/v2.0/.well-known/openid-configuration").json()
    jwks = jwt.PyJWKSet.from_dict(http.get(doc["jwks_uri"]).json())
    kid = jwt.get_unverified_header(result["id_token"])["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    verified = jwt.decode(result["id_token"], key.key, algorithms=["RS256"],
                          audience=world.app.client_id, issuer=doc["issuer"])
    assert verified["tid"] == tid
    with pytest.raises(jwt.InvalidSignatureError):
        head, body, sig = result["id_token"].split(".")
        forged = jwt.utils.base64url_encode(
            json.dumps(dict(verified, name="Mallory")).encode()).decode()
        jwt.decode(f"{head}.{forged}.{sig}", key.key, algorithms=["RS256"],
                   audience=world.app.client_id)


def test_silent_refresh_rotates_refresh_token(world: World) -> None:
    cache = msal.SerializableTokenCache()
    cca = world.msal_app(cache=cache)
    world.idp.access_token_lifetime = 60  # msal treats < 5 minutes left as expired
    first = cca.acquire_token_by_auth_code_flow(*world.sign_in(cca))
    account = cca.get_accounts()[0]
    second = cca.acquire_token_silent(MAIL_SCOPES, account)
    assert second and second["access_token"] != first["access_token"]
    assert second["token_source"] == "identity_provider"
    stored = json.loads(cache.serialize())["RefreshToken"]
    assert [rt["secret"] for rt in stored.values()] == [second["refresh_token"]]
    assert second["refresh_token"] != first["refresh_token"]
    assert world.idp.token_calls[(world.user.email, "refresh_token")] == 1
    # Single-use rotation (the default): the redeemed refresh token is refused from now on, the new one works.
    token_url = f"{world.idp.url}/{world.tenant.tenant_id}/oauth2/v2.0/token"
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
            "client_id": world.app.client_id, "client_secret": "s3cret",
            "scope": " ".join(MAIL_SCOPES)}
    reused = world.http().post(token_url, data=form)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert reused.json()["error_codes"] == [70000]
    third = world.http().post(token_url, data=dict(form, refresh_token=second["refresh_token"]))
    assert third.status_code == 200 and third.json()["refresh_token"] not in (first["refresh_token"],
                                                                             second["refresh_token"])
    again = world.http().post(token_url, data=dict(form, refresh_token=second["refresh_token"]))
    assert again.status_code == 400 and again.json()["error_codes"] == [70000]
    # Microsoft's own leniency, on request: an old refresh token keeps working.
    world.idp.strict_rotation = False
    assert world.http().post(token_url, data=form).status_code == 200


@pytest.mark.parametrize("code", [50173, 70043])
def test_revoked_grant(world: World, code: int) -> None:
    cca = world.msal_app()
    first = cca.acquire_token_by_auth_code_flow(*world.sign_in(cca))
    assert world.idp.introspect(first["access_token"], user=world.user.email)["active"]
    world.idp.revoke(world.user.email, code=code)
    result = cca.acquire_token_silent_with_error(MAIL_SCOPES, cca.get_accounts()[0],
                                                 force_refresh=True)
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")
    assert {"trace_id", "correlation_id", "timestamp", "error_uri"} <= result.keys()
    assert cca.acquire_token_silent(MAIL_SCOPES, cca.get_accounts()[0], force_refresh=True) is None
    assert not world.idp.introspect(first["access_token"], user=world.user.email)["active"]
    # Reconnecting (a fresh sign-in) works again; consent is remembered, so no consent page.
    again = cca.acquire_token_by_auth_code_flow(*world.sign_in(cca))
    assert world.idp.introspect(again["access_token"], user=world.user.email)["active"]


def test_client_credentials(world: World, idp: IdentityProvider) -> None:
    scope = ["https://outlook.office.com/.default"]
    good = world.msal_app().acquire_token_for_client(scope)
    assert good["token_type"] == "Bearer" and claims(good["access_token"])["idtyp"] == "app"
    assert idp.token_calls[(world.app.client_id, "client_credentials")] == 1
    wrong = world.msal_app(secret="nope").acquire_token_for_client(scope)
    assert wrong["error"] == "invalid_client" and wrong["error_codes"] == [7000215]
    expired_app = idp.add_app(world.tenant, secret="old", redirect_uris=[REDIRECT],
                              secret_expired=True)
    expired = world.msal_app(client_id=expired_app.client_id, secret="old") \
        .acquire_token_for_client(scope)
    assert expired["error"] == "invalid_client" and expired["error_codes"] == [7000222]
    unknown = world.msal_app(client_id="00000000-0000-0000-0000-00000000abcd") \
        .acquire_token_for_client(scope)
    assert unknown["error"] == "unauthorized_client" and unknown["error_codes"] == [700016]
    raw = world.http().post(f"{idp.url}/{world.tenant.tenant_id}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": world.app.client_id,
        "client_secret": "nope", "scope": scope[0]})
    assert raw.status_code == 401


def test_bad_pkce_verifier_and_code_replay(world: World) -> None:
    cca = world.msal_app()
    flow, response = world.sign_in(cca)
    forged = dict(flow, code_verifier="x" * 43)
    refused = cca.acquire_token_by_auth_code_flow(forged, response)
    assert refused["error"] == "invalid_grant" and refused["error_codes"] == [501481]
    assert "access_token" in cca.acquire_token_by_auth_code_flow(flow, response)
    replay = world.http().post(f"{world.idp.url}/{world.tenant.tenant_id}/oauth2/v2.0/token", data={
        "grant_type": "authorization_code", "code": response["code"], "client_id":
        world.app.client_id, "client_secret": "s3cret", "redirect_uri": REDIRECT,
        "code_verifier": flow["code_verifier"], "scope": " ".join(MAIL_SCOPES)})
    assert replay.status_code == 400 and replay.json()["error_codes"] == [54005]


def test_common_authority_with_single_tenant_app(world: World) -> None:
    cca = world.msal_app(authority=f"{world.idp.url}/common")
    flow = cca.initiate_auth_code_flow(MAIL_SCOPES, redirect_uri=REDIRECT)
    back = world.http().get(flow["auth_uri"], allow_redirects=False)
    assert back.status_code == 302
    response = query(back.headers["Location"])
    assert response["error"] == "invalid_request" and response["state"] == flow["state"]
    assert response["error_description"].startswith("AADSTS50194: ")
    result = cca.acquire_token_by_auth_code_flow(flow, response)
    assert result["error"] == "invalid_request"


def test_multi_tenant_app_via_common(world: World, idp: IdentityProvider) -> None:
    multi = idp.add_app(world.tenant, secret="s3cret", redirect_uris=[REDIRECT], audience="multi")
    other = idp.add_tenant(f"other-{world.tenant.domain}")
    bob = idp.add_user(other, f"bob@{other.domain}", password="pw", name="Bob")
    cca = world.msal_app(authority=f"{idp.url}/common", client_id=multi.client_id)
    result = cca.acquire_token_by_auth_code_flow(*world.sign_in(cca, email=bob.email))
    assert result["id_token_claims"]["tid"] == other.tenant_id
    assert result["id_token_claims"]["iss"] == f"{idp.url}/{other.tenant_id}/v2.0"
    # The single-tenant app refuses a user of another tenant.
    flow, response = world.sign_in(world.msal_app(), email=bob.email)
    assert response["error"] == "access_denied"
    assert response["error_description"].startswith("AADSTS50020: ")


def test_personal_accounts(world: World, idp: IdentityProvider) -> None:
    msa = idp.add_tenant(f"outlook-{world.tenant.domain}", personal=True)
    eve = idp.add_user(msa, f"eve@outlook-{world.tenant.domain}", password="pw", name="Eve")
    both = idp.add_app(world.tenant, secret="s3cret", redirect_uris=[REDIRECT],
                       audience="multi_personal")
    cca = world.msal_app(authority=f"{idp.url}/consumers", client_id=both.client_id)
    result = cca.acquire_token_by_auth_code_flow(*world.sign_in(cca, email=eve.email))
    assert result["id_token_claims"]["tid"] == MSA_TENANT_ID
    refused = world.msal_app(authority=f"{idp.url}/consumers")
    flow = refused.initiate_auth_code_flow(MAIL_SCOPES, redirect_uri=REDIRECT)
    back = query(world.http().get(flow["auth_uri"], allow_redirects=False).headers["Location"])
    assert back["error_description"].startswith("AADSTS9002346: ")


def test_cancel_consent(world: World) -> None:
    cca = world.msal_app()
    flow, response = world.sign_in(cca, consent=False)
    assert response["error"] == "access_denied" and response["error_subcode"] == "cancel"
    assert response["error_description"].startswith(
        "AADSTS65004: User declined to consent to access the app.")
    assert response["state"] == flow["state"]
    result = cca.acquire_token_by_auth_code_flow(flow, response)
    assert result["error"] == "access_denied" and "access_token" not in result


def test_consent_page_lists_permissions(world: World) -> None:
    cca = world.msal_app()
    flow = cca.initiate_auth_code_flow(MAIL_SCOPES, redirect_uri=REDIRECT)
    http = world.http()
    page = http.get(flow["auth_uri"])
    assert 'name="login"' in page.text and 'name="passwd"' in page.text and "Sign in" in page.text
    rid = page.text.split('name="rid" value="')[1].split('"')[0]
    bad = http.post(f"{world.idp.url}/{world.tenant.tenant_id}/login",
                    data={"rid": rid, "login": world.user.email, "passwd": "wrong"})
    assert "AADSTS50126" in bad.text and 'name="passwd"' in bad.text
    consent = http.post(f"{world.idp.url}/{world.tenant.tenant_id}/login",
                        data={"rid": rid, "login": world.user.email, "passwd": "pw"})
    for words in ("Read and write access to mailboxes via IMAP",
                  "Send emails from mailboxes using SMTP AUTH",
                  "Maintain access to data you have given it access to",
                  "Sign you in and read your profile", "Accept", "Cancel"):
        assert words in consent.text
    with pytest.raises(AuthorizationError) as wrong:
        complete_authorization(flow["auth_uri"], world.user.email, "wrong",
                               ca_path=world.ca.ca_path)
    assert wrong.value.code == 50126


def test_pages_for_unknown_client_and_redirect_uri(world: World) -> None:
    cca = world.msal_app()
    flow = cca.initiate_auth_code_flow(MAIL_SCOPES, redirect_uri="http://evil.test/cb")
    with pytest.raises(AuthorizationError) as bad_redirect:
        complete_authorization(flow["auth_uri"], world.user.email, "pw", ca_path=world.ca.ca_path)
    assert bad_redirect.value.code == 50011
    unknown_url = flow["auth_uri"].replace(world.app.client_id,
                                           "11111111-2222-3333-4444-555555555555")
    with pytest.raises(AuthorizationError) as unknown:
        complete_authorization(unknown_url, world.user.email, "pw", ca_path=world.ca.ca_path)
    assert unknown.value.code == 700016


def test_admin_consent_required(world: World, idp: IdentityProvider) -> None:
    carol = idp.add_user(world.tenant, f"carol@{world.tenant.domain}", password="pw",
                         needs_admin_consent=True)
    cca = world.msal_app()
    _, response = world.sign_in(cca, email=carol.email)
    assert response["error"] == "consent_required"
    assert response["error_description"].startswith("AADSTS65001: ")
    idp.grant_admin_consent(world.tenant, world.app)
    result = cca.acquire_token_by_auth_code_flow(*world.sign_in(cca, email=carol.email))
    assert "access_token" in result


def test_two_resources_in_one_token_request(world: World) -> None:
    cca = world.msal_app()
    both = MAIL_SCOPES + ["https://graph.microsoft.com/User.Read"]
    result = cca.acquire_token_by_auth_code_flow(*world.sign_in(cca, scopes=both))
    assert "access_token" not in result and result["error_codes"] == [28000]


def test_introspection(world: World, idp: IdentityProvider) -> None:
    cca = world.msal_app()
    token = cca.acquire_token_by_auth_code_flow(*world.sign_in(cca))["access_token"]
    shared = f"support@{world.tenant.domain}"
    own = idp.introspect(token, user=world.user.email)
    assert own["active"] and own["username"] == world.user.email
    assert idp.introspect(token)["username"] == world.user.email
    assert not idp.introspect(token, user=shared)["active"]
    idp.grant_mailbox_access(world.user, shared)
    delegated = world.http().post(f"{idp.url}/introspect", params={"user": shared},
                                  data={"token": token}).json()
    assert delegated == {**delegated, "active": True, "username": shared}
    assert not idp.introspect(token, user=f"ceo@{world.tenant.domain}")["active"]
    # Full Access does not include Send As (Exchange: Add-MailboxPermission vs Add-RecipientPermission)
    assert delegated["send_as"] == world.user.email.lower() and delegated["upn"] == world.user.email
    idp.grant_send_as(world.user, shared)
    assert idp.introspect(token, user=shared)["send_as"].split() == [world.user.email.lower(), shared]
    # Dovecot's password-grant passdb: the login name and the token in one request
    grant = world.http().post(f"{idp.url}/introspect/grant", data={
        "grant_type": "password", "username": shared, "password": token, "client_id": "dovecot"})
    assert grant.status_code == 200
    assert grant.json() == {**grant.json(), "username": shared, "active": "true", "access_token": token,
                            "token_type": "Bearer"}
    assert 0 < grant.json()["expires_in"] <= idp.access_token_lifetime
    idp.remove_mailbox_access(world.user, shared)
    assert not idp.introspect(token, user=shared)["active"]
    for form in ({"grant_type": "password", "username": shared, "password": token},
                 {"grant_type": "password", "username": f"ceo@{world.tenant.domain}", "password": token},
                 {"grant_type": "password", "password": token},
                 {"grant_type": "client_credentials", "username": world.user.email, "password": token}):
        refused = world.http().post(f"{idp.url}/introspect/grant", data=form)
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    own = world.http().post(f"{idp.url}/introspect/grant", data={
        "grant_type": "password", "username": world.user.email, "password": token})
    assert own.status_code == 200 and own.json()["username"] == world.user.email
    assert not idp.introspect(token + "x", user=world.user.email)["active"]
    assert not idp.introspect("garbage", user=world.user.email)["active"]
    idp.grant_admin_consent(world.tenant, world.app)  # covers Graph User.Read
    graph = cca.acquire_token_silent(["https://graph.microsoft.com/User.Read"],
                                     cca.get_accounts()[0])
    assert graph and not idp.introspect(graph["access_token"], user=world.user.email)["active"]
    idp.expire_access_tokens(world.user.email)
    assert world.http().post(f"{idp.url}/introspect", params={"user": world.user.email},
                             data={"token": token}).json() == {"active": False}


def test_out_of_process_server(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.idp", "--port", "0", "--state-dir",
                             str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        info = json.loads(proc.stdout.readline())
        http = requests.Session()
        http.verify, http.trust_env = info["ca"], False
        url = info["url"]
        tenant = http.post(f"{url}/_test/add_tenant", json={"domain": "fabrikam.test"}).json()
        app = http.post(f"{url}/_test/add_app", json={
            "tenant": "fabrikam.test", "secret": "s3cret", "redirect_uris": [REDIRECT]}).json()
        http.post(f"{url}/_test/add_user", json={"tenant": "fabrikam.test",
                                                 "email": "dan@fabrikam.test", "password": "pw"})
        cca = msal.ConfidentialClientApplication(
            app["client_id"], client_credential="s3cret",
            authority=f"{url}/{tenant['tenant_id']}", instance_discovery=False, http_client=http)
        flow = cca.initiate_auth_code_flow(MAIL_SCOPES, redirect_uri=REDIRECT)
        final = complete_authorization(flow["auth_uri"], "dan@fabrikam.test", "pw",
                                       ca_path=info["ca"])
        token = cca.acquire_token_by_auth_code_flow(flow, query(final))["access_token"]
        delegated = {"token": token}
        shared = {"email": "dan@fabrikam.test", "mailbox": "team@fabrikam.test"}
        assert not http.post(f"{url}/introspect?user=team@fabrikam.test", data=delegated).json()["active"]
        http.post(f"{url}/_test/grant_mailbox_access", json=shared).raise_for_status()
        http.post(f"{url}/_test/grant_send_as", json=shared).raise_for_status()
        answer = http.post(f"{url}/introspect?user=team@fabrikam.test", data=delegated).json()
        assert answer["active"] and answer["send_as"] == "dan@fabrikam.test team@fabrikam.test"
        http.post(f"{url}/_test/remove_mailbox_access", json=shared).raise_for_status()
        assert not http.post(f"{url}/introspect?user=team@fabrikam.test", data=delegated).json()["active"]
        stats = http.get(f"{url}/_test/stats").json()
        assert stats["token_calls"] == [{"who": "dan@fabrikam.test",
                                         "grant_type": "authorization_code", "count": 1}]
        assert stats["token_calls_total"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
