"""A local stand-in for Google's OpenID provider (Sign in with Google + OAuth 2.0 for web
server apps), for the Google provider's tests. It follows Google's published behaviour, not
our client's habits; each module cites the Google document it follows.

    with GoogleProvider(TestCA(tmp_path)) as google:          # HTTPS on a free port
        client = google.add_client("id.apps.googleusercontent.com", "GOCSPX-secret",
                                   ["http://localhost/auth/google/callback"],
                                   user_type="internal", domain="example.com")
        google.add_user("alice@example.com", "pw", hd="example.com")
        # authlib: OAuth().register("google", client_id=..., client_secret=...,
        #   server_metadata_url=f"{google.url}/.well-known/openid-configuration",
        #   client_kwargs={"scope": "openid email https://mail.google.com/",
        #                  "code_challenge_method": "S256",
        #                  "verify": str(ca.ca_path), "trust_env": False})
        url = complete_authorization(authorize_url, "alice@example.com", "pw",
                                     ca_path=ca.ca_path)       # -> the app's callback URL

The app's `[google] authority` is `google.url` (the issuer); everything else comes from the
discovery document. Control API (GoogleProvider, see directory.py and server.py):
- add_client(client_id=None, secret=None, redirect_uris=(), user_type="internal"|"external",
  publishing_status="production"|"testing", domain=..., name=..., verified=False,
  test_users=()), add_test_user(client_id, email)
- add_user(email, password="pw", hd=None, name=None, email_verified=True)
- revoke(email, client_id=None)            the user removes the app's access
- change_password(email, new_password=None) Gmail-scope tokens die, sessions end
- age_refresh_tokens(days, email=None, client_id=None)   7 days: Testing apps; 183: disuse
- expire_access_tokens(email=None), rotate_signing_key()
- restrict_app(domain, client_id), unrestrict_app(domain, client_id)
- requests / calls(endpoint, **fields) / clear_log()   the request log (no secrets in it)
- clients, users, store (codes, access, refresh, consents) for direct inspection

Where Google leaves no published rule, the choice is documented where it is made (for
example the code lifetime, 600 s, and a revocation ending the user's whole grant to the client).
Not served: implicit and hybrid flows, device flow, form_post, service accounts.
"""
from .driver import AuthorizationError, AuthorizationResult, authorize, browser, \
    complete_authorization
from .model import Client, User
from .server import GoogleProvider, RequestRecord

__all__ = ["GoogleProvider", "Client", "User", "RequestRecord", "AuthorizationError",
           "AuthorizationResult", "authorize", "browser", "complete_authorization"]
