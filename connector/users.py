"""People who sign in: creation, password sign-in with throttling, API tokens."""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .crypto import hash_api_token, hash_password, new_api_token, verify_password
from .models import ROLES, ApiToken, LoginThrottle, User, utcnow

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD = 10
MAX_LOCK_SECONDS = 15 * 60
# Failures older than this are forgotten, so a shared office address is not locked out for good by
# the typos of many weeks (the per-address count also resets on a successful sign-in).
FAILURE_WINDOW = timedelta(hours=1)
# A real hash of a random password, checked when the user does not exist, so that timing does not
# tell which addresses have accounts.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class UserError(ValueError):
    """Input that cannot become a user; the message says why."""


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def create_user(session: Session, email: str, password: str, role: str = "agent") -> User:
    email = normalise_email(email)
    if not EMAIL_RE.match(email):
        raise UserError(f"'{email}' is not an email address")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, not '{role}'")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if session.scalar(select(User).where(User.email == email)):
        raise UserError(f"a user {email} exists already")
    user = User(email=email, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def ensure_first_admin(session: Session, email: str = "admin@localhost") -> tuple[str, str] | None:
    """On a database without users, create an admin; returns (email, generated password) once."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    password = secrets.token_urlsafe(12)
    create_user(session, email, password, role="admin")
    return email, password


@dataclass(frozen=True)
class SignIn:
    user: User | None
    error: str | None = None
    retry_after: int = 0


def _throttle(session: Session, key: str) -> LoginThrottle | None:
    return session.get(LoginThrottle, key)


def _seconds_locked(row: LoginThrottle | None) -> int:
    if row is None or row.locked_until is None:
        return 0
    remaining = (row.locked_until - utcnow()).total_seconds()
    return max(0, int(remaining + 0.999))


def _record_failure(session: Session, key: str, max_failures: int) -> None:
    row = _throttle(session, key) or LoginThrottle(key=key, failures=0)
    session.add(row)
    if row.last_failure_at is not None and utcnow() - row.last_failure_at > FAILURE_WINDOW:
        row.failures, row.locked_until = 0, None
    row.failures = (row.failures or 0) + 1
    row.last_failure_at = utcnow()
    if row.failures >= max_failures:
        delay = min(MAX_LOCK_SECONDS, 2 ** (row.failures - max_failures) * 5)
        row.locked_until = utcnow() + timedelta(seconds=delay)


def authenticate(session: Session, email: str, password: str, client_ip: str, max_failures: int = 5) -> SignIn:
    """Check a password; after `max_failures` wrong ones per address or per client, wait ever longer."""
    email = normalise_email(email)
    keys = [f"email:{email}", f"ip:{client_ip}"]
    wait = max(_seconds_locked(_throttle(session, k)) for k in keys)
    if wait:
        return SignIn(None, f"Too many failed sign-ins. Wait {wait} seconds, then try again.", wait)
    user = session.scalar(select(User).where(User.email == email))
    ok = verify_password(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    if not ok or not user.is_active:
        for key in keys:
            _record_failure(session, key, max_failures * (4 if key.startswith("ip:") else 1))
        return SignIn(None, "Wrong email or password.")
    for key in keys[:1]:
        row = _throttle(session, key)
        if row is not None:
            session.delete(row)
    user.last_login_at = utcnow()
    return SignIn(user)


def change_password(user: User, current: str, new: str) -> None:
    """Raises UserError with the reason; the caller commits."""
    if not verify_password(user.password_hash, current):
        raise UserError("the current password is wrong")
    if len(new) < MIN_PASSWORD:
        raise UserError(f"the new password must have at least {MIN_PASSWORD} characters")
    if new == current:
        raise UserError("the new password must differ from the current one")
    user.password_hash = hash_password(new)


def issue_api_token(session: Session, user: User) -> str:
    """A new bearer token for the REST API; only its hash is stored."""
    token, digest = new_api_token()
    session.add(ApiToken(user_id=user.id, token_hash=digest))
    session.flush()
    return token


def user_for_api_token(session: Session, token: str) -> User | None:
    if not token:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_api_token(token),
                                                ApiToken.revoked_at.is_(None)))
    if row is None or not row.user.is_active:
        return None
    row.last_used_at = utcnow()
    return row.user


def find_user(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == normalise_email(email)))
