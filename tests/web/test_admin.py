"""The "Microsoft 365 app" page: what it shows, what saving checks, and each failure in words."""
from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import select

from connector import users
from connector.models import AppRegistration
from tests.support.app import PASSWORD, csrf_token, login, save_registration
from tests.support.net import free_port

CALLBACK = "http://localhost/auth/microsoft/callback"


def _text(response) -> str:
    return response.get_data(as_text=True)


def _stored(app) -> AppRegistration | None:
    with app.extensions["connector"].db.session() as session:
        return session.scalar(select(AppRegistration))


def _problem(html: str) -> str:
    match = re.search(r'<p class="problem" role="alert" id="registration-error">(.*?)</p>', html, re.S)
    assert match, "no explanation on the page"
    return match.group(1)


@pytest.fixture
def signed_in_admin(client, admin):
    assert login(client, admin.email).status_code == 302
    return admin


@pytest.mark.parametrize("path", ["/admin/microsoft", "/admin/users", "/admin/quarantine"])
def test_agents_get_403_on_admin_pages(client, agent, path):
    login(client, agent.email)
    token = csrf_token(_text(client.get("/accounts")))
    response = client.get(path)
    assert response.status_code == 403
    assert "This page is for admins." in _text(response)
    assert client.post(path, data={"csrf_token": token}).status_code in (403, 405)


def test_agents_cannot_save_a_registration(app, client, agent, org):
    login(client, agent.email)
    token = csrf_token(_text(client.get("/accounts")))
    response = client.post("/admin/microsoft", data={"client_id": org.client_id, "tenant": org.tenant_id,
                                                      "client_secret": org.secret, "csrf_token": token})
    assert response.status_code == 403
    assert _stored(app) is None


def test_admin_pages_need_a_sign_in(client):
    for path in ("/admin/microsoft", "/admin/users", "/admin/quarantine"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_page_explains_what_to_register_in_azure(client, signed_in_admin):
    page = _text(client.get("/admin/microsoft"))
    assert f'<code id="callback-url">{CALLBACK}</code>' in page
    assert 'data-copy="callback-url"' in page and ">Copy</button>" in page
    for permission in ("offline_access", "openid", "profile", "email", "IMAP.AccessAsUser.All", "SMTP.Send"):
        assert f"<code>{permission}</code>" in page
    assert "Office 365 Exchange Online" in page
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in page and "https://outlook.office.com/SMTP.Send" in page
    assert "Accounts in this organizational directory only" in page
    assert "Accounts in any organizational directory" in page
    assert "does not work: <em>Personal Microsoft accounts only</em>" in page
    for label in ("Client ID", "Tenant ID", "Client secret"):
        assert re.search(rf"<label for=\"\w+\">{label}</label>", page), label
    assert re.search(r'<input[^>]*type="submit"[^>]*value="Save"', page)
    assert "No app is registered yet." in page


def test_saving_checks_and_stores_the_registration(app, client, signed_in_admin, org, idp):
    calls = idp.token_calls[(org.client_id, "client_credentials")]
    response = save_registration(client, org)
    assert response.status_code == 302 and response.headers["Location"] == "/admin/microsoft"
    assert idp.token_calls[(org.client_id, "client_credentials")] == calls + 1  # the secret was proved
    page = _text(client.get("/admin/microsoft"))
    assert "Saved. Microsoft accepted the app registration." in page
    assert f'<dd id="current-client-id">{org.client_id}</dd>' in page
    assert org.tenant_id in page and CALLBACK in page
    assert re.search(r'<dd id="secret-state">\s*set on \d{4}-\d{2}-\d{2}', page)
    assert org.secret not in page
    row = _stored(app)
    assert row.client_id == org.client_id and row.tenant == org.tenant_id and row.verified_at
    assert row.updated_by == signed_in_admin.email


def test_the_secret_is_write_only(client, signed_in_admin, org):
    save_registration(client, org)
    page = _text(client.get("/admin/microsoft"))
    field = re.search(r'<input[^>]*name="client_secret"[^>]*>', page).group(0)
    assert 'type="password"' in field and "value=" not in field.replace('value=""', "")
    assert "Leave empty to keep the stored secret." in page
    # a failed save does not echo the secret back either
    failed = save_registration(client, org, tenant="nowhere.test")
    assert failed.status_code == 400 and org.secret not in _text(failed)


def test_an_empty_secret_keeps_the_stored_one(app, client, signed_in_admin, org):
    save_registration(client, org)
    before = _stored(app).client_secret_enc
    response = save_registration(client, org, secret="", tenant=org.domain)
    assert response.status_code == 302, _text(response)
    row = _stored(app)
    assert row.tenant == org.domain and row.client_secret_enc == before


def test_the_first_save_needs_a_secret(app, client, signed_in_admin, org):
    response = save_registration(client, org, secret="")
    assert response.status_code == 400
    assert "Paste the client secret&#39;s Value" in _text(response)
    assert _stored(app) is None


def test_secret_expiry_is_shown(client, signed_in_admin, org):
    page = client.get("/admin/microsoft")
    client.post("/admin/microsoft", data={"client_id": org.client_id, "tenant": org.tenant_id,
                                          "client_secret": org.secret, "secret_expires_on": "2031-05-01",
                                          "csrf_token": csrf_token(_text(page))})
    assert re.search(r"set on \d{4}-\d{2}-\d{2}, ends 2031-05-01", _text(client.get("/admin/microsoft")))


def test_a_multitenant_tenant_is_saved_after_discovery_only(app, client, signed_in_admin, make_org, idp):
    org = make_org(audience="multi")
    calls = idp.token_calls[(org.client_id, "client_credentials")]
    response = save_registration(client, org, tenant="organizations")
    assert response.status_code == 302, _text(response)
    assert _stored(app).tenant == "organizations"
    assert idp.token_calls[(org.client_id, "client_credentials")] == calls  # needs a specific tenant


# -- each failure ends on the page with a sentence that names the fix -----------------------------------

def _assert_refused(app, response, *phrases):
    html = _text(response)
    assert 400 <= response.status_code < 500, response.status_code
    assert "Traceback" not in html and "Something went wrong" not in html
    problem = _problem(html)
    for phrase in phrases:
        assert phrase in problem, problem
    assert _stored(app) is None
    return problem


def test_unknown_client_id(app, client, signed_in_admin, org):
    unknown = str(uuid.uuid4())
    response = save_registration(client, org, client_id=unknown)
    _assert_refused(app, response, f"Microsoft does not know the Client ID {unknown}", "(AADSTS700016)",
                    "copy the Application (client) ID from the app&#39;s Overview page")


def test_a_client_id_of_another_tenant(app, client, signed_in_admin, org, make_org):
    other = make_org()
    response = save_registration(client, org, client_id=other.client_id)
    _assert_refused(app, response, "(AADSTS700016)", "check that the Tenant ID is the app&#39;s tenant")


def test_wrong_secret(app, client, signed_in_admin, org):
    response = save_registration(client, org, secret="not-the-secret")
    problem = _assert_refused(app, response, "The client secret is wrong (AADSTS7000215)",
                              "paste the secret&#39;s Value (not its Secret ID)")
    assert "not-the-secret" not in _text(response) and "not-the-secret" not in problem


def test_expired_secret(app, client, signed_in_admin, make_org):
    org = make_org(secret_expired=True)
    response = save_registration(client, org)
    _assert_refused(app, response, "The client secret has expired (AADSTS7000222)",
                    "create a new client secret under Certificates &amp; secrets")


def test_unknown_tenant(app, client, signed_in_admin, org):
    response = save_registration(client, org, tenant="nowhere.test")
    _assert_refused(app, response, "Microsoft does not know the tenant &#34;nowhere.test&#34; (AADSTS90002)",
                    "use the Directory (tenant) ID or a verified domain")


def _admin_client(app):
    """A signed-in admin's client for an app built with other settings."""
    with app.extensions["connector"].db.session() as session:
        users.create_user(session, "root@helpdesk.test", PASSWORD, "admin")
    client = app.test_client()
    assert login(client, "root@helpdesk.test").status_code == 302
    return client


def test_unreachable_authority(make_app, org):
    port = free_port()  # nothing listens there
    app = make_app(microsoft={"authority_host": f"https://127.0.0.1:{port}"})
    response = save_registration(_admin_client(app), org)
    _assert_refused(app, response, f"The sign-in service at https://127.0.0.1:{port} cannot be reached",
                    "check [microsoft] authority_host")


def test_untrusted_authority_certificate(make_app, org):
    app = make_app(tls={"ca_bundle": ""})  # the test CA is not trusted now
    response = save_registration(_admin_client(app), org)
    _assert_refused(app, response, "cannot be reached (SSLError)", "set [tls] ca_bundle to the CA that signed it")


@pytest.mark.parametrize("client_id, tenant, field, phrase", [
    ("not-a-guid", None, "client_id", "a GUID like 11111111-2222-3333-4444-555555555555"),
    (None, "consumers", "tenant", "cannot read work mailboxes over IMAP"),
    (None, "not a tenant!", "tenant", "The Tenant ID is the Directory (tenant) ID GUID"),
])
def test_fields_that_cannot_be_right(app, client, signed_in_admin, org, client_id, tenant, field, phrase):
    response = save_registration(client, org, client_id=client_id, tenant=tenant)
    assert response.status_code == 400
    html = _text(response)
    assert re.search(rf'name="{field}".*?<p class="field-error">[^<]*{re.escape(phrase)}', html, re.S), html
    assert _stored(app) is None


def test_a_failed_save_keeps_the_working_registration(app, client, signed_in_admin, org):
    save_registration(client, org)
    before = _stored(app)
    response = save_registration(client, org, secret="not-the-secret")
    assert response.status_code == 400
    after = _stored(app)
    assert after.client_secret_enc == before.client_secret_enc and after.verified_at == before.verified_at


def test_admin_adds_a_user(app, client, signed_in_admin):
    page = _text(client.get("/admin/users"))
    response = client.post("/admin/users", data={"email": "new@helpdesk.test", "role": "agent",
                                                  "password": "long enough password",
                                                  "csrf_token": csrf_token(page)})
    assert response.status_code == 302
    assert "new@helpdesk.test" in _text(client.get("/admin/users"))
    client.post("/logout", data={"csrf_token": csrf_token(page)})
    assert login(client, "new@helpdesk.test", "long enough password").status_code == 302
