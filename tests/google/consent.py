"""The pages after the request is accepted: account chooser, sign-in, the policy checks, the
unverified-app warning, the consent screen, and the code sent back to the app.

Google's documented decisions, each at its step:
- An Internal app serves only its own Workspace organization ("Error 403: org_internal").
- A Workspace admin who blocked the app: "Error 400: admin_policy_enforced".
- An External app in Testing serves only its test users ("Error 403: access_denied").
- An unverified External app asking for sensitive or restricted scopes shows "Google hasn't
  verified this app" first ("Back to safety" returns access_denied to the app).
- Consent is remembered per account and client: a repeated request for granted scopes skips
  the consent screen unless prompt=consent, and then Google returns no new refresh token even
  with access_type=offline (web-server guide, "Refreshing an access token (offline access)":
  the refresh token comes "the first time that your application exchanges an authorization
  code"; prompt=consent forces a new one).
- Granular consent: the user may leave a non-sign-in scope unticked; the app gets fewer scopes
  ("Handling granular permissions" in the same guide) and must check `scope`.
- Cancel: `error=access_denied` back to the app.
"""
from __future__ import annotations

from typing import Any

from flask import Response

from . import pages, scopes as scope_rules
from .authorize import EXPIRED, Pending, forget, page_error, pending_for, send_back
from .errors import (PageError, admin_policy_page, not_a_tester_page, org_internal_page)
from .model import User
from .server import GoogleProvider

SESSION_COOKIE = "SID"
PATHS = {"chooser": "/signin/accountchooser", "signin": "/signin/identifier",
         "warning": "/signin/oauth/warning", "consent": "/signin/oauth/consent"}


def _html(html: str) -> Response:
    return Response(html, mimetype="text/html")


def _sign_in_page(pending: Pending, identifier: str = "", error: str | None = None) -> Response:
    return _html(pages.sign_in(PATHS["signin"], pending.rid, pending.client.name,
                               identifier, error))


def first_page(provider: GoogleProvider, pending: Pending, sid: str | None) -> Response:
    """Chooser when the browser has accounts (filtered by `hd`), else the sign-in form; a
    `login_hint` naming a signed-in account skips the chooser unless prompt=select_account."""
    accounts = provider.session_accounts(sid)
    if pending.hd:
        accounts = [a for a in accounts if a.hd == pending.hd.lower()]
    hinted = provider.find_user(pending.login_hint) if pending.login_hint else None
    if hinted is not None and hinted in accounts and "select_account" not in pending.prompt:
        return proceed(provider, pending, hinted)
    if accounts:
        return _html(pages.chooser(PATHS["chooser"], pending.rid, pending.client.name,
                                   [a.email for a in accounts]))
    return _sign_in_page(pending, hinted.email if hinted else pending.login_hint)


def choose(provider: GoogleProvider, form: Any, sid: str | None) -> Response:
    pending = pending_for(provider, form.get("rid", ""))
    if pending is None:
        return page_error(EXPIRED, {})
    chosen = provider.find_user(form.get("account", ""))
    if chosen is not None and chosen in provider.session_accounts(sid):
        return proceed(provider, pending, chosen)
    return _sign_in_page(pending, chosen.email if chosen else "")


def sign_in(provider: GoogleProvider, form: Any, sid: str | None) -> Response:
    pending = pending_for(provider, form.get("rid", ""))
    if pending is None:
        return page_error(EXPIRED, {})
    identifier = form.get("identifier", "").strip()
    user = provider.find_user(identifier)
    if user is None:
        return _sign_in_page(pending, identifier, "Couldn't find your Google Account")
    if form.get("Passwd", "") != user.password:
        return _sign_in_page(pending, identifier, "Wrong password. Try again or click Forgot "
                             "password to reset it.")
    new_sid = provider.sign_in_session(sid, user)
    response = proceed(provider, pending, user)
    response.set_cookie(SESSION_COOKIE, new_sid, secure=True, httponly=True, samesite="Lax")
    return response


def _policy_error(provider: GoogleProvider, pending: Pending, user: User) -> PageError | None:
    client = pending.client
    if client.user_type == "internal" and user.hd != client.domain:
        return org_internal_page(client.name)
    if provider.is_restricted(user, client):
        return admin_policy_page(user.hd or "")
    if client.testing and user.email.lower() not in client.test_users:
        return not_a_tester_page(client.name, client.support_email)
    return None


def _needs_consent(provider: GoogleProvider, pending: Pending, user: User) -> bool:
    granted = provider.store.consent(user, pending.client)
    return ("consent" in pending.prompt or granted is None
            or not set(pending.scopes) <= granted.scopes
            or (pending.access_type == "offline" and not granted.offline))


def proceed(provider: GoogleProvider, pending: Pending, user: User) -> Response:
    pending.user = user
    err = _policy_error(provider, pending, user)
    if err is not None:
        forget(provider, pending)
        return page_error(err, pending.details)
    if not _needs_consent(provider, pending, user):
        return issue_code(provider, pending, pending.scopes, consent_shown=False)
    client = pending.client
    if (client.external and not client.verified and not pending.warned
            and scope_rules.needs_verification(pending.scopes)):
        return _html(pages.warning(PATHS["warning"], pending.rid, client.name,
                                   client.support_email, client.testing))
    return _consent_page(pending, user)


def _consent_page(pending: Pending, user: User) -> Response:
    return _html(pages.consent(PATHS["consent"], pending.rid, pending.client.name, user.email,
                               pending.scopes))


def silent(provider: GoogleProvider, pending: Pending, sid: str | None) -> Response:
    """prompt=none: a code without any page, or login_required / interaction_required /
    consent_required / access_denied back to the app (OpenID Connect Core 3.1.2.6)."""
    accounts = provider.session_accounts(sid)
    hinted = provider.find_user(pending.login_hint) if pending.login_hint else None
    if hinted is not None:
        user = hinted if hinted in accounts else None
    else:
        user = accounts[0] if len(accounts) == 1 else None
    if user is None:
        error = "interaction_required" if len(accounts) > 1 and hinted is None \
            else "login_required"
        return send_back(pending, provider.issuer, {"error": error})
    pending.user = user
    if _policy_error(provider, pending, user) is not None:
        return send_back(pending, provider.issuer, {"error": "access_denied"})
    if _needs_consent(provider, pending, user):
        return send_back(pending, provider.issuer, {"error": "consent_required"})
    return issue_code(provider, pending, pending.scopes, consent_shown=False)


def _decided(provider: GoogleProvider, form: Any) -> Pending | None:
    pending = pending_for(provider, form.get("rid", ""))
    return pending if pending is not None and pending.user is not None else None


def warning(provider: GoogleProvider, form: Any) -> Response:
    pending = _decided(provider, form)
    if pending is None:
        return page_error(EXPIRED, {})
    if form.get("decision") != "continue":
        forget(provider, pending)
        return send_back(pending, provider.issuer, {"error": "access_denied"})
    pending.warned = True
    assert pending.user is not None
    return _consent_page(pending, pending.user)


def consent(provider: GoogleProvider, form: Any) -> Response:
    pending = _decided(provider, form)
    if pending is None:
        return page_error(EXPIRED, {})
    if form.get("decision") != "continue":
        forget(provider, pending)
        return send_back(pending, provider.issuer, {"error": "access_denied"})
    ticked = set(form.getlist("scope"))
    granted = [s for s in pending.scopes if s in scope_rules.SIGN_IN or s in ticked]
    assert pending.user is not None
    provider.store.record_consent(pending.user, pending.client, granted,
                                  offline=pending.access_type == "offline")
    return issue_code(provider, pending, granted, consent_shown=True)


def issue_code(provider: GoogleProvider, pending: Pending, granted: list[str],
               consent_shown: bool) -> Response:
    user = pending.user
    assert user is not None
    scopes = set(granted)
    if pending.include_granted_scopes:
        earlier = provider.store.consent(user, pending.client)
        scopes |= earlier.scopes if earlier else set()
    code = provider.store.new_code(
        client=pending.client, user=user, scopes=scope_rules.ordered(scopes),
        redirect_uri=pending.redirect_uri, nonce=pending.nonce,
        code_challenge=pending.code_challenge, code_challenge_method=pending.code_challenge_method,
        access_type=pending.access_type,
        issue_refresh=pending.access_type == "offline" and consent_shown)
    forget(provider, pending)
    params = {"code": code.code, "scope": " ".join(code.scopes), "authuser": "0"}
    if user.hd:
        params["hd"] = user.hd
    params["prompt"] = "consent" if consent_shown else "none"
    return send_back(pending, provider.issuer, params)
