"""HTTP routes: Microsoft's v2.0 endpoints, /introspect for the mail servers, /_test/ controls."""
from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, jsonify, request

from . import authorize, grants
from .errors import unknown_tenant
from .model import MSA_TENANT_ID
from .server import IdentityProvider, Route

_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


def discovery_document(idp: IdentityProvider, route: Route) -> dict[str, Any]:
    """What login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration returns."""
    if route.kind == "tenant":
        assert route.tenant is not None
        path, issuer_tid = route.tenant.tenant_id, route.tenant.tenant_id
    elif route.kind == "consumers":
        path = "consumers" if route.segment.lower() == "consumers" else MSA_TENANT_ID
        issuer_tid = MSA_TENANT_ID
    else:  # common / organizations: the issuer depends on the user, as at Microsoft
        path, issuer_tid = route.kind, "{tenantid}"
    base = f"{idp.url}/{path}"
    return {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                  "client_secret_basic"],
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{idp.url}/{issuer_tid}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{idp.url}/oidc/userinfo",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                             "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat",
                             "auth_time", "acr", "nonce", "preferred_username", "name", "tid",
                             "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": f"{base}/kerberos",
        "code_challenge_methods_supported": ["plain", "S256"],
        "tenant_region_scope": "EU" if route.kind == "tenant" else None,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def build_app(idp: IdentityProvider) -> Flask:
    app = Flask("test_idp")

    def correlation_id() -> str | None:
        return request.headers.get("client-request-id")

    def tenant_error(segment: str) -> Response:
        response = jsonify(unknown_tenant(segment).body(correlation_id()))
        response.status_code = 400
        return response

    @app.get("/<tenant>/v2.0/.well-known/openid-configuration")
    def openid_configuration(tenant: str) -> Response:
        route = idp.resolve(tenant)
        if route is None:
            return tenant_error(tenant)
        return jsonify(discovery_document(idp, route))

    @app.get("/<tenant>/discovery/v2.0/keys")
    @app.get("/<tenant>/discovery/keys")
    def keys(tenant: str) -> Response:
        route = idp.resolve(tenant)
        if route is None:
            return tenant_error(tenant)
        issuer = (idp.issuer(route.tenant.tenant_id) if route.kind == "tenant" and route.tenant
                  else f"{idp.url}/{{tenantid}}/v2.0")
        return jsonify({"keys": [idp.signer.jwk(issuer)]})

    @app.get("/<tenant>/oauth2/v2.0/authorize")
    def authorize_endpoint(tenant: str) -> Response:
        return authorize.start(idp, tenant, request.args)

    @app.post("/<tenant>/login")
    def login(tenant: str) -> Response:
        return authorize.sign_in(idp, tenant, request.form)

    @app.post("/<tenant>/Consent/Set")
    def consent(tenant: str) -> Response:
        return authorize.consent(idp, tenant, request.form)

    @app.get("/<tenant>/oauth2/v2.0/logout")
    def logout(tenant: str) -> Response:
        return authorize.logout(request.args)

    @app.post("/<tenant>/oauth2/v2.0/token")
    def token(tenant: str) -> Response:
        status, body = grants.handle(idp, tenant, request.form,
                                     request.headers.get("Authorization"), correlation_id())
        response = jsonify(body)
        response.status_code = status
        response.headers.update(_NO_STORE)
        return response

    @app.route("/introspect", methods=["GET", "POST"])
    def introspect() -> Response:
        """Dovecot: introspection_url = .../introspect?user=%u (post, get or auth mode)."""
        token = request.form.get("token") or request.args.get("token", "")
        auth = request.headers.get("Authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        user = request.args.get("user") or request.form.get("user") or None
        scope = request.args.get("scope") or request.form.get("scope") or None
        return jsonify(idp.introspect(token, user=user, scope=scope))

    @app.post("/introspect/grant")
    def introspect_grant() -> Response:
        """Dovecot's oauth2 passdb in password-grant mode posts `grant_type=password&username=<login>
        &password=<bearer token>`: the one way Dovecot 2.3 sends the login name along with the token
        (it does not expand %u in introspection_url). Answers like /introspect?user=<login>, as an
        OAuth token response that Dovecot reads: 400 invalid_grant when the token may not open it."""
        login = request.form.get("username", "")
        answer = idp.introspect(request.form.get("password", ""), user=login) if login else {"active": False}
        if request.form.get("grant_type") != "password" or not answer.get("active"):
            response = jsonify({"error": "invalid_grant",
                                "error_description": "The token may not open this mailbox."})
            response.status_code = 400
            return response
        return jsonify({"access_token": request.form["password"], "token_type": "Bearer",
                        "expires_in": max(0, int(answer["exp"]) - int(time.time())),
                        "username": answer["username"], "active": "true"})

    @app.route("/oidc/userinfo", methods=["GET", "POST"])
    def userinfo() -> Response:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        claims = _active_claims(idp, token)
        if claims is None or claims.get("idtyp") != "user":
            return Response("", status=401,
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return jsonify({"sub": claims["sub"], "name": claims["name"],
                        "family_name": claims["family_name"], "given_name": claims["given_name"],
                        "email": claims["upn"]})

    _control_routes(app, idp)
    return app


def _active_claims(idp: IdentityProvider, token: str) -> dict[str, Any] | None:
    try:
        claims = idp.signer.verify(token)
    except Exception:
        return None
    with idp.lock:
        issued = idp.access_tokens.get(claims.get("uti", ""))
        return claims if issued is not None and issued.active else None


def _control_routes(app: Flask, idp: IdentityProvider) -> None:
    """/_test/: drive the directory from another process (benchmarks run the IdP out of process)."""

    def body() -> dict[str, Any]:
        return request.get_json(force=True, silent=True) or {}

    @app.errorhandler(KeyError)
    @app.errorhandler(ValueError)
    def bad_control(err: Exception) -> tuple[Response, int]:
        return jsonify({"error": str(err)}), 400

    @app.post("/_test/add_tenant")
    def add_tenant() -> Response:
        data = body()
        tenant = idp.add_tenant(data["domain"], data.get("tenant_id"),
                                personal=bool(data.get("personal")))
        return jsonify({"tenant_id": tenant.tenant_id, "domain": data["domain"]})

    @app.post("/_test/add_app")
    def add_app() -> Response:
        data = body()
        new = idp.add_app(data["tenant"], client_id=data.get("client_id"),
                          secret=data.get("secret", "s3cret"),
                          redirect_uris=data.get("redirect_uris"),
                          audience=data.get("audience", "single"),
                          secret_expired=bool(data.get("secret_expired")),
                          name=data.get("name", "Helpdesk connector"),
                          permissions=data.get("permissions"))
        return jsonify({"client_id": new.client_id, "tenant_id": new.tenant.tenant_id})

    @app.post("/_test/add_user")
    def add_user() -> Response:
        data = body()
        user = idp.add_user(data["tenant"], data["email"], password=data.get("password", "pw"),
                            name=data.get("name"),
                            needs_admin_consent=bool(data.get("needs_admin_consent")))
        return jsonify({"email": user.email, "oid": user.oid, "tenant_id": user.tenant.tenant_id})

    @app.post("/_test/grant_mailbox_access")
    def grant_mailbox_access() -> Response:
        data = body()
        idp.grant_mailbox_access(data["email"], data["mailbox"])
        return jsonify({"ok": True})

    @app.post("/_test/remove_mailbox_access")
    def remove_mailbox_access() -> Response:
        data = body()
        idp.remove_mailbox_access(data["email"], data["mailbox"])
        return jsonify({"ok": True})

    @app.post("/_test/grant_send_as")
    def grant_send_as() -> Response:
        data = body()
        idp.grant_send_as(data["email"], data["mailbox"])
        return jsonify({"ok": True})

    @app.post("/_test/grant_admin_consent")
    def grant_admin_consent() -> Response:
        data = body()
        idp.grant_admin_consent(data["tenant"], data["client_id"])
        return jsonify({"ok": True})

    @app.post("/_test/revoke")
    def revoke() -> Response:
        data = body()
        idp.revoke(data["email"], code=int(data.get("code", 50173)))
        return jsonify({"ok": True})

    @app.post("/_test/expire_access_tokens")
    def expire_access_tokens() -> Response:
        idp.expire_access_tokens(body().get("email"))
        return jsonify({"ok": True})

    @app.post("/_test/set")
    def settings() -> Response:
        data = body()
        with idp.lock:
            if "access_token_lifetime" in data:
                idp.access_token_lifetime = int(data["access_token_lifetime"])
            if "strict_rotation" in data:
                idp.strict_rotation = bool(data["strict_rotation"])
            if "code_lifetime" in data:
                idp.code_lifetime = int(data["code_lifetime"])
        return jsonify({"access_token_lifetime": idp.access_token_lifetime,
                        "strict_rotation": idp.strict_rotation,
                        "code_lifetime": idp.code_lifetime})

    @app.get("/_test/stats")
    def stats() -> Response:
        with idp.lock:
            calls = [{"who": who, "grant_type": grant, "count": n}
                     for (who, grant), n in sorted(idp.token_calls.items())]
            return jsonify({"token_calls": calls, "token_calls_total": idp.token_calls_total})

    @app.post("/_test/reset_stats")
    def reset_stats() -> Response:
        idp.reset_stats()
        return jsonify({"ok": True})
