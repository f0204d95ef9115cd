"""Slowing down password guessing without handing anyone a way to lock a person out.

Every password check (sign-in, and the current password on the password page) goes through `guarded`.
Failures are counted under several keys in `login_throttle`; each key allows some free failures, then
makes the next attempt wait, 5 s doubling up to 15 minutes. Failures are forgotten an hour after the last
one. Keys, and what each one stops:

* ``pair:<account>|<client>`` (free: `max_login_failures`): one client guessing one account. A stranger
  failing from their own address slows down only themselves; the owner elsewhere signs in at once.
* ``client:<client>`` (4x): one client spraying guesses over many accounts.
* ``account:<account>`` (10x): many clients guessing one account (a botnet). Past its allowance the
  account is "under attack", which is a delay, never a lock: a client with no recent failure on this
  account still gets its check (so the owner on a clean network signs in), only clients that already
  failed on it wait. Each attacking address so gets one guess an hour instead of five plus a ladder.
* ``device:<id>``: a browser that signed in to this account before shows a signed device cookie (see
  web/devices.py); its checks count only under this key, so neither a neighbour behind the same NAT nor
  a botnet slows the owner's usual browser down. The cookie grants no access by itself.

A client is its address as the app sees it (`remote_addr` after ProxyFix for `[app] trusted_proxies`);
IPv6 addresses count per /64, the block one subscriber usually holds.

Counting is atomic and happens before the password is checked: one INSERT ... ON CONFLICT DO UPDATE
per key takes an attempt (failures + 1, and the lock the new count earns) only if the key is not
waiting, and RETURNING tells whether it did. Parallel requests therefore cannot all pass a check that
says "not locked yet": past the allowance exactly one gets through per delay. A correct password
gives the attempt back (the pair key is cleared, the others decremented, undoing a lock only that
attempt set). Each step commits at once, so no transaction is open while the password hash is computed.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import ColumnElement, case, delete, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import LoginThrottle, utcnow

WINDOW = timedelta(hours=1)
FIRST_DELAY_SECONDS = 5
MAX_DELAY_SECONDS = 15 * 60
CLIENT_FACTOR = 4
ACCOUNT_FACTOR = 10
PURGE_EVERY = timedelta(minutes=10)

_table = LoginThrottle.__table__
_last_purge: datetime | None = None


@dataclass(frozen=True)
class Limits:
    """Free failures per key kind, from `[app] max_login_failures`."""
    pair: int
    client: int
    account: int

    @classmethod
    def from_setting(cls, max_failures: int) -> "Limits":
        free = max(1, int(max_failures))
        return cls(pair=free, client=free * CLIENT_FACTOR, account=free * ACCOUNT_FACTOR)


@dataclass(frozen=True)
class Attempt:
    """Who tries which account: `account` is the normalised email, `client` from `client_key`,
    `device` the id from a valid device cookie of this very account (else None)."""
    account: str
    client: str
    device: str | None = None


@dataclass(frozen=True)
class Verdict:
    ok: bool  # the password was checked and is right
    retry_after: int = 0  # > 0: not checked at all, the client must wait this many seconds

    @property
    def throttled(self) -> bool:
        return self.retry_after > 0


@dataclass(frozen=True)
class _Claim:
    key: str
    failures: int  # the count including this attempt
    lock: datetime | None  # the lock this attempt set (None: it set none)


def client_key(address: str | None) -> str:
    """The unit a client is counted in: an IPv4 address, or an IPv6 /64."""
    text = (address or "").strip()
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text[:64] or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def delay_seconds(failures: int, free: int) -> int:
    """The wait earned by `failures` failures when `free` are allowed: none below, then 5 s doubling."""
    if failures < free:
        return 0
    return min(MAX_DELAY_SECONDS, FIRST_DELAY_SECONDS * 2 ** min(failures - free, 20))


def guarded(session: Session, attempt: Attempt, limits: Limits, check: Callable[[], bool]) -> Verdict:
    """Run `check` (the password comparison) if no key makes this attempt wait; count it either way."""
    now = utcnow()
    _purge_now_and_then(session, now)
    if attempt.device:
        keys = [(f"device:{attempt.device}", limits.pair)]
    else:
        keys = [(f"pair:{attempt.account}|{attempt.client}", limits.pair),
                (f"client:{attempt.client}", limits.client),
                (f"account:{attempt.account}", limits.account)]
    claims: list[_Claim] = []
    for key, free in keys:
        claim = _claim(session, key, free, now)
        if claim is None and key.startswith("account:") and claims[0].failures == 1:
            # Under attack, but this client has no recent failure on the account: it is checked.
            claim = _claim(session, key, free, now, force=True)
        if claim is None:
            for taken in claims:
                _give_back(session, taken)
            return Verdict(False, _seconds_left(session, key, now))
        claims.append(claim)
    ok = bool(check())
    if ok:
        session.execute(delete(LoginThrottle).where(LoginThrottle.key == claims[0].key))
        for taken in claims[1:]:
            _give_back(session, taken, commit=False)
        session.commit()
    return Verdict(ok)


def _insert(session: Session):
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(_table)


def _lock_for(count: ColumnElement | int, free: int, now: datetime) -> ColumnElement | datetime | None:
    """The lock `count` failures earn, as SQL (every rung of the ladder is a bound timestamp)."""
    if isinstance(count, int):
        seconds = delay_seconds(count, free)
        return now + timedelta(seconds=seconds) if seconds else None
    rungs = []
    failures = free
    while True:
        seconds = delay_seconds(failures, free)
        rungs.append((failures, now + timedelta(seconds=seconds)))
        if seconds >= MAX_DELAY_SECONDS:
            break
        failures += 1
    whens = [(count >= n, literal(until, LoginThrottle.locked_until.type)) for n, until in reversed(rungs)]
    return case(*whens, else_=literal(None, LoginThrottle.locked_until.type))


def _claim(session: Session, key: str, free: int, now: datetime, force: bool = False) -> _Claim | None:
    """Take one attempt under `key`, atomically; None if the key is waiting (and `force` is off).

    `force` takes it even so, and leaves the lock as it is (the account key under attack)."""
    count = case((_table.c.last_failure_at < now - WINDOW, 1), else_=_table.c.failures + 1)
    values = {"failures": count, "last_failure_at": now}
    if not force:
        values["locked_until"] = _lock_for(count, free, now)
    statement = _insert(session).values(key=key, failures=1, last_failure_at=now, locked_until=_lock_for(1, free, now))
    statement = statement.on_conflict_do_update(
        index_elements=[_table.c.key], set_=values,
        where=None if force else or_(_table.c.locked_until.is_(None), _table.c.locked_until <= now))
    row = session.execute(statement.returning(_table.c.failures, _table.c.locked_until)).first()
    session.commit()
    if row is None:
        return None
    failures, locked_until = row
    return _Claim(key, failures, None if force or not locked_until or locked_until <= now else locked_until)


def _give_back(session: Session, claim: _Claim, commit: bool = True) -> None:
    """Undo a claim: one failure less, and the lock it set (if no later attempt moved it)."""
    lock = _table.c.locked_until
    values = {"failures": _table.c.failures - 1}
    if claim.lock is not None:
        values["locked_until"] = case((lock == claim.lock, literal(None, lock.type)), else_=lock)
    session.execute(update(LoginThrottle).where(LoginThrottle.key == claim.key, LoginThrottle.failures > 0)
                    .values(values))
    if commit:
        session.commit()


def _seconds_left(session: Session, key: str, now: datetime, at_least: int = 1) -> int:
    locked_until = session.scalar(select(LoginThrottle.locked_until).where(LoginThrottle.key == key))
    session.commit()
    if locked_until is None:
        return at_least
    return max(at_least, math.ceil((locked_until - now).total_seconds()))


def _purge_now_and_then(session: Session, now: datetime) -> None:
    """Forget keys with nothing to remember (old failures, no lock), so guessed names do not pile up."""
    global _last_purge
    if _last_purge is not None and now - _last_purge < PURGE_EVERY:
        return
    _last_purge = now
    session.execute(delete(LoginThrottle).where(LoginThrottle.last_failure_at < now - WINDOW,
                                                or_(LoginThrottle.locked_until.is_(None),
                                                    LoginThrottle.locked_until < now)))
    session.commit()
