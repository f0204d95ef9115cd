"""Builds the Flask app: settings, database, security, blueprints."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from flask import Flask, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from ..config import ConfigError, Settings
from ..crypto import flask_secret_key
from ..runtime import Runtime, configure_logging
from . import accounts, admin, api, auth, graph_hooks, params, security, tickets, tokens

log = logging.getLogger(__name__)
csrf = CSRFProtect()
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def templates_folder() -> Path:
    """The Jinja templates: `templates/` beside the package in a checkout (the design's layout), and
    inside the package once installed from a wheel (pyproject.toml maps it there)."""
    installed = PACKAGE_DIR / "templates"
    return installed if installed.is_dir() else PACKAGE_DIR.parent / "templates"


def _check_settings(settings: Settings) -> None:
    if settings.app.trusted_proxies < 0:
        raise ConfigError("app.trusted_proxies must be 0 (no reverse proxy) or the number of proxies in front, "
                          f"not {settings.app.trusted_proxies}")
    if settings.app.session_idle_minutes < 1:
        raise ConfigError(f"app.session_idle_minutes must be 1 or more, not {settings.app.session_idle_minutes}")


def build_app(overrides: Mapping[str, Any] | None = None, runtime: Runtime | None = None) -> Flask:
    configure_logging()
    overrides = dict(overrides or {})
    flask_config = overrides.pop("flask", {})
    runtime = runtime or Runtime.create(overrides)
    settings = runtime.settings
    _check_settings(settings)
    app = Flask("connector", template_folder=str(templates_folder()), static_folder="static",
                root_path=str(PACKAGE_DIR))
    app.config.update(
        SECRET_KEY=flask_secret_key(settings.data_path, settings.app.secret_key),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.app.base_url.startswith("https://"),
        # Never issued ("remember me" is not offered); one presented anyway restores no session (sessions.py).
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=settings.app.base_url.startswith("https://"),
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session instead, so long-open forms still work
        MAX_CONTENT_LENGTH=40 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.config.update(flask_config)
    app.extensions["connector"] = runtime
    if settings.app.trusted_proxies:
        # Believe X-Forwarded-For/-Proto/-Host only as far as the configured proxies wrote them: the
        # client address that throttling and session protection see is then the real one, and a client
        # cannot pick its own by sending the header (with 0 proxies the header is ignored).
        hops = settings.app.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    app.url_map.converters["int"] = params.DatabaseIdConverter  # before any route is added
    csrf.init_app(app)
    security.init_app(app)
    for module in (auth, tokens, admin, accounts, tickets, api):
        module.init_app(app)
    csrf.exempt(api.bp)
    graph_hooks.init_app(app, csrf)  # Microsoft Graph's notifications: anonymous, checked by clientState

    @app.teardown_appcontext
    def _close_session(exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            if exc is not None:
                session.rollback()
            session.close()

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError):
        return render_template("error.html", title="The form expired",
                               message="This form was open too long or came from another site (CSRF check failed): "
                                       "reload the page and submit it again."), 400

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            return jsonify(error=exc.name.lower().replace(" ", "_"), detail=exc.description), exc.code
        return render_template("error.html", title=f"{exc.code} {exc.name}", message=exc.description), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return jsonify(error="internal_error", detail="Something went wrong on the server; it was logged."), 500
        return render_template("error.html", title="Something went wrong",
                               message="The server hit an unexpected error; it was logged. Try again, and tell "
                                       "your admin if it persists."), 500

    return app
