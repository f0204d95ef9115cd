"""Sign-in sessions, roles, bearer tokens and security headers."""
from __future__ import annotations

from functools import wraps
from typing import Callable

from flask import Flask, abort, g, jsonify, redirect, request
from flask_login import LoginManager, current_user
from flask_login.utils import login_url

from .. import api_tokens
from ..models import User
from . import sessions
from .context import db

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to continue."
login_manager.session_protection = "strong"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; object-src 'none'")


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    return sessions.load_user(user_id)


@login_manager.unauthorized_handler
def _unauthorized():
    """To the sign-in page, saying why: not signed in, or the session that just ended. A page's background
    request (the ticket list's refresh asks for JSON) gets a 401 instead: following a redirect there would
    show the reason to nobody, and the page the person opens next must still say it."""
    if request.accept_mimetypes.best == "application/json" or request.headers.get("Sec-Fetch-Mode") == "cors":
        return jsonify(error="unauthorized", detail="Not signed in, or the session has ended: reload the page "
                                                    "to sign in."), 401
    sessions.flash_reason(login_manager.login_message)
    return redirect(login_url(login_manager.login_view, next_url=request.url))


def admin_required(view: Callable) -> Callable:
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if not current_user.is_admin:
            abort(403, "This page is for admins.")
        return view(*args, **kwargs)
    return wrapper


def api_auth(view: Callable) -> Callable:
    """Bearer token from /account/tokens or `connector create-token`; 401 JSON saying why without one."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        result = api_tokens.check(db(), token.strip() if scheme.lower() == "bearer" else "")
        if result.user is None:
            response = jsonify(error="unauthorized", detail=result.problem)
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="connector"'
            return response
        g.api_user = result.user
        return view(*args, **kwargs)
    return wrapper


def init_app(app: Flask) -> None:
    login_manager.init_app(app)

    @app.after_request
    def _headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path.startswith(("/api/", "/login", "/admin", "/auth/", "/account/")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response
