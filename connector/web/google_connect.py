"""Connecting a Gmail or Google Workspace mailbox: "Connect Google", Reconnect, and Google's callback.

The authorization-code flow runs through authlib's Flask client, registered per request with the
client in use (the admin page can change it at any time) and Google's discovery document: PKCE
(S256), state and nonce; `access_type=offline` and `prompt=consent`, so Google returns a refresh token
every time; the ID token's signature (JWKS), issuer, audience, expiry and nonce are verified.

Who may do what: every signed-in user may start a connect (it can only concern the Google Account
they sign in with); the mailbox's owner and admins reconnect (accounts.reconnect sends Google
mailboxes here). A connect starts with a POST carrying the CSRF token. authlib keeps the flow's data
(PKCE verifier, nonce) in the session, which is a signed but readable cookie: it is stored there
encrypted with the vault, next to who started the flow, and only one Google flow is kept at a time.
"""
from __future__ import annotations

import json
import logging

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import (Blueprint, Flask, current_app, flash, redirect, render_template, request, session as cookie,
                   url_for)
from flask_login import current_user, login_required
from joserfc.errors import JoseError

from .. import accounts, google_accounts, google_registration
from ..crypto import DecryptionError
from ..identity.google import GoogleIdentity
from ..identity.google_errors import explain_google
from ..identity.microsoft import IdentityError
from ..models import Account
from .context import db, runtime

log = logging.getLogger(__name__)
bp = Blueprint("google", __name__)

PROVIDER = "google"  # Account.provider of the mailboxes connected here
CLIENT_NAME = "google"
FLOW_KEY = "google_flow"
SEALED_PREFIX = "google_sealed:"
STATE_MISMATCH = ("This sign-in answer does not belong to a sign-in started here (the state does not match): it was "
                  "used already, or it was forged. Start again with \"Connect Google\".")
OTHER_USER = ("This sign-in was started by another user of this browser, so it was not used: click \"Connect "
              "Google\" again.")
SECRET_UNREADABLE = ("The stored Google client secret cannot be decrypted with the configured encryption key: "
                     "restore the old key (CONNECTOR_ENCRYPTION_KEY or encryption.key in the data folder), or an admin "
                     "can save the client secret again on the Google app page.")
NOT_VERIFIED = ("Google's answer could not be verified (the ID token's signature, issuer, audience, expiry or nonce "
                "is wrong), so nothing was connected: click \"Connect Google\" again; if it persists, check [google] "
                "authority and the Client ID.")
OTHER_ISSUER = ("This sign-in answer names another sign-in service than the one it was sent to (iss), so it was "
                "not used: click \"Connect Google\" again.")


class _SealedSessionCache:
    """authlib's store for a flow's data, kept in the session cookie encrypted with the vault."""

    def __init__(self, vault) -> None:
        self.vault = vault

    def get(self, key: str) -> str | None:
        sealed = cookie.get(SEALED_PREFIX + key)
        if not sealed:
            return None
        try:
            return self.vault.decrypt_text(sealed.encode())
        except DecryptionError:
            return None

    def set(self, key: str, value: str, expires_in: int | None = None) -> None:
        cookie[SEALED_PREFIX + key] = self.vault.encrypt(value).decode()

    def delete(self, key: str) -> None:
        cookie.pop(SEALED_PREFIX + key, None)


def _oauth_client(identity: GoogleIdentity):
    oauth = OAuth(current_app._get_current_object(), cache=_SealedSessionCache(runtime().vault))
    return oauth.register(CLIENT_NAME, **identity.oauth_client_settings())


def _forget_flows() -> None:
    """One Google flow per browser: a new connect replaces an unfinished one."""
    for key in [k for k in cookie if k.startswith((SEALED_PREFIX, f"_state_{CLIENT_NAME}_")) or k == FLOW_KEY]:
        cookie.pop(key, None)


def _error_page(message: str, status: int = 400):
    return render_template("accounts/connect_error.html", message=message), status


def _registered_identity():
    """(identity or None, None) or (None, an error page). Ends the request's transaction first: Google is
    called next, and no transaction (SQLite's write lock) is held meanwhile."""
    session = db()
    try:
        identity = google_registration.identity(session, runtime().settings, runtime().vault)
    except DecryptionError:
        return None, _error_page(SECRET_UNREADABLE, 409)
    session.commit()
    return identity, None


@bp.post("/accounts/connect/google")
@login_required
def connect():
    """Send the browser to Google (the CSRF token was checked by CSRFProtect before this runs)."""
    return start_flow()


def start_flow(account: Account | None = None):
    """The redirect to Google for a new mailbox, or (with `account`) for reconnecting that one."""
    identity, problem = _registered_identity()
    if problem is not None:
        return problem
    if identity is None:
        hint = " Open Admin > Google app to do it." if current_user.is_admin else " Ask an admin to do it."
        return _error_page("The Google app is not registered yet, so Gmail and Google Workspace mailboxes cannot be "
                           "connected." + hint, 409)
    params = {"access_type": "offline", "prompt": "consent"}
    if account is not None:
        params["login_hint"] = account.token_owner or account.address
    _forget_flows()
    callback_url = google_registration.callback_url(runtime().settings)
    try:
        identity.metadata()  # discovery checked first, so that its problems are told in words
        client = _oauth_client(identity)
        started = client.create_authorization_url(callback_url, **params)
    except IdentityError as exc:
        return _error_page(exc.explained.message, 502)
    except (requests.exceptions.RequestException, ValueError, RuntimeError) as exc:
        log.warning("starting a Google sign-in failed: %s", type(exc).__name__)
        return _error_page(f"Google's sign-in service at {identity.authority} could not be asked: try again in a "
                           "minute.", 502)
    client.save_authorize_data(redirect_uri=callback_url, **started)
    context = {"state": started["state"], "user": current_user.id, "account": account.id if account else None}
    cookie[FLOW_KEY] = runtime().vault.encrypt(json.dumps(context)).decode()
    return redirect(started["url"])


def _flow_context() -> dict | None:
    sealed = cookie.pop(FLOW_KEY, None)
    if not sealed:
        return None
    try:
        context = json.loads(runtime().vault.decrypt_text(sealed.encode()))
    except (DecryptionError, ValueError):
        return None
    return context if isinstance(context, dict) else None


@bp.get("/auth/google/callback")
@login_required
def callback():
    context = _flow_context()
    state = request.args.get("state")
    if context is None or not state or state != context.get("state"):
        log.warning("Google callback refused: the state does not match a sign-in started in this session")
        _forget_flows()
        return _error_page(STATE_MISMATCH)
    if context.get("user") != current_user.id:
        log.warning("Google callback refused: the sign-in was started by another user")
        _forget_flows()
        return _error_page(OTHER_USER)
    identity, problem = _registered_identity()
    if problem is not None:
        return problem
    if identity is None:
        return _error_page("The Google app registration was removed during the sign-in: ask an admin.", 409)
    try:
        issuer = str(identity.metadata()["issuer"])
    except IdentityError as exc:
        return _error_page(exc.explained.message, 502)
    if request.args.get("iss") and request.args["iss"] != issuer:  # RFC 9207: a mix-up between providers
        _forget_flows()
        return _error_page(OTHER_ISSUER)
    if "error" in request.args:
        _forget_flows()
        log.info("Google connect ended with %s", request.args.get("error"))
        return _error_page(explain_google(request.args.get("error"), request.args.get("error_description"),
                                          identity.context()).message)
    try:
        token = _oauth_client(identity).authorize_access_token(claims_options=identity.claims_options())
        signed_in = identity.signed_in(token)
    except MismatchingStateError:
        return _error_page(STATE_MISMATCH)
    except OAuthError as exc:
        log.info("Google refused the authorization code: %s", exc.error)
        return _error_page(explain_google(exc.error, exc.description, identity.context()).message)
    except JoseError as exc:
        log.warning("Google ID token rejected: %s", type(exc).__name__)
        return _error_page(NOT_VERIFIED)
    except IdentityError as exc:
        return _error_page(exc.explained.message)
    except (requests.exceptions.RequestException, ValueError) as exc:
        log.warning("Google callback failed: %s", type(exc).__name__)
        return _error_page(f"Google's sign-in service at {identity.authority} could not be reached to finish the "
                           "sign-in: try again in a minute.", 502)
    finally:
        _forget_flows()
    try:
        result = _store(signed_in, context.get("account"))
    except accounts.ConnectRefused as exc:
        db().rollback()
        return _error_page(str(exc), 403)
    runtime().wakeup.set()
    flash(_connected_message(result), "success" if result.outcome != "joined" else "info")
    return redirect(url_for("accounts.index"))


def _store(signed_in, reconnect_id: int | None) -> accounts.Connection:
    return accounts.connect_committed(db(), lambda: google_accounts.connect(
        db(), runtime().vault, current_user, signed_in, reconnect_id=reconnect_id))


def _connected_message(result: accounts.Connection) -> str:
    address = result.account.address
    if result.outcome == "created":
        return f"{address} is connected (Google)."
    if result.outcome == "reconnected":
        return f"{address} is reconnected (Google)."
    return (f"{address} is already connected; you signed in as it and can see its tickets. Only its owner or an "
            "admin can reconnect it or change its settings.")


def revoke_at_google(account: Account) -> tuple[bool, str | None]:
    """Best effort on disconnect: end the grant at Google too. (revoked, a sentence when that failed)."""
    if account.token_cache_enc is None:
        return False, None
    rt = runtime()
    try:
        identity = google_registration.identity(db(), rt.settings, rt.vault)
        token_json = rt.vault.decrypt_text(account.token_cache_enc)
    except DecryptionError:
        return False, None
    if identity is None:
        return False, None
    address = account.address
    db().commit()  # no transaction is held while Google is asked
    try:
        identity.revoke(token_json)
    except IdentityError as exc:
        log.info("revoking the Google grant of %s failed", address)
        return False, (f"Google was not told: {exc.explained.message} Remove the app's access in the Google Account "
                       "under Security > Your connections to third-party apps & services.")
    return True, None


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
