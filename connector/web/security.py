"""Sign-in sessions, roles, bearer tokens and security headers."""
from __future__ import annotations

from functools import wraps
from typing import Callable

from flask import Flask, abort, g, jsonify, request
from flask_login import LoginManager, current_user

from .. import users
from ..models import User
from .context import db

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to continue."
login_manager.session_protection = "strong"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; object-src 'none'")


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    user = db().get(User, int(user_id)) if user_id.isdigit() else None
    return user if user is not None and user.is_active else None


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
    """Bearer token from `connector create-token`; 401 JSON without a valid one."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        user = users.user_for_api_token(db(), token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            response = jsonify(error="unauthorized",
                               detail="Send 'Authorization: Bearer <token>' with a token from 'connector create-token'.")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="connector"'
            return response
        db().commit()  # last_used_at
        g.api_user = user
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
        if request.path.startswith(("/api/", "/login", "/admin", "/auth/")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response
