"""kill -9 of a `connector worker` process during an import and during a send over Microsoft Graph: nothing
lost, nothing twice. The worker runs in its own process against the Graph stand-in; what it left behind
is finished by the same code in this process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from connector import outbox, tickets
from connector.models import Account, OutboxItem, Ticket, User, utcnow
from connector.outbox import Sender
from tests.support.app import connector_env
from tests.support.mail import counts, make_mail, run_pass, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")


@pytest.fixture
def worker_process(graph_app, graph):
    started: list[subprocess.Popen] = []

    def start(**extra: str) -> subprocess.Popen:
        rt = graph_app.extensions["connector"]
        env = connector_env(rt.settings, CONNECTOR_MICROSOFT_GRAPH_HOST=graph.url,
                            CONNECTOR_WORKER_POLL_INTERVAL_SECONDS="1", **extra)
        process = subprocess.Popen([sys.executable, "-m", "connector.cli", "worker"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(process)
        return process
    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _kill(process: subprocess.Popen) -> None:
    assert process.poll() is None, "the worker ended by itself: " + process.stderr.read().decode()[-2000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


def test_a_worker_killed_during_an_import_loses_nothing(graph_app, graph_tenant, agent, connect_graph, graph,
                                                       worker_process) -> None:
    account_id, address = connect_graph(graph_app, graph_tenant, agent)
    with graph_app.extensions["connector"].db.session() as session:
        account = session.get(Account, account_id)
        account.post_import_action, account.move_to_folder = "move", "Done"
    total = 40
    for i in range(total):
        graph.deliver(address, make_mail(to=address, subject=f"Backlog {i}"))
    graph.delay(address, 0.1)  # slow enough to be killed between batches of 5
    process = worker_process(CONNECTOR_MAIL_FETCH_BATCH_SIZE="5")
    wait_until(lambda: counts(graph_app, account_id)[0] >= 10, timeout=60)
    _kill(process)
    imported = counts(graph_app, account_id)[0]
    assert imported < total, "the import finished before the kill: nothing was tested"
    graph.delay(address, 0)
    with graph_app.extensions["connector"].db.session() as session:  # the dead worker's lease runs out
        session.execute(update(Account).where(Account.id == account_id).values(lease_owner=None,
                                                                               lease_expires_at=None))
    _import_the_rest(graph_app, account_id)
    assert counts(graph_app, account_id) == (total, total)  # every mail once: no loss, no duplicate
    assert graph.messages(address, "inbox") == []
    done = graph.messages(address, graph.folder_id(address, "Done"))
    assert sorted(m.internet_message_id for m in done) == sorted(
        {m.internet_message_id for m in done})  # each moved once
    assert len(done) == total


def _import_the_rest(app, account_id: int) -> None:
    """Passes until nothing new, as the worker runs them: a pass that Graph throttles (the dead worker's
    requests still count against the app's limit) waits the Retry-After it was told, then goes on."""
    from connector.sync.errors import SyncError

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if not run_pass(app, account_id).imported:
                return
        except SyncError as exc:
            if exc.retry_after is None or exc.retry_after > 30:
                raise
            time.sleep(exc.retry_after)
    raise AssertionError("the import did not finish within 60 s")


def test_a_worker_killed_during_a_send_sends_once(graph_app, graph_tenant, agent, connect_graph, graph,
                                                 worker_process) -> None:
    rt = graph_app.extensions["connector"]
    account_id, address = connect_graph(graph_app, graph_tenant, agent)
    graph.deliver(address, make_mail(to=address, subject="Please answer"))
    assert run_pass(graph_app, account_id).imported == 1
    with rt.db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.account_id == account_id))
        user = session.get(User, agent.id)
        reply = outbox.queue_reply(session, tickets.get_ticket(session, user, ticket.id), user, "Answered.")
        session.flush()
        message_id = reply.message_id
    graph.delay(address, 3.0)  # every request of this mailbox takes 3 s: sendMail is in flight when the kill comes

    def state() -> str:
        with rt.db.session() as session:
            return session.scalar(select(OutboxItem.state).where(OutboxItem.account_id == account_id))
    process = worker_process()
    wait_until(lambda: state() == "sending", timeout=30)
    time.sleep(1.0)  # the request has reached the stand-in, which sends after its delay
    _kill(process)
    wait_until(lambda: len(graph.sent(address)) == 1, timeout=10)  # Graph took it; the worker never heard
    assert state() == "sending"
    graph.delay(address, 0)
    with rt.db.session() as session:  # the claim of the dead worker runs out
        session.execute(update(OutboxItem).where(OutboxItem.account_id == account_id)
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    Sender(rt, "recovering").send_due(lambda: False)
    Sender(rt, "recovering").send_due(lambda: False)
    sent = graph.sent_mail(address)
    assert [m.message_id for m in sent] == [message_id]  # exactly once
    with rt.db.session() as session:
        item = session.scalar(select(OutboxItem).where(OutboxItem.account_id == account_id))
        assert item.state == "sent" and "found in the sent folder" in item.server_reply
