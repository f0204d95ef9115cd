"""A local stand-in for the Microsoft identity platform (v2.0) used by tests and benchmarks.

    idp = IdentityProvider(TestCA(tmp_path)).start()
    tenant = idp.add_tenant("contoso.test")
    app = idp.add_app(tenant, secret="s3cret", redirect_uris=[...])
    idp.add_user(tenant, "alice@contoso.test", password="pw")

msal talks to it with `authority=f"{idp.url}/{tenant_id}"`, `instance_discovery=False` and a
requests session that trusts the test CA. See tests/idp/server.py for the control API.

Protocol choices where Microsoft leaves room (each error carries Microsoft's AADSTS code):
- Errors before the redirect URI is trusted are an HTML page at the IdP (HTTP 400): unknown
  tenant 90002, unknown client 700016 (also a single-tenant app at another tenant's path),
  unregistered redirect URI 50011. Later errors go back to the app as
  `?error=...&error_description=AADSTSnnnnn: ...&error_uri=...&state=...`.
- PKCE S256 is required (9002325 otherwise). /common or /organizations with a single-tenant app:
  invalid_request 50194; a user outside the allowed tenants: access_denied 50020.
- Cancel on the consent page: access_denied, error_subcode=cancel, AADSTS65004.
- needs_admin_consent user without admin consent: no consent page; redirect with
  error=consent_required and AADSTS65001 (what Microsoft returns when the user cannot consent).
  `grant_admin_consent(tenant, app)` lifts it. Consent is remembered per user and app, so a
  second sign-in skips the consent page (prompt=consent forces it).
- Token endpoint: unknown code/refresh token shaped like ours 70000, garbage 9002313, replayed
  code 54005, expired code 70008, wrong redirect_uri 500112, bad PKCE verifier 501481, two
  resources 28000 (invalid_scope), unconsented scope 65001; client secrets: missing 7000218,
  wrong 7000215, expired 7000222 (all 401 invalid_client).
- Refresh tokens rotate and are single-use (`strict_rotation`, on by default): every refresh
  returns a new refresh token, and redeeming one a second time gives invalid_grant AADSTS70000,
  the way an IdP with reuse detection answers. Microsoft may keep an old refresh token valid;
  `idp.strict_rotation = False` (or POST /_test/set {"strict_rotation": false}) behaves like that.
- /introspect is not Microsoft's: it exists for Dovecot and the test SMTP server.
"""
from .model import MSA_TENANT_ID, App, Tenant, User
from .server import IdentityProvider

__all__ = ["IdentityProvider", "Tenant", "App", "User", "MSA_TENANT_ID"]
