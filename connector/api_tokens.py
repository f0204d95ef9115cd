"""Bearer tokens for the REST API: named, optionally expiring, listed and revoked by their owner.

Only a SHA-256 of a token is stored; the token itself is shown once, when it is made. The time of last
use is written at most once a minute (`LAST_USE_RESOLUTION`), so a busy script does not turn every API
call into a database write. A token works only while it is neither expired nor revoked and its user is
active; the reason it does not is said in a sentence, because the caller holds the token already.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from .crypto import hash_api_token, new_api_token
from .models import ApiToken, User, utcnow

LAST_USE_RESOLUTION = timedelta(minutes=1)
MAX_NAME = 100
MAX_EXPIRES_DAYS = 3650
NEW_TOKEN_HINT = "create one at /account/tokens or with 'connector create-token EMAIL'"


class TokenError(ValueError):
    """Input that cannot become a token; the message says why."""


@dataclass(frozen=True)
class TokenCheck:
    user: User | None
    problem: str = ""  # a sentence for the caller when `user` is None


def state(token: ApiToken, now: datetime | None = None) -> str:
    """'active', 'expired' or 'revoked'."""
    now = now or utcnow()
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "active"


def clean_name(name: str | None) -> str:
    text = " ".join((name or "").split())
    if len(text) > MAX_NAME:
        raise TokenError(f"the name may have at most {MAX_NAME} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise TokenError("the name may not contain control or formatting characters")
    return text


def create(session: Session, user: User, name: str = "", expires_days: int | None = None) -> tuple[str, ApiToken]:
    """A new token for `user`; returns (the token, shown only now; its row)."""
    if not user.is_active:
        raise TokenError(f"{user.email} is deactivated; activate the user before making tokens")
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
        raise TokenError(f"the expiry must be between 1 and {MAX_EXPIRES_DAYS} days")
    token, digest = new_api_token()
    now = utcnow()
    row = ApiToken(user_id=user.id, token_hash=digest, name=clean_name(name), created_at=now,
                   expires_at=now + timedelta(days=expires_days) if expires_days else None)
    session.add(row)
    session.flush()
    return token, row


def issue_api_token(session: Session, user: User, name: str = "", expires_days: int | None = None) -> str:
    return create(session, user, name, expires_days)[0]


def tokens_of(session: Session, user: User) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def tokens_of_others(session: Session, user: User) -> list[ApiToken]:
    """Everyone else's tokens (for admins), with their owners loaded."""
    return list(session.scalars(select(ApiToken).options(joinedload(ApiToken.user))
                                .where(ApiToken.user_id != user.id)
                                .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def get(session: Session, token_id: int) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def revoke(token: ApiToken) -> bool:
    """Revoke now; False if it was revoked already (the caller commits)."""
    if token.revoked_at is not None:
        return False
    token.revoked_at = utcnow()
    return True


def check(session: Session, token: str) -> TokenCheck:
    """The user a bearer token stands for, or why it stands for no one. Commits a last-use write."""
    if not token:
        return TokenCheck(None, f"Send 'Authorization: Bearer <token>'; {NEW_TOKEN_HINT}.")
    row = session.scalar(select(ApiToken).options(joinedload(ApiToken.user))
                         .where(ApiToken.token_hash == hash_api_token(token)))
    now = utcnow()
    if row is None:
        return TokenCheck(None, f"This token is not valid (mistyped, or from another installation); {NEW_TOKEN_HINT}.")
    if row.revoked_at is not None:
        return TokenCheck(None, f"This token was revoked on {row.revoked_at:%Y-%m-%d %H:%M} UTC; {NEW_TOKEN_HINT}.")
    if row.expires_at is not None and row.expires_at <= now:
        return TokenCheck(None, f"This token expired on {row.expires_at:%Y-%m-%d %H:%M} UTC; {NEW_TOKEN_HINT}.")
    if not row.user.is_active:
        return TokenCheck(None, "The user this token belongs to is deactivated; an admin can reactivate them.")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USE_RESOLUTION:
        _note_use(session, row, now)
    return TokenCheck(row.user)


def _note_use(session: Session, row: ApiToken, now: datetime) -> None:
    """Write the time of use, conditionally: of parallel calls in the same minute only one writes."""
    session.execute(update(ApiToken)
                    .where(ApiToken.id == row.id,
                           or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USE_RESOLUTION))
                    .values(last_used_at=now)
                    .execution_options(synchronize_session=False))
    session.commit()
    set_committed_value(row, "last_used_at", now)  # known, and not a change to write again
