"""The "Google app" page: what it tells an admin to set up at Google, what saving checks against the
Google stand-in over HTTPS, each failure in words, and a secret that is stored encrypted and never shown."""
from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.pool import NullPool

from connector.models import GoogleAppRegistration
from tests.support.app import csrf_token, login
from tests.support.google_app import (app_config, google, google_org, make_google_org,  # noqa: F401
                                      save_google_app, text)
from tests.support.net import free_port

CALLBACK = "http://localhost/auth/google/callback"


def _stored(app) -> GoogleAppRegistration | None:
    with app.extensions["connector"].db.session() as session:
        return session.scalar(select(GoogleAppRegistration))


def _problem(page: str) -> str:
    match = re.search(r'<p class="problem" role="alert" id="registration-error">(.*?)</p>', page, re.S)
    assert match, "no explanation on the page"
    return html.unescape(match.group(1))


def _field_errors(html: str) -> list[str]:
    return re.findall(r'<p class="field-error">(.*?)</p>', html, re.S)


def _everything_in_the_database(app) -> str:
    """Every value of every table, as text: where a plaintext secret would show."""
    engine = create_engine(app.extensions["connector"].settings.database.url, poolclass=NullPool)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as connection:
            return "\n".join(repr(row) for table in metadata.sorted_tables
                             for row in connection.execute(table.select()))
    finally:
        engine.dispose()


@pytest.fixture
def signed_in_admin(client, admin):
    assert login(client, admin.email).status_code == 302
    return admin


def test_the_page_says_what_to_set_up_at_google(client, signed_in_admin):
    page = text(client.get("/admin/google"))
    for label in ("Client ID", "Client secret"):
        assert re.search(rf'<label for="\w+">{label}</label>', page), label
    assert re.search(r'<input[^>]*type="submit"[^>]*value="Save"', page)
    assert f'<code id="callback-url">{CALLBACK}</code>' in page
    assert 'data-copy="callback-url"' in page and ">Copy</button>" in page
    assert '<code id="scopes">openid email https://mail.google.com/</code>' in page
    internal = re.search(r'<li id="advice-internal">(.*?)</li>', page, re.S).group(1)
    external = re.search(r'<li id="advice-external">(.*?)</li>', page, re.S).group(1)
    assert "<strong>Internal</strong> for a Google Workspace domain" in internal
    assert "Testing" in external and "after 7 days" in external and "Publish the app" in external
    assert "Web application" in page and "Authorized redirect URIs" in page
    assert "POP and IMAP access" in page
    assert "No Google app is registered yet." in page
    assert 'id="callback-problem"' not in page  # http://localhost is accepted by Google


def test_an_http_base_url_that_google_would_refuse_is_pointed_out(make_app, admin):
    app = make_app(app={"base_url": "http://helpdesk.example"})
    client = app.test_client()
    login(client, admin.email)
    page = text(client.get("/admin/google"))
    assert '<code id="callback-url">http://helpdesk.example/auth/google/callback</code>' in page
    assert "Google accepts http:// redirect URIs only for localhost" in page


def test_agents_and_anonymous_visitors_cannot_save(app, client, agent, google_org):
    response = client.get("/admin/google")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    login(client, agent.email)
    token = csrf_token(text(client.get("/accounts")))
    assert client.get("/admin/google").status_code == 403
    response = client.post("/admin/google", data={"client_id": google_org.client_id,
                                                   "client_secret": google_org.secret, "csrf_token": token})
    assert response.status_code == 403
    assert _stored(app) is None


def test_saving_checks_the_client_at_google_and_stores_the_secret_encrypted(app, client, signed_in_admin,
                                                                              google_org, google):
    google.clear_log()
    response = save_google_app(client, google_org)
    assert response.status_code == 302, text(response)
    # the check: discovery, then a token request that only the right secret gets past (refused for the
    # made-up code, not for the client), authenticated as this client
    assert google.calls("discovery")
    [check] = google.calls("token", client_id=google_org.client_id)
    assert check.grant_type == "authorization_code" and check.error == "invalid_grant"
    page = text(client.get("/admin/google"))
    assert "Saved. Google accepted the Client ID and the Client secret." in page
    assert f'<dd id="current-client-id">{google_org.client_id}</dd>' in page
    stored = _stored(app)
    assert stored.client_id == google_org.client_id and stored.verified_at is not None
    assert app.extensions["connector"].vault.decrypt_text(stored.client_secret_enc) == google_org.secret
    assert google_org.secret not in _everything_in_the_database(app)
    assert google_org.secret.encode() not in stored.client_secret_enc


def test_the_secret_is_write_only(app, client, signed_in_admin, google_org):
    save_google_app(client, google_org)
    page = text(client.get("/admin/google"))
    assert google_org.secret not in page
    set_on = _stored(app).secret_set_at.strftime("%Y-%m-%d")
    assert re.search(rf'<dd id="secret-state">\s*set on {set_on}', page)
    secret_input = re.search(r'<input[^>]*name="client_secret"[^>]*>', page).group(0)
    assert 'value=' not in secret_input or 'value=""' in secret_input
    assert "Leave empty to keep the stored secret." in page


def test_an_empty_secret_keeps_the_stored_one(app, client, signed_in_admin, google_org, google):
    save_google_app(client, google_org)
    first = _stored(app)
    google.clear_log()
    response = save_google_app(client, google_org, secret="")
    assert response.status_code == 302, text(response)
    again = _stored(app)
    assert again.secret_set_at == first.secret_set_at  # not "set" again
    assert app.extensions["connector"].vault.decrypt_text(again.client_secret_enc) == google_org.secret
    assert google.calls("token", client_id=google_org.client_id, error="invalid_grant")  # checked with it


def test_the_first_save_needs_a_secret(app, client, signed_in_admin, google_org):
    response = save_google_app(client, google_org, secret="")
    assert response.status_code == 400
    assert any("Paste the Client secret" in e for e in _field_errors(text(response)))
    assert _stored(app) is None


def test_an_unknown_client_id_is_explained(app, client, signed_in_admin, google_org):
    response = save_google_app(client, client_id="999999999999-nosuchclient0000.apps.googleusercontent.com",
                               secret=google_org.secret)
    assert response.status_code == 400
    assert _problem(text(response)).startswith(
        "Google does not know the Client ID 999999999999-nosuchclient0000.apps.googleusercontent.com "
        "(invalid_client: \"The OAuth client was not found.\")")
    assert _stored(app) is None


def test_a_wrong_secret_is_explained_and_not_shown(app, client, signed_in_admin, google_org):
    response = save_google_app(client, google_org, secret="GOCSPX-not-the-secret")
    assert response.status_code == 400
    assert _problem(text(response)).startswith("The client secret is wrong (invalid_client)")
    assert "GOCSPX-not-the-secret" not in text(response)
    assert _stored(app) is None


@pytest.mark.parametrize("client_id, secret, field, phrase", [
    ("12345", "GOCSPX-x", "client_id", "The Client ID is the OAuth client's ID from Google Cloud console"),
    ("my-app.apps.googleusercontent.com", "GOCSPX-x", "client_id", "like 123456789012-abc123def456.apps."),
    ("123456789012-abc.apps.googleusercontent.com", "123456789012-abc.apps.googleusercontent.com",
     "client_secret", "This is a Client ID, not a secret"),
])
def test_fields_that_cannot_be_right(app, client, signed_in_admin, google, client_id, secret, field, phrase):
    google.clear_log()
    response = save_google_app(client, client_id=client_id, secret=secret)
    assert response.status_code == 400
    errors = html.unescape(" ".join(_field_errors(text(response))))
    assert phrase in errors
    assert not google.calls("token")  # nothing was sent for input that cannot be right
    assert _stored(app) is None


def test_an_unreachable_authority(make_app, admin, google_org):
    app = make_app(google={"authority": f"https://127.0.0.1:{free_port()}"})
    client = app.test_client()
    login(client, admin.email)
    message = _problem(text(save_google_app(client, google_org)))
    assert "cannot be reached (ConnectionError): check [google] authority, DNS, the proxy and the firewall" in message
    assert _stored(app) is None


def test_an_untrusted_certificate(make_app, admin, google_org, google):
    app = make_app(tls={"ca_bundle": ""}, google={"authority": google.url})
    client = app.test_client()
    login(client, admin.email)
    message = _problem(text(save_google_app(client, google_org)))
    assert "its TLS certificate could not be verified: set [tls] ca_bundle" in message


def test_an_authority_that_is_no_openid_provider(make_app, admin, google_org, google):
    app = make_app(google={"authority": google.url + "/nothing-here"})
    client = app.test_client()
    login(client, admin.email)
    message = _problem(text(save_google_app(client, google_org)))
    assert "did not answer like Google's sign-in service (HTTP 404" in message


def test_an_authority_whose_issuer_is_another(make_app, admin, google_org, google):
    """The stand-in at https://localhost:<port> says its issuer is https://127.0.0.1:<port>."""
    other_name = google.url.replace("127.0.0.1", "localhost")
    app = make_app(google={"authority": other_name})
    client = app.test_client()
    login(client, admin.email)
    message = _problem(text(save_google_app(client, google_org)))
    assert message == (f"The sign-in service at {other_name} says its issuer is {google.url}: set [google] authority "
                       f"to {google.url}.")


def test_a_failed_save_keeps_the_working_registration(app, client, signed_in_admin, google_org):
    save_google_app(client, google_org)
    response = save_google_app(client, google_org, secret="GOCSPX-wrong")
    assert response.status_code == 400
    assert app.extensions["connector"].vault.decrypt_text(_stored(app).client_secret_enc) == google_org.secret


def test_a_deleted_client_is_explained(app, client, signed_in_admin, google_org, google):
    save_google_app(client, google_org)
    del google.clients[google_org.client_id]  # what Google answers for it: "The OAuth client was not found."
    try:
        message = _problem(text(save_google_app(client, google_org)))
    finally:
        google.clients[google_org.client_id] = google_org.client
    assert "Google does not know the Client ID" in message and "check it was not deleted" in message


def test_the_config_preset_is_shown_and_can_be_replaced(make_app, admin, google_org, make_google_org, google):
    app = make_app(google={"authority": google.url, "client_id": google_org.client_id,
                           "client_secret": google_org.secret})
    client = app.test_client()
    login(client, admin.email)
    page = text(client.get("/admin/google"))
    assert f'<dd id="current-client-id">{google_org.client_id}</dd>' in page
    assert "(from the configuration file)" in page and google_org.secret not in page
    other = make_google_org()
    assert save_google_app(client, other).status_code == 302
    page = text(client.get("/admin/google"))
    assert f'<dd id="current-client-id">{other.client_id}</dd>' in page and "(from the configuration file)" not in page
