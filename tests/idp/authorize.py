"""The browser leg: /authorize, the sign-in form, the consent page, logout.

Errors found before the redirect URI is trusted are shown at the IdP (as Microsoft does for
AADSTS700016/50011); later ones go back to the app as `error`, `error_description`
(AADSTSnnnnn: ... plus trace lines) and `state`.
"""
from __future__ import annotations

import secrets
import time
import uuid
from typing import Mapping
from urllib.parse import urlencode

from flask import Response, redirect

from . import pages, scopes as scope_rules
from .errors import AADError, missing_parameter, unknown_client, unknown_tenant
from .model import App, User
from .server import CodeGrant, IdentityProvider, PendingAuth, Route
from .tokens import client_info

PENDING_LIFETIME = 3600
RESPONSE_MODES = ("query", "fragment", "form_post")


def app_route_error(app: App, route: Route) -> AADError | None:
    """Is this app usable through this authority path (before knowing the user)?"""
    label = f"'{app.client_id}'({app.name})"
    if app.audience == "single":
        if route.kind in ("common", "organizations"):
            return AADError(
                50194, "invalid_request",
                f"Application {label} is not configured as a multi-tenant application. Usage of "
                "the /common endpoint is not supported for such applications created after "
                "'10/15/2018'. Use a tenant-specific endpoint or configure the application to be "
                "multi-tenant.")
        if route.kind == "tenant" and route.tenant is not app.tenant:
            return unknown_client(app.client_id, route.tenant.tenant_id if route.tenant else "")
    if app.audience in ("single", "multi") and route.kind == "consumers":
        return AADError(
            9002346, "invalid_request",
            f"Application {label} is configured for use by Azure Active Directory users only. "
            "Please do not use the /consumers endpoint to serve this request.")
    if app.audience == "personal" and route.kind in ("tenant", "organizations"):
        return AADError(
            9002331, "invalid_request",
            f"Application {label} is configured for use by Microsoft Account users only. Please "
            "use the /consumers endpoint to serve this request.")
    return None


def user_route_error(app: App, route: Route, user: User) -> AADError | None:
    """May this user sign in to this app through this path? (AADSTS50020 otherwise.)"""
    personal = user.tenant.personal
    allowed = {
        "single": user.tenant is app.tenant,
        "multi": not personal,
        "personal": personal,
        "multi_personal": True,
    }[app.audience]
    if route.kind == "tenant":
        allowed = allowed and user.tenant is route.tenant
    elif route.kind == "organizations":
        allowed = allowed and not personal
    elif route.kind == "consumers":
        allowed = allowed and personal
    if allowed:
        return None
    where = route.tenant.domain if route.tenant else app.tenant.domain
    provider = "live.com" if personal else f"https://sts.windows.net/{user.tenant.tenant_id}/"
    return AADError(
        50020, "access_denied",
        f"User account '{user.email}' from identity provider '{provider}' does not exist in "
        f"tenant '{where}' and cannot access the application '{app.client_id}'({app.name}) in "
        "that tenant. The account needs to be added as an external user in the tenant first. "
        "Sign out and sign in again with a different Azure Active Directory user account.")


def _page_error(err: AADError) -> Response:
    return Response(pages.error(err.code, err.message, str(uuid.uuid4())), status=400,
                    mimetype="text/html")


def _send_back(redirect_uri: str, response_mode: str, params: dict[str, str]) -> Response:
    """Deliver the authorization response to the app as its response_mode asks."""
    if response_mode == "form_post":
        return Response(pages.form_post(redirect_uri, params), mimetype="text/html")
    separator = "#" if response_mode == "fragment" else ("&" if "?" in redirect_uri else "?")
    return redirect(redirect_uri + separator + urlencode(params), code=302)


def _error_back(redirect_uri: str, response_mode: str, state: str | None,
                err: AADError) -> Response:
    params = {"error": err.error}
    if err.subcode:
        params["error_subcode"] = err.subcode
    params["error_description"] = err.description()
    params["error_uri"] = err.uri
    if state is not None:
        params["state"] = state
    return _send_back(redirect_uri, response_mode, params)


def start(idp: IdentityProvider, segment: str, args: Mapping[str, str]) -> Response:
    """GET /{tenant}/oauth2/v2.0/authorize: validate, then show the sign-in form."""
    route = idp.resolve(segment)
    if route is None:
        return _page_error(unknown_tenant(segment))
    client_id = args.get("client_id", "")
    if not client_id:
        return _page_error(missing_parameter("client_id"))
    with idp.lock:
        app = idp.apps.get(client_id)
    if app is None:
        return _page_error(unknown_client(client_id, route.tenant.tenant_id if route.tenant
                                          else segment))
    route_err = app_route_error(app, route)
    if route_err is not None and route_err.code == 700016:
        return _page_error(route_err)
    redirect_uri = args.get("redirect_uri") or (app.redirect_uris[0] if app.redirect_uris else "")
    if not redirect_uri:
        return _page_error(AADError(500113, "invalid_request",
                                    "No reply address is registered for the application."))
    if redirect_uri not in app.redirect_uris:
        return _page_error(AADError(
            50011, "invalid_request",
            f"The redirect URI '{redirect_uri}' specified in the request does not match the "
            f"redirect URIs configured for the application '{app.client_id}'. Make sure the "
            "redirect URI sent in the request matches one added to your application in the Azure "
            "portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how "
            "to fix this."))
    response_mode = args.get("response_mode") or "query"
    if response_mode not in RESPONSE_MODES:
        response_mode = "query"
    state = args.get("state")
    try:
        requested = _validate(app, args)
        if route_err is not None:
            raise route_err
        prompt = args.get("prompt", "")
        if prompt == "none":
            raise AADError(50058, "login_required",
                           "A silent sign-in request was sent but no user is signed in.")
    except AADError as err:
        return _error_back(redirect_uri, response_mode, state, err)
    max_age = args.get("max_age")
    pending = PendingAuth(
        rid=secrets.token_urlsafe(24), route=route, app=app, redirect_uri=redirect_uri,
        response_mode=response_mode, state=state, nonce=args.get("nonce"), scopes=requested,
        code_challenge=args["code_challenge"], want_client_info=args.get("client_info") == "1",
        prompt=prompt, login_hint=args.get("login_hint", ""),
        max_age=int(max_age) if max_age and max_age.isdigit() else None)
    with idp.lock:
        now = time.time()
        for rid in [r for r, p in idp.pending.items() if now - p.created > PENDING_LIFETIME]:
            del idp.pending[rid]
        idp.pending[pending.rid] = pending
    return _sign_in_page(segment, pending)


def _validate(app: App, args: Mapping[str, str]) -> list[str]:
    """response_type, scope and PKCE checks; returns the requested scopes (.default expanded)."""
    response_type = args.get("response_type", "")
    if not response_type:
        raise missing_parameter("response_type")
    if response_type.split() != ["code"]:
        raise AADError(700054, "unsupported_response_type",
                       f"response_type '{response_type}' is not enabled for the application.")
    if not args.get("scope", "").strip():
        raise missing_parameter("scope")
    requested = scope_rules.parse(args["scope"], app.permissions).all
    if not args.get("code_challenge"):
        raise AADError(9002325, "invalid_request",
                       "Proof Key for Code Exchange is required for cross-origin authorization "
                       "code redemption.")
    if args.get("code_challenge_method", "plain") != "S256":
        raise AADError(9002325, "invalid_request",
                       "Proof Key for Code Exchange is required with code_challenge_method=S256.")
    return requested


def _sign_in_page(segment: str, pending: PendingAuth, error: str | None = None,
                  login: str | None = None) -> Response:
    html = pages.sign_in(f"/{segment}/login", pending.rid, pending.app.name,
                         login if login is not None else pending.login_hint, error)
    return Response(html, mimetype="text/html")


def _pending(idp: IdentityProvider, rid: str) -> PendingAuth | None:
    with idp.lock:
        pending = idp.pending.get(rid)
    if pending is None or time.time() - pending.created > PENDING_LIFETIME:
        return None
    return pending


_EXPIRED = AADError(50058, "invalid_request",
                    "The sign-in request was not found or has expired. Go back to the application "
                    "and sign in again.")


def sign_in(idp: IdentityProvider, segment: str, form: Mapping[str, str]) -> Response:
    """POST /{tenant}/login: check the password, then consent or straight back with a code."""
    pending = _pending(idp, form.get("rid", ""))
    if pending is None:
        return _page_error(_EXPIRED)
    login = form.get("login", "").strip()
    with idp.lock:
        user = idp.users.get(login.lower())
    if user is None:
        where = pending.route.tenant.domain if pending.route.tenant else "common"
        return _sign_in_page(segment, pending, login=login, error=(
            "This username may be incorrect. Make sure you typed it correctly. (AADSTS50034: "
            f"The user account {login} does not exist in the {where} directory.)"))
    if not secrets.compare_digest(form.get("passwd", "").encode(), user.password.encode()):
        return _sign_in_page(segment, pending, login=login, error=(
            "Your account or password is incorrect. (AADSTS50126: Error validating credentials "
            "due to invalid username or password.)"))
    back = (pending.redirect_uri, pending.response_mode, pending.state)
    err = user_route_error(pending.app, pending.route, user)
    if err is not None:
        _forget(idp, pending)
        return _error_back(*back, err)
    pending.user = user
    with idp.lock:
        asked = {scope_rules.key(s) for s in pending.scopes}
        missing = asked - idp.granted(user, pending.app).keys()
    if user.needs_admin_consent and (missing or pending.prompt == "consent"):
        # Microsoft: the tenant does not let users consent; the app gets consent_required.
        _forget(idp, pending)
        return _error_back(*back, AADError(
            65001, "consent_required",
            f"The user or administrator has not consented to use the application with ID "
            f"'{pending.app.client_id}' named '{pending.app.name}'. Send an interactive "
            "authorization request for this user and resource."))
    if not missing and pending.prompt != "consent":
        return _issue_code(idp, pending)
    html = pages.consent(f"/{segment}/Consent/Set", pending.rid, pending.app.name,
                         f"{pending.app.tenant.domain} (unverified)", user.email,
                         scope_rules.consent_lines(pending.scopes))
    return Response(html, mimetype="text/html")


def consent(idp: IdentityProvider, segment: str, form: Mapping[str, str]) -> Response:
    """POST /{tenant}/Consent/Set: Accept records consent and returns a code; Cancel declines."""
    pending = _pending(idp, form.get("rid", ""))
    if pending is None or pending.user is None:
        return _page_error(_EXPIRED)
    if form.get("decision") != "accept":
        _forget(idp, pending)
        return _error_back(pending.redirect_uri, pending.response_mode, pending.state, AADError(
            65004, "access_denied", "User declined to consent to access the app.",
            subcode="cancel"))
    with idp.lock:
        idp.consents.setdefault((pending.user.oid, pending.app.client_id), {}).update(
            (scope_rules.key(s), s) for s in pending.scopes)
    return _issue_code(idp, pending)


def _forget(idp: IdentityProvider, pending: PendingAuth) -> None:
    with idp.lock:
        idp.pending.pop(pending.rid, None)


def _issue_code(idp: IdentityProvider, pending: PendingAuth) -> Response:
    assert pending.user is not None
    code = idp.new_code()
    now = time.time()
    grant = CodeGrant(code, pending.app, pending.user, pending.scopes, pending.redirect_uri,
                      pending.nonce, pending.code_challenge, now,
                      auth_time=int(now) if pending.max_age is not None else None)
    with idp.lock:
        for old in [c for c, g in idp.codes.items() if now - g.issued > idp.code_lifetime * 2]:
            del idp.codes[old]
        idp.codes[code] = grant
        idp.pending.pop(pending.rid, None)
    params = {"code": code}
    if pending.want_client_info:
        params["client_info"] = client_info(pending.user)
    if pending.state is not None:
        params["state"] = pending.state
    params["session_state"] = str(uuid.uuid4())
    return _send_back(pending.redirect_uri, pending.response_mode, params)


def logout(args: Mapping[str, str]) -> Response:
    """GET /{tenant}/oauth2/v2.0/logout: back to post_logout_redirect_uri, or a signed-out page."""
    target = args.get("post_logout_redirect_uri")
    if target:
        return redirect(target, code=302)
    return Response(pages.signed_out(), mimetype="text/html")
