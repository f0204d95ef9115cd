"""identity/microsoft.py: the real msal against the test IdP, and every network failure mocked into a sentence."""
from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl, urlsplit

import msal
import pytest
import requests

from connector.identity.microsoft import (CONNECT_SCOPES, IdentityError, MicrosoftIdentity, Registration,
                                          http_session)
from tests.idp.driver import complete_authorization

CALLBACK = "http://localhost/auth/microsoft/callback"


@pytest.fixture
def identity(org, idp, ca) -> MicrosoftIdentity:
    return MicrosoftIdentity(Registration(org.client_id, org.tenant_id, org.secret), idp.url, str(ca.ca_path),
                             CALLBACK)


def with_(identity: MicrosoftIdentity, **changes) -> MicrosoftIdentity:
    reg = identity.registration
    registration = Registration(changes.pop("client_id", reg.client_id), changes.pop("tenant", reg.tenant),
                                changes.pop("client_secret", reg.client_secret))
    return MicrosoftIdentity(registration, changes.pop("authority_host", identity.authority_host),
                             changes.pop("ca_bundle", identity.ca_bundle), CALLBACK)


def fake_response(status: int, body: bytes | str, content_type: str = "application/json") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode() if isinstance(body, str) else body
    response.headers["Content-Type"] = content_type
    response.url = "https://login.example/x"
    return response


def explained(exc_info) -> str:
    return exc_info.value.explained.message


def connect(identity: MicrosoftIdentity, email: str, ca) -> tuple[dict, dict]:
    flow = identity.start_connect(CALLBACK)
    redirect = complete_authorization(flow["auth_uri"], email, "pw", ca_path=ca.ca_path)
    return flow, dict(parse_qsl(urlsplit(redirect).query))


# -- the real thing ----------------------------------------------------------------------------------------

def test_registration_check_against_the_idp(identity, idp, org):
    metadata = identity.discover()
    assert metadata["issuer"] == f"{idp.url}/{org.tenant_id}/v2.0"
    identity.check_registration()
    with pytest.raises(IdentityError) as wrong:
        with_(identity, client_secret="nope").check_registration()
    assert "AADSTS7000215" in explained(wrong) and "nope" not in explained(wrong)


def test_the_environment_ca_bundle_is_ignored(identity, monkeypatch, tmp_path):
    # these machines export REQUESTS_CA_BUNDLE; requests would let it override verify= otherwise
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # and no proxy from the environment
    identity.discover()
    session = http_session(None)
    assert session.trust_env is False and session.verify is True


def test_connect_flow_and_silent_refresh(identity, org, ca, idp):
    mailbox = org.add_user("alice", name="Alice Example")
    flow, args = connect(identity, mailbox, ca)
    assert {"state", "nonce", "code_verifier"} <= flow.keys()
    query = dict(parse_qsl(urlsplit(flow["auth_uri"]).query))
    assert query["prompt"] == "select_account" and query["code_challenge_method"] == "S256"
    assert set(CONNECT_SCOPES) <= set(query["scope"].split())
    connected = identity.finish_connect(flow, args)
    assert connected.username == mailbox and connected.display_name == "Alice Example"
    assert connected.tenant_id == org.tenant_id and connected.home_account_id.endswith(org.tenant_id)
    assert connected.object_id == idp.users[mailbox].oid  # the ID token's oid: who signed in, for good
    cache = json.loads(connected.token_cache)
    assert cache["RefreshToken"] and cache["AccessToken"]

    token, new_cache = identity.mail_token(connected.token_cache, connected.home_account_id)
    assert token and new_cache is None  # cached and fresh: nothing to save
    assert refresh_tokens(connected.token_cache) == idp.live_refresh_tokens(mailbox)
    idp_calls = idp.token_calls[(mailbox, "refresh_token")]
    token2, new_cache = identity.mail_token(connected.token_cache, connected.home_account_id, force_refresh=True)
    assert idp.token_calls[(mailbox, "refresh_token")] == idp_calls + 1
    assert idp.introspect(token2, user=mailbox)["active"]
    # The refresh redeemed the stored refresh token (the IdP refuses it from now on, as a rotating IdP may)
    # and returned a cache with the one that works now: that cache is what must be saved at once.
    assert new_cache is not None
    assert refresh_tokens(new_cache) == idp.live_refresh_tokens(mailbox)
    with pytest.raises(IdentityError) as stale:
        identity.mail_token(connected.token_cache, connected.home_account_id, force_refresh=True)
    assert stale.value.needs_reconnect and "AADSTS70000" in explained(stale)
    token3, newer = identity.mail_token(new_cache, connected.home_account_id, force_refresh=True)
    assert idp.introspect(token3, user=mailbox)["active"] and newer is not None
    assert refresh_tokens(newer) == idp.live_refresh_tokens(mailbox)


def refresh_tokens(cache: str) -> list[str]:
    return [entry["secret"] for entry in json.loads(cache)["RefreshToken"].values()]


def test_a_revoked_grant_needs_reconnect(identity, org, ca, idp):
    mailbox = org.add_user("bob")
    connected = identity.finish_connect(*connect(identity, mailbox, ca))
    idp.revoke(mailbox, code=700082)
    with pytest.raises(IdentityError) as gone:
        identity.mail_token(connected.token_cache, connected.home_account_id, force_refresh=True)
    assert gone.value.needs_reconnect and "(AADSTS700082)" in explained(gone)


def test_a_second_redemption_of_the_same_answer_is_refused(identity, org, ca):
    mailbox = org.add_user("carl")
    flow, args = connect(identity, mailbox, ca)
    identity.finish_connect(dict(flow), args)
    with pytest.raises(IdentityError) as replay:
        identity.finish_connect(dict(flow), args)
    assert "AADSTS54005" in explained(replay) or "state" in explained(replay)


def test_a_wrong_state_is_refused_by_msal(identity, org, ca):
    flow, args = connect(identity, org.add_user("dina"), ca)
    with pytest.raises(IdentityError) as bad:
        identity.finish_connect(flow, dict(args, state="forged"))
    assert "the state does not match" in explained(bad)


# -- the ID token ----------------------------------------------------------------------------------------------

def _tamper(id_token: str, **claims) -> str:
    head, body, sig = id_token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def _id_token(identity, org, ca, local):
    flow, args = connect(identity, org.add_user(local), ca)
    cache = msal.SerializableTokenCache()
    app = msal.ConfidentialClientApplication(org.client_id, client_credential=org.secret,
                                             authority=identity.authority, instance_discovery=False,
                                             http_client=http_session(identity.ca_bundle), token_cache=cache)
    result = app.acquire_token_by_auth_code_flow(flow, args, scopes=CONNECT_SCOPES)
    return result["id_token"], flow["nonce"]


def test_id_token_signature_audience_and_nonce_are_checked(identity, org, ca, make_org):
    id_token, nonce = _id_token(identity, org, ca, "erin")
    assert identity.verify_id_token(id_token, nonce)["preferred_username"] == f"erin@{org.domain}"
    with pytest.raises(IdentityError) as forged:
        identity.verify_id_token(_tamper(id_token, preferred_username="ceo@" + org.domain), nonce)
    assert "could not be verified" in explained(forged)
    with pytest.raises(IdentityError) as nonce_error:
        identity.verify_id_token(id_token, "another-nonce")
    assert "(nonce)" in explained(nonce_error)
    other = make_org()
    with pytest.raises(IdentityError) as audience:  # a token for another app
        with_(identity, client_id=other.client_id).verify_id_token(id_token, nonce)
    assert "could not be verified" in explained(audience)


def test_an_id_token_without_a_username(identity, org, ca, mocker):
    flow, args = connect(identity, org.add_user("fred"), ca)
    mocker.patch.object(MicrosoftIdentity, "verify_id_token", return_value={"tid": org.tenant_id})
    with pytest.raises(IdentityError) as missing:
        identity.finish_connect(flow, args)
    assert "did not say which account signed in" in explained(missing)


@pytest.mark.parametrize("missing", ["oid", "tid"])
def test_an_id_token_without_tid_and_oid_connects_nothing(identity, org, ca, mocker, missing):
    """Without tid + oid a mailbox could only be tied to a name, which can change hands."""
    mailbox = org.add_user(f"hal-{missing}")
    flow, args = connect(identity, mailbox, ca)
    claims = {"preferred_username": mailbox, "tid": org.tenant_id, "oid": "9f0c5b1e-0000-4000-8000-000000000001"}
    del claims[missing]
    mocker.patch.object(MicrosoftIdentity, "verify_id_token", return_value=claims)
    with pytest.raises(IdentityError) as unknown:
        identity.finish_connect(flow, args)
    assert explained(unknown).startswith("Microsoft did not say who signed in (no tid and oid in the ID token)")


def test_jwks_unreachable(identity, org, ca, mocker):
    id_token, nonce = _id_token(identity, org, ca, "gwen")
    jwks_uri = identity.discover()["jwks_uri"]
    real_get = requests.Session.get

    def get(self, url, *args, **kwargs):
        if url == jwks_uri:
            raise requests.exceptions.ReadTimeout("slow")
        return real_get(self, url, *args, **kwargs)
    mocker.patch.object(requests.Session, "get", get)
    with pytest.raises(IdentityError) as unreachable:
        identity.verify_id_token(id_token, nonce)
    assert "cannot be reached (ReadTimeout)" in explained(unreachable)


# -- discovery failures, mocked ----------------------------------------------------------------------------------

@pytest.mark.parametrize("failure, words", [
    (requests.exceptions.ConnectTimeout("x"), "cannot be reached (ConnectTimeout): check [microsoft] authority_host, "
                                              "DNS, the proxy and the firewall."),
    (requests.exceptions.ReadTimeout("x"), "cannot be reached (ReadTimeout)"),
    (requests.exceptions.ConnectionError("x"), "cannot be reached (ConnectionError)"),
    (requests.exceptions.ProxyError("x"), "cannot be reached (ProxyError)"),
    (requests.exceptions.SSLError("x"), "cannot be reached (SSLError): the TLS certificate could not be verified: "
                                        "set [tls] ca_bundle to the CA that signed it, or check authority_host."),
])
def test_discovery_network_failures(identity, mocker, failure, words):
    mocker.patch.object(requests.Session, "get", side_effect=failure)
    with pytest.raises(IdentityError) as exc:
        identity.check_registration()
    assert words in explained(exc)
    assert explained(exc).startswith(f"The sign-in service at {identity.authority_host} ")


@pytest.mark.parametrize("status, body, content_type", [
    (200, "<html><body>Welcome to nginx</body></html>", "text/html"),
    (404, "<html>Not Found</html>", "text/html"),
    (200, "", "application/json"),
    (200, "null", "application/json"),
    (200, "[1, 2]", "application/json"),
    (200, "\"a string\"", "application/json"),
    (200, "{\"status\": \"ok\"}", "application/json"),  # some other JSON service
])
def test_discovery_answers_that_are_not_metadata(identity, mocker, status, body, content_type):
    mocker.patch.object(requests.Session, "get", return_value=fake_response(status, body, content_type))
    with pytest.raises(IdentityError) as exc:
        identity.check_registration()
    assert explained(exc) == (f"{identity.authority_host} did not answer like a Microsoft sign-in service (HTTP "
                              f"{status} without OpenID metadata): check [microsoft] authority_host.")


def test_discovery_error_answers(identity, mocker):
    unknown = {"error": "invalid_tenant", "error_description": "AADSTS90002: Tenant 'x' not found.",
               "error_codes": [90002]}
    mocker.patch.object(requests.Session, "get", return_value=fake_response(400, json.dumps(unknown)))
    with pytest.raises(IdentityError) as exc:
        identity.discover()
    assert "(AADSTS90002)" in explained(exc)
    mocker.patch.object(requests.Session, "get", return_value=fake_response(400, "{}"))
    with pytest.raises(IdentityError) as exc:
        identity.discover()
    assert "(AADSTS90002)" in explained(exc)
    mocker.patch.object(requests.Session, "get", return_value=fake_response(503, "{}"))
    with pytest.raises(IdentityError) as exc:
        identity.discover()
    assert "temporarily unavailable: try again in a few minutes" in explained(exc)


def test_unknown_tenant_and_generic_tenants(identity, idp):
    with pytest.raises(IdentityError) as exc:
        with_(identity, tenant="nowhere.test").check_registration()
    assert "Microsoft does not know the tenant \"nowhere.test\" (AADSTS90002)" in explained(exc)
    calls = idp.token_calls_total
    with_(identity, tenant="organizations").check_registration()  # discovery only
    with_(identity, tenant="common").check_registration()
    assert idp.token_calls_total == calls


# -- msal failures, mocked -----------------------------------------------------------------------------------------

def test_msal_constructor_failures(identity, mocker):
    mocker.patch("msal.ConfidentialClientApplication", side_effect=ValueError("OIDC Discovery failed"))
    with pytest.raises(IdentityError) as exc:
        identity.check_registration()
    assert "(AADSTS90002)" in explained(exc)
    mocker.patch("msal.ConfidentialClientApplication", side_effect=requests.exceptions.ConnectionError("x"))
    with pytest.raises(IdentityError) as exc:
        identity.start_connect(CALLBACK)
    assert "cannot be reached (ConnectionError)" in explained(exc)


@pytest.mark.parametrize("method, call", [
    ("acquire_token_for_client", lambda i: i.check_registration()),
    ("initiate_auth_code_flow", lambda i: i.start_connect(CALLBACK)),
    ("acquire_token_by_auth_code_flow", lambda i: i.finish_connect({"state": "s"}, {"state": "s", "code": "c"})),
])
@pytest.mark.parametrize("failure", [requests.exceptions.ReadTimeout("x"), requests.exceptions.SSLError("x"),
                                     requests.exceptions.ConnectionError("x")])
def test_msal_network_failures(identity, mocker, method, call, failure):
    mocker.patch.object(msal.ConfidentialClientApplication, method, side_effect=failure)
    with pytest.raises(IdentityError) as exc:
        call(identity)
    assert f"cannot be reached ({type(failure).__name__})" in explained(exc)
    assert not exc.value.needs_reconnect


@pytest.mark.parametrize("code, words", [
    (7000215, "The client secret is wrong"), (7000222, "The client secret has expired"),
    (700016, "does not know the Client ID"), (7000218, "Microsoft refused the app's credentials (AADSTS7000218)"),
])
def test_client_credential_errors(identity, mocker, code, words):
    answer = {"error": "invalid_client", "error_description": f"AADSTS{code}: text\r\nTrace ID: x",
              "error_codes": [code]}
    mocker.patch.object(msal.ConfidentialClientApplication, "acquire_token_for_client", return_value=answer)
    with pytest.raises(IdentityError) as exc:
        identity.check_registration()
    assert words in explained(exc)


def test_redeeming_errors(identity, mocker):
    mocker.patch.object(msal.ConfidentialClientApplication, "acquire_token_by_auth_code_flow",
                        return_value={"error": "invalid_grant", "error_description": "AADSTS70008: expired"})
    with pytest.raises(IdentityError) as exc:
        identity.finish_connect({"state": "s"}, {"state": "s", "code": "c"})
    assert "The authorization code expired before it was used (AADSTS70008)" in explained(exc)
    mocker.patch.object(msal.ConfidentialClientApplication, "acquire_token_by_auth_code_flow",
                        side_effect=ValueError("state missing from auth_code_flow"))
    with pytest.raises(IdentityError) as exc:
        identity.finish_connect({"state": "s"}, {"state": "t", "code": "c"})
    assert "the state does not match" in explained(exc)


def test_mail_token_failures(identity, org, ca, mocker):
    with pytest.raises(IdentityError) as empty:
        identity.mail_token("")
    assert empty.value.needs_reconnect and "No sign-in is stored" in explained(empty)

    connected = identity.finish_connect(*connect(identity, org.add_user("hugo"), ca))
    silent = mocker.patch.object(msal.ConfidentialClientApplication, "acquire_token_silent_with_error")
    silent.return_value = None
    with pytest.raises(IdentityError) as none:
        identity.mail_token(connected.token_cache, connected.home_account_id)
    assert none.value.needs_reconnect and "no refresh token" in explained(none)

    silent.return_value = {"error": "invalid_grant", "error_description": "AADSTS50076: MFA",
                           "suberror": "basic_action"}
    with pytest.raises(IdentityError) as mfa:
        identity.mail_token(connected.token_cache, connected.home_account_id)
    assert mfa.value.needs_reconnect and "complete the MFA prompt" in explained(mfa)

    silent.return_value = {"error": "temporarily_unavailable", "error_description": "busy"}
    with pytest.raises(IdentityError) as busy:
        identity.mail_token(connected.token_cache, connected.home_account_id)
    assert not busy.value.needs_reconnect  # a hiccup is not a lost grant

    silent.side_effect = requests.exceptions.ConnectTimeout("x")
    with pytest.raises(IdentityError) as offline:
        identity.mail_token(connected.token_cache, connected.home_account_id)
    assert not offline.value.needs_reconnect and "cannot be reached (ConnectTimeout)" in explained(offline)


def test_errors_never_carry_tokens(identity, org, ca, mocker):
    connected = identity.finish_connect(*connect(identity, org.add_user("iris"), ca))
    secrets = [e["secret"] for section in ("RefreshToken", "AccessToken")
               for e in json.loads(connected.token_cache)[section].values()] + [org.secret]
    mocker.patch.object(msal.ConfidentialClientApplication, "acquire_token_silent_with_error",
                        side_effect=requests.exceptions.ConnectionError(f"failed with {secrets[0]}"))
    with pytest.raises(IdentityError) as exc:
        identity.mail_token(connected.token_cache, connected.home_account_id)
    text = str(exc.value) + repr(exc.value) + explained(exc)
    for secret in secrets:
        assert secret not in text
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
