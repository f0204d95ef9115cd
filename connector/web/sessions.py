"""Sign-in sessions: fresh at sign-in; over after sign-out, a password change, or idle time.

The session cookie is signed, not stored server-side, so a copy of it stays valid unless the server
can tell it apart. Each session therefore carries the user's `session_generation` from the moment of
sign-in, compared on every request: signing out or changing the password raises the generation
(users.end_sessions) and every copy made before is void. It also carries when it was last used
(rewritten at most once a minute); past `[app] session_idle_minutes` it is over. Sign-in clears the
whole session first, so nothing from before (a pending connect flow, the CSRF token) survives it.

Flask-Login's "remember me" cookie is never issued; one presented anyway (only a holder of the secret
key could make it) restores nothing, since it brings no generation.
"""
from __future__ import annotations

import time

from flask import flash, g, session
from flask_login import login_user, logout_user

from ..models import User
from .context import db, runtime

GENERATION = "_gen"
LAST_SEEN = "_seen"
TOUCH_EVERY_SECONDS = 60
_LOGIN_KEYS = ("_user_id", "_fresh", "_id", "_remember", "_remember_seconds", GENERATION, LAST_SEEN)


def _now() -> int:
    return int(time.time())


def start(user: User) -> None:
    """Begin a new session for `user`: nothing of the old one is kept."""
    session.clear()  # (the reason a previous session ended goes too)
    g.pop("csrf_token", None)  # Flask-WTF keeps the request's token here too
    login_user(user)
    session[GENERATION] = user.session_generation
    session[LAST_SEEN] = _now()


def end() -> None:
    """Sign out here (the caller raised the generation, which ends the other copies)."""
    logout_user()
    session.clear()
    g.pop("csrf_token", None)


def load_user(user_id: str) -> User | None:
    """Flask-Login's user loader: the session's user, if the session is still valid."""
    generation, seen = session.get(GENERATION), session.get(LAST_SEEN)
    if not isinstance(generation, int) or not isinstance(seen, int):
        for key in _LOGIN_KEYS:  # not a session we started (e.g. a remember-me cookie): sign nobody in
            session.pop(key, None)
        return None
    user = db().get(User, int(user_id)) if user_id.isdigit() else None
    if user is None or not user.is_active or user.session_generation != generation:
        _over("Your session has ended (signed out, or the password was changed). Sign in again.")
        return None
    idle_minutes = runtime().settings.app.session_idle_minutes
    now = _now()
    if now - seen > idle_minutes * 60:
        _over(f"You were signed out after {idle_minutes} minutes without activity. Sign in again.")
        return None
    if now - seen >= TOUCH_EVERY_SECONDS:
        session[LAST_SEEN] = now
    return user


ENDED = "_ended"


def _over(message: str) -> None:
    session.clear()
    # Said on the way to the sign-in page (see security.unauthorized). Kept in the cookie too: the request
    # that finds the session over may be a page's background refresh, not the page the person opens next.
    g.session_ended = message
    session[ENDED] = message


def flash_reason(default: str) -> None:
    """Say why the sign-in page is shown: the session that just ended, else `default`."""
    flash(g.pop("session_ended", None) or session.pop(ENDED, None) or default, "info")
