"""HTTP routes of the stand-in, at Google's paths, and the request log.

| Google                                                        | here                    |
| https://accounts.google.com/.well-known/openid-configuration  | /.well-known/openid-... |
| https://accounts.google.com/o/oauth2/v2/auth                  | /o/oauth2/v2/auth       |
| https://oauth2.googleapis.com/token                           | /token                  |
| https://oauth2.googleapis.com/revoke                          | /revoke                 |
| https://oauth2.googleapis.com/tokeninfo                       | /tokeninfo              |
| https://openidconnect.googleapis.com/v1/userinfo              | /v1/userinfo            |
| https://www.googleapis.com/oauth2/v3/certs                    | /oauth2/v3/certs        |
"""
from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, jsonify, request

from . import authorize, consent, grants, resources
from .errors import TokenError
from .server import GoogleProvider, RequestRecord

_NO_STORE = {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
             "Pragma": "no-cache", "Expires": "Mon, 01 Jan 1990 00:00:00 GMT"}


def discovery_document(provider: GoogleProvider) -> dict[str, Any]:
    """Google's fields (OpenID Connect reference, "Discovery Document"), each value what this
    stand-in really serves: the code flow only, so response types and modes are narrower than
    Google's list; endpoints all on the issuer's host."""
    base = provider.url
    return {
        "issuer": provider.issuer,
        "authorization_endpoint": f"{base}/o/oauth2/v2/auth",
        "token_endpoint": f"{base}/token",
        "userinfo_endpoint": f"{base}/v1/userinfo",
        "revocation_endpoint": f"{base}/revoke",
        "jwks_uri": f"{base}/oauth2/v3/certs",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "authorization_response_iss_parameter_supported": True,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "email", "email_verified", "exp", "family_name",
                             "given_name", "iat", "iss", "name", "picture", "sub"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
    }


def _json(body: dict[str, Any], status: int = 200, no_store: bool = True) -> Response:
    response = jsonify(body)
    response.status_code = status
    if no_store:
        response.headers.update(_NO_STORE)
    return response


def _error(err: TokenError) -> Response:
    g.error = err.error
    return _json(err.body(), err.status)


def build_app(provider: GoogleProvider) -> Flask:
    app = Flask("google_standin")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep Google's key order

    @app.before_request
    def _start() -> None:
        g.endpoint, g.client_id, g.grant_type, g.auth_method, g.error = "", None, None, None, None

    @app.after_request
    def _log(response: Response) -> Response:
        if response.mimetype == "text/html" and response.status_code >= 400:
            g.error = g.error or _page_code(response)
        provider.record(RequestRecord(time.time(), request.method, request.path,
                                      g.endpoint or "other", response.status_code, g.client_id,
                                      g.grant_type, g.auth_method, g.error))
        return response

    @app.get("/.well-known/openid-configuration")
    def openid_configuration() -> Response:
        g.endpoint = "discovery"
        return _json(discovery_document(provider), no_store=False)

    @app.get("/oauth2/v3/certs")
    def certs() -> Response:
        g.endpoint = "jwks"
        response = _json(provider.signer.jwks(), no_store=False)
        response.headers["Cache-Control"] = "public, max-age=21600, must-revalidate, no-transform"
        return response

    @app.get("/o/oauth2/v2/auth")
    def authorize_endpoint() -> Response:
        g.endpoint, g.client_id = "authorize", request.args.get("client_id")
        return authorize.start(provider, request.args, request.cookies.get(consent.SESSION_COOKIE))

    @app.post(consent.PATHS["chooser"])
    def chooser() -> Response:
        g.endpoint = "chooser"
        return consent.choose(provider, request.form, request.cookies.get(consent.SESSION_COOKIE))

    @app.post(consent.PATHS["signin"])
    def signin() -> Response:
        g.endpoint = "signin"
        return consent.sign_in(provider, request.form,
                               request.cookies.get(consent.SESSION_COOKIE))

    @app.post(consent.PATHS["warning"])
    def warning() -> Response:
        g.endpoint = "warning"
        return consent.warning(provider, request.form)

    @app.post(consent.PATHS["consent"])
    def consent_endpoint() -> Response:
        g.endpoint = "consent"
        return consent.consent(provider, request.form)

    @app.post("/token")
    def token() -> Response:
        g.endpoint = "token"
        info = grants.CallInfo()
        status, body = grants.handle(provider, request.form,
                                     request.headers.get("Authorization"), info)
        g.client_id, g.grant_type, g.auth_method, g.error = (info.client_id, info.grant_type,
                                                             info.auth_method, info.error)
        return _json(body, status)

    @app.route("/revoke", methods=["GET", "POST"])
    def revoke() -> Response:
        g.endpoint = "revoke"
        try:
            access = resources.revoke(provider, request.values.get("token", ""))
        except TokenError as err:
            return _error(err)
        g.client_id = access.client.client_id if access else None
        return _json({})

    @app.route("/tokeninfo", methods=["GET", "POST"])
    def tokeninfo() -> Response:
        g.endpoint = "tokeninfo"
        try:
            info = resources.tokeninfo(provider, request.values.get("access_token"),
                                       request.values.get("id_token"))
        except TokenError as err:
            return _error(err)
        g.client_id = info.get("aud")
        return _json(info)

    @app.route("/v1/userinfo", methods=["GET", "POST"])
    def userinfo() -> Response:
        g.endpoint = "userinfo"
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") \
            else request.values.get("access_token", "")
        claims = resources.userinfo(provider, token)
        if claims is None:
            g.error = "invalid_token"
            response = _json({"error": "invalid_request",
                              "error_description": "Invalid Credentials"}, 401)
            response.headers["WWW-Authenticate"] = (
                'Bearer realm="https://accounts.google.com/", error="invalid_token"')
            return response
        return _json(claims)

    return app


def _page_code(response: Response) -> str | None:
    """The code of Google's error page ("Error 400: redirect_uri_mismatch")."""
    text = response.get_data(as_text=True)
    marker = 'id="errorCode">Error '
    at = text.find(marker)
    if at < 0:
        return None
    code = text[at + len(marker):].split("<", 1)[0]
    return code.split(": ", 1)[-1]
