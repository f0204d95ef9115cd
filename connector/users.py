"""People who sign in: creation, password checks (throttled, see throttle.py), sessions they may end."""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from . import api_tokens, throttle
from .crypto import hash_password, verify_password
from .models import ROLES, User, utcnow

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD = 10
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


class PasswordThrottled(UserError):
    """Too many wrong passwords: the check was not even made."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(wait_message(retry_after))
        self.retry_after = retry_after


def wait_message(seconds: int) -> str:
    return f"Too many failed sign-ins. Wait {seconds} seconds, then try again."


def authenticate(session: Session, email: str, password: str, client: str, max_failures: int = 5,
                 device: tuple[int, str] | None = None) -> SignIn:
    """Check a password under the guessing limits of throttle.py.

    `client` is the client address; `device` the (user id, device id) of a signed device cookie, which
    counts only if it was given to this very user."""
    email = normalise_email(email)
    user = session.scalar(select(User).where(User.email == email))
    session.commit()  # nothing stays open (SQLite: locked) while the hash is computed
    attempt = _attempt(email, client, user, device)
    verdict = throttle.guarded(session, attempt, throttle.Limits.from_setting(max_failures),
                               lambda: _password_matches(user, password))
    if verdict.throttled:
        return SignIn(None, wait_message(verdict.retry_after), verdict.retry_after)
    if not verdict.ok:
        return SignIn(None, "Wrong email or password.")
    user.last_login_at = utcnow()
    return SignIn(user)


def _password_matches(user: User | None, password: str) -> bool:
    # The dummy hash costs as much as a real one: timing does not tell which addresses have accounts.
    matches = verify_password(user.password_hash if user is not None else _DUMMY_HASH, password)
    return matches and user is not None and user.is_active


def _attempt(email: str, client: str, user: User | None, device: tuple[int, str] | None) -> throttle.Attempt:
    known = device is not None and user is not None and device[0] == user.id and bool(device[1])
    return throttle.Attempt(email, throttle.client_key(client), device[1] if known else None)


def change_password(session: Session, user: User, current: str, new: str, client: str = "?",
                    max_failures: int = 5, device: tuple[int, str] | None = None) -> None:
    """Check the current password (throttled like a sign-in), set the new one and end every other
    session (see `end_sessions`). Raises UserError with the reason; the caller commits."""
    if len(new) < MIN_PASSWORD:
        raise UserError(f"the new password must have at least {MIN_PASSWORD} characters")
    attempt = _attempt(user.email, client, user, device)
    verdict = throttle.guarded(session, attempt, throttle.Limits.from_setting(max_failures),
                               lambda: verify_password(user.password_hash, current))
    if verdict.throttled:
        raise PasswordThrottled(verdict.retry_after)
    if not verdict.ok:
        raise UserError("the current password is wrong")
    if new == current:
        raise UserError("the new password must differ from the current one")
    user.password_hash = hash_password(new)
    end_sessions(session, user)


def end_sessions(session: Session, user: User) -> int:
    """Void every sign-in session of `user` (sign-out, password change): raise the generation that
    each session carries and that is compared on every request. Atomic; returns the new generation."""
    generation = session.execute(update(User).where(User.id == user.id)
                                 .values(session_generation=User.session_generation + 1)
                                 .returning(User.session_generation)
                                 .execution_options(synchronize_session=False)).scalar_one()
    set_committed_value(user, "session_generation", generation)
    return generation


# API tokens live in api_tokens.py; these names stay for the callers that import them from here.
issue_api_token = api_tokens.issue_api_token


def find_user(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == normalise_email(email)))
