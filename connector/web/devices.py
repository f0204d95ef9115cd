"""Device cookies: "this browser signed in as user N before", so guessing elsewhere cannot slow it down.

After a successful sign-in the browser gets a signed cookie with the user's id and a random device id
(OWASP's "device cookie"). When it comes back, its password checks for that user are counted under the
device alone (throttle.py), not under its network address or the account's global count. The cookie is
no credential: it signs nobody in and lifts no password check; forging one needs the secret key.
"""
from __future__ import annotations

import secrets

from flask import Request, Response, current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..models import User

COOKIE = "connector_device"
MAX_AGE_SECONDS = 365 * 24 * 3600


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="connector-device-cookie")


def read(request: Request) -> tuple[int, str] | None:
    """(user id, device id) from a valid device cookie, else None."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _serializer().loads(raw, max_age=MAX_AGE_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("u"), int) or not isinstance(data.get("d"), str):
        return None
    return data["u"], data["d"]


def remember(response: Response, request: Request, user: User) -> None:
    """Give (or renew) the cookie for `user`, keeping the device id if this browser had one for them."""
    known = read(request)
    device = known[1] if known and known[0] == user.id else secrets.token_urlsafe(16)
    response.set_cookie(COOKIE, _serializer().dumps({"u": user.id, "d": device}), max_age=MAX_AGE_SECONDS,
                        httponly=True, samesite="Lax", secure=current_app.config["SESSION_COOKIE_SECURE"])
