"""Two sign-ins of one mailbox at the same moment: the second decides again against the first's row."""
from __future__ import annotations

from sqlalchemy import func, select

from connector import accounts
from connector.models import Account

ADDRESS = "desk@race.test"


def test_a_connect_that_loses_the_race_joins_the_row_that_won(rt):
    calls = []

    def store() -> accounts.Connection:
        calls.append(1)
        with rt.db.session() as session:
            existing = session.scalar(select(Account).where(Account.address == ADDRESS))
        if existing is not None:
            return accounts.Connection(existing, "joined")
        if len(calls) == 1:  # the other sign-in commits its row between our lookup and our commit
            with rt.db.session() as other:
                other.add(Account(address=ADDRESS))
                other.commit()
        account = Account(address=ADDRESS)
        mine.add(account)
        return accounts.Connection(account, "created")

    with rt.db.session() as mine:
        result = accounts.connect_committed(mine, store)
        assert result.outcome == "joined"
        assert len(calls) == 2
        assert mine.scalar(select(func.count()).select_from(Account).where(Account.address == ADDRESS)) == 1


def test_a_refusal_is_not_retried(rt):
    calls = []

    def store() -> accounts.Connection:
        calls.append(1)
        raise accounts.ConnectRefused("not yours")

    with rt.db.session() as session:
        try:
            accounts.connect_committed(session, store)
        except accounts.ConnectRefused:
            pass
    assert calls == [1]
