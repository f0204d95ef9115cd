"""Many workers on one database, against fake mail servers (tests/support/fake_mail.py): the fencing token
keeps a worker that lost its lease from committing, mailboxes spread evenly over the live workers and move
when one joins or stops. Every test runs on SQLite and on PostgreSQL."""
from __future__ import annotations

import threading
import time

from sqlalchemy import func, select, update

from connector.models import Account, Article, utcnow
from connector.sync.fence import Fence
from connector.worker import Worker
from connector.worker.leases import MailboxLeases, assignment
from connector.worker.mailbox import MailboxRunner
from tests.support.fake_mail import FakeServers
from tests.support.mail import make_mail, wait_until


def fake_runtime(make_app, **worker):
    app = make_app(worker={"lease_seconds": 30, **worker})
    rt = app.extensions["connector"]
    rt.servers = FakeServers()
    return rt


def add_mailboxes(rt, n: int, action: str = "keep") -> list[tuple[int, str]]:
    made = []
    with rt.db.session() as session:
        for i in range(n):
            account = Account(address=f"box{i}@fake.test", token_cache_enc=b"unused by the fake servers",
                              post_import_action=action)
            session.add(account)
            session.flush()
            made.append((account.id, account.address))
    return made


def holders(rt) -> dict[str, int]:
    with rt.db.session() as session:
        return dict(session.execute(select(Account.lease_owner, func.count()).where(Account.lease_owner.is_not(None))
                                    .group_by(Account.lease_owner)).all())


def articles(rt, account_id: int) -> int:
    with rt.db.session() as session:
        return session.scalar(select(func.count()).select_from(Article).where(Article.account_id == account_id))


def test_a_worker_whose_lease_was_taken_over_cannot_commit_or_act(make_app):
    rt = fake_runtime(make_app)
    [(account_id, address)] = add_mailboxes(rt, 1, action="delete")
    for i in range(3):
        rt.servers.deliver(address, make_mail(to=address, subject=f"Fenced {i}"))
    token_a = MailboxLeases(rt.db, "worker-a", 30).claim(account_id)
    runner_a = MailboxRunner(rt, account_id, Fence(account_id, "worker-a", token_a, 30))
    fetching, resume = threading.Event(), threading.Event()

    def pause(_address, _uids):  # worker A has listed the mail and is fetching it when its machine freezes
        fetching.set()
        assert resume.wait(20)
    rt.servers.fetch_hook = pause
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(runner_a.run_once()))
    thread.start()
    assert fetching.wait(20)
    with rt.db.session() as session:  # A's lease runs out meanwhile, and worker B takes the mailbox over
        session.execute(update(Account).where(Account.id == account_id)
                        .values(lease_expires_at=utcnow().replace(year=2000)))
    token_b = MailboxLeases(rt.db, "worker-b", 30).claim(account_id)
    assert token_b == token_a + 1
    rt.servers.fetch_hook = None
    resume.set()
    thread.join(30)
    assert outcome == ["lost"]
    assert articles(rt, account_id) == 0  # A's batch was rolled back
    assert rt.servers.store(address).actions == []  # and A deleted nothing
    with rt.db.session() as session:
        account = session.get(Account, account_id)
        assert (account.lease_owner, account.last_uid) == ("worker-b", 0)
    runner_b = MailboxRunner(rt, account_id, Fence(account_id, "worker-b", token_b, 30))
    assert runner_b.run_once() == "ok"
    assert articles(rt, account_id) == 3
    assert rt.servers.store(address).actions == [("delete", [1, 2, 3])]


def test_assignment_is_even_to_within_one_and_moves_few_mailboxes():
    mailboxes = list(range(1, 1001))
    three = assignment(mailboxes, ["a", "b", "c"])
    loads = sorted(list(three.values()).count(w) for w in "abc")
    assert loads == [333, 333, 334]
    four = assignment(mailboxes, ["a", "b", "c", "d"])
    assert sorted(list(four.values()).count(w) for w in "abcd") == [250, 250, 250, 250]
    moved = sum(1 for m in mailboxes if three[m] != four[m])
    assert moved < 400  # about the quarter that goes to the new worker, not a reshuffle
    assert assignment(mailboxes, ["c", "a", "b"]) == three  # the same on every worker


def test_mailboxes_spread_over_live_workers_and_move_when_one_joins_or_stops(make_app):
    rt = fake_runtime(make_app)
    add_mailboxes(rt, 10)
    started = []

    def start(name):
        worker = Worker(rt, name=name)
        worker.start_background()
        started.append(worker)
        return worker
    try:
        first, second = start("w1"), start("w2")
        wait_until(lambda: sorted(holders(rt).values()) == [5, 5], timeout=30, interval=0.1)
        third = start("w3")
        wait_until(lambda: sorted(holders(rt).values()) == [3, 3, 4], timeout=30, interval=0.1)
        assert set(holders(rt)) == {first.id, second.id, third.id}
        second.stop(wait=True)
        wait_until(lambda: sorted(holders(rt).values()) == [5, 5], timeout=30, interval=0.1)
        assert set(holders(rt)) == {first.id, third.id}
    finally:
        for worker in started:
            worker.stop(wait=True)
    assert holders(rt) == {}  # every stopped worker handed its leases back


def test_idle_mailboxes_wake_on_news_through_the_watcher(make_app):
    rt = fake_runtime(make_app, idle_timeout_seconds=600, poll_interval_seconds=600)
    boxes = add_mailboxes(rt, 5)
    worker = Worker(rt, name="watch")
    worker.start_background()
    try:
        wait_until(lambda: len(worker.watcher.watched) == 5, timeout=30, interval=0.05)
        account_id, address = boxes[3]
        began = time.monotonic()
        rt.servers.deliver(address, make_mail(to=address, subject="Pushed"))
        wait_until(lambda: articles(rt, account_id) == 1, timeout=10, interval=0.02)
        assert time.monotonic() - began < 2.0  # not the 600 s poll: the watcher saw the news
        wait_until(lambda: len(worker.watcher.watched) == 5, timeout=10, interval=0.05)  # back to waiting
    finally:
        worker.stop(wait=True)
