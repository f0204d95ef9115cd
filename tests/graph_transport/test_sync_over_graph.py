"""The product's own sync, outbox and worker over the Graph transport, against the Graph stand-in: a mailbox
connected with "Microsoft Graph" on the connect form, tokens from tokens.py (msal + the test IdP)."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from connector import outbox, tickets
from connector.models import Account, Article, OutboxItem, Ticket, User
from connector.outbox import Sender
from connector.worker import Worker
from tests.support.app import csrf_token, login
from tests.support.mail import counts, make_mail, run_pass, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")


def _account(app, account_id: int) -> Account:
    with app.extensions["connector"].db.session() as session:
        account = session.get(Account, account_id)
        session.expunge(account)
        return account


def _value_gets(graph, address: str) -> int:
    return sum(1 for r in graph.requests_for(address) if r.method == "GET" and r.path.endswith("/$value"))


def test_connect_with_graph_records_the_transport_and_imports(graph_app, graph_tenant, agent, connect_graph,
                                                              graph) -> None:
    account_id, address = connect_graph(graph_app, graph_tenant, agent)
    account = _account(graph_app, account_id)
    assert account.transport == "graph" and account.status == "connected"
    for i in range(3):
        graph.deliver(address, make_mail(to=address, subject=f"Over Graph {i}"))
    result = run_pass(graph_app, account_id)
    assert (result.imported, result.duplicates) == (3, 0)
    assert counts(graph_app, account_id) == (3, 3)
    cursor = _account(graph_app, account_id).sync_cursor
    assert cursor and "/messages/delta" in cursor  # the delta link, kept for the next pass and restarts
    assert run_pass(graph_app, account_id).imported == 0  # nothing new: no duplicates
    graph.deliver(address, make_mail(to=address, subject="Later"))
    graph.clear_log()
    assert run_pass(graph_app, account_id).imported == 1
    assert _value_gets(graph, address) == 1  # only the new mail was downloaded


def test_post_import_move_and_mark_read_run_over_graph(graph_app, graph_tenant, agent, connect_graph, graph) -> None:
    account_id, address = connect_graph(graph_app, graph_tenant, agent)
    with graph_app.extensions["connector"].db.session() as session:
        account = session.get(Account, account_id)
        account.post_import_action, account.move_to_folder = "move", "Archive/Helpdesk"
    for i in range(4):
        graph.deliver(address, make_mail(to=address, subject=f"Move me {i}"))
    assert run_pass(graph_app, account_id).imported == 4
    assert graph.messages(address, "inbox") == []
    moved = graph.messages(address, graph.folder_id(address, "Helpdesk"))
    assert len(moved) == 4
    # moved out and not back: the next pass finds nothing
    assert run_pass(graph_app, account_id).imported == 0
    with graph_app.extensions["connector"].db.session() as session:
        session.get(Account, account_id).post_import_action = "mark_read"
    graph.deliver(address, make_mail(to=address, subject="Read me"))
    assert run_pass(graph_app, account_id).imported == 1
    [left] = graph.messages(address, "inbox")
    assert left.is_read


def test_an_expired_delta_token_reads_the_folder_again_without_duplicates(graph_app, graph_tenant, agent,
                                                                        connect_graph, graph) -> None:
    account_id, address = connect_graph(graph_app, graph_tenant, agent)
    for i in range(5):
        graph.deliver(address, make_mail(to=address, subject=f"Before {i}"))
    assert run_pass(graph_app, account_id).imported == 5
    graph.expire_delta_tokens(address)
    graph.deliver(address, make_mail(to=address, subject="After the expiry"))
    graph.clear_log()
    result = run_pass(graph_app, account_id)
    assert result.imported == 1
    assert counts(graph_app, account_id) == (6, 6)
    assert _value_gets(graph, address) == 1  # known mails are not downloaded again


def test_a_reply_goes_out_as_mime_and_the_customers_answer_threads(graph_app, graph_tenant, agent, connect_graph,
                                                                   graph) -> None:
    rt = graph_app.extensions["connector"]
    account_id, address = connect_graph(graph_app, graph_tenant, agent)
    graph.deliver(address, make_mail(to=address, sender="customer@example.net", subject="Printer broken"))
    assert run_pass(graph_app, account_id).imported == 1
    with rt.db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.account_id == account_id))
        user = session.get(User, agent.id)
        reply = outbox.queue_reply(session, tickets.get_ticket(session, user, ticket.id), user, "We are on it.")
        session.flush()
        reply_id, ticket_id, number = reply.message_id, ticket.id, ticket.number
    assert Sender(rt, "test").send_due(lambda: False)
    [sent] = graph.sent_mail(address)
    assert sent.message_id == reply_id and "customer@example.net" in sent.recipients
    raw = sent.raw
    assert f"Message-ID: {reply_id}".encode() in raw and f"[#{number}]".encode() in raw
    assert b"In-Reply-To: <" in raw
    with rt.db.session() as session:
        item = session.scalar(select(OutboxItem).where(OutboxItem.account_id == account_id))
        assert item.state == "sent" and "sendMail" in (item.server_reply or "")
    # the copy in Sent Items carries our Message-ID: what the recovery after a crash looks for
    sent_items = graph.messages(address, "sentitems")
    assert [m.internet_message_id for m in sent_items] == [reply_id]
    # the customer answers the reply: the answer joins the ticket
    answer = make_mail(to=address, sender="customer@example.net", subject=f"Re: [#{number}] Printer broken",
                       in_reply_to=reply_id)
    graph.deliver(address, answer)
    assert run_pass(graph_app, account_id).imported == 1
    with rt.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Ticket).where(Ticket.account_id == account_id)) == 1
        assert session.scalar(select(func.count()).select_from(Article).where(Article.ticket_id == ticket_id)) == 3


@pytest.fixture
def graph_worker(graph_app):
    rt = graph_app.extensions["connector"]
    started = []

    def start():
        worker = Worker(rt, name="graph-test")
        worker.start_background()
        started.append(worker)
        return worker
    yield start
    for worker in started:
        worker.stop(wait=True, timeout=10)


def test_the_worker_reads_new_mail_within_seconds_by_delta_polling(graph_app, graph_tenant, agent, connect_graph,
                                                                  graph, graph_worker) -> None:
    account_id, address = connect_graph(graph_app, graph_tenant, agent)
    graph_worker()
    wait_until(lambda: _account(graph_app, account_id).last_sync_at is not None, timeout=15)
    delivered = time.monotonic()
    graph.deliver(address, make_mail(to=address, subject="Quick"))
    wait_until(lambda: counts(graph_app, account_id)[0] == 1, timeout=10)
    assert time.monotonic() - delivered < 8


def test_revoking_one_mailbox_leaves_the_others_running(graph_app, graph_tenant, agent, connect_graph, graph, idp,
                                                       graph_worker) -> None:
    revoked_id, revoked = connect_graph(graph_app, graph_tenant, agent)
    other_id, other = connect_graph(graph_app, graph_tenant, agent)
    graph.verifier.enforce_revocation = True  # continuous access evaluation: a revoked session fails at once
    idp.revoke(revoked, code=50173)
    graph_worker()
    graph.deliver(revoked, make_mail(to=revoked, subject="Never read"))
    graph.deliver(other, make_mail(to=other, subject="Read"))
    wait_until(lambda: _account(graph_app, revoked_id).status == "needs_reconnect", timeout=15)
    wait_until(lambda: counts(graph_app, other_id)[0] == 1, timeout=15)
    account = _account(graph_app, revoked_id)
    assert "50173" in account.last_error and "Traceback" not in account.last_error
    assert counts(graph_app, revoked_id) == (0, 0)
    assert _account(graph_app, other_id).status == "connected"


def test_throttling_one_mailbox_backs_off_that_mailbox_only(graph_app, graph_tenant, agent, connect_graph, graph,
                                                           graph_worker) -> None:
    slow_id, slow = connect_graph(graph_app, graph_tenant, agent)
    fast_id, fast = connect_graph(graph_app, graph_tenant, agent)
    graph.throttle(slow, seconds=600, retry_after=120)
    graph_worker()
    wait_until(lambda: _account(graph_app, slow_id).status == "error", timeout=15)
    account = _account(graph_app, slow_id)
    assert "throttling" in account.last_error and "120 s" in account.last_error
    from connector.models import utcnow
    assert (account.next_attempt_at - utcnow()).total_seconds() > 100  # Retry-After is honoured
    for i in range(3):  # meanwhile the other mailbox is read as fast as ever
        graph.deliver(fast, make_mail(to=fast, subject=f"Fast {i}"))
        wait_until(lambda: counts(graph_app, fast_id)[0] == i + 1, timeout=8)
    calls = len(graph.requests_for(slow))
    time.sleep(3)
    assert len(graph.requests_for(slow)) == calls  # not hammered while it waits


@pytest.fixture
def push_app(make_app, ca, graph, monkeypatch):
    """The app served over HTTPS on 127.0.0.1 (the test CA), polling only every 60 s: new mail within
    seconds can then only come from Graph's change notifications to its hooks. The loopback address
    stands in for a public host (the one check bypassed: Graph itself could never reach it)."""
    import threading

    from werkzeug.serving import make_server

    from connector.mail.graph import subscriptions
    from tests.support.net import free_port

    monkeypatch.setattr(subscriptions, "public_https_problem", lambda base_url: None)
    port = free_port()
    app = make_app(app={"base_url": f"https://127.0.0.1:{port}"},
                   microsoft={"graph_host": graph.url, "imap_host": "127.0.0.1", "imap_port": 9},
                   worker={"poll_interval_seconds": 60})
    server = make_server("127.0.0.1", port, app, threaded=True)
    server.socket = ca.server_context("connector").wrap_socket(server.socket, server_side=True,
                                                                do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield app
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_change_notifications_bring_new_mail_without_polling(push_app, make_org, agent, connect_graph,
                                                            graph) -> None:
    from tests.idp.model import DEFAULT_PERMISSIONS
    from tests.support.graph import GRAPH_PERMISSIONS
    tenant = make_org(redirect_uri=push_app.extensions["connector"].settings.callback_url,
                      permissions=list(DEFAULT_PERMISSIONS) + GRAPH_PERMISSIONS)
    account_id, address = connect_graph(push_app, tenant, agent)
    worker = Worker(push_app.extensions["connector"], name="push-test")
    worker.start_background()
    try:
        wait_until(lambda: graph.subscriptions(address), timeout=15)
        wait_until(lambda: _account(push_app, account_id).last_sync_at is not None, timeout=15)
        time.sleep(1)
        for i in range(2):
            delivered = time.monotonic()
            graph.deliver(address, make_mail(to=address, subject=f"Pushed {i}"))
            wait_until(lambda: counts(push_app, account_id)[0] == i + 1, timeout=15)
            assert time.monotonic() - delivered < 10  # the poll would take up to 60 s
    finally:
        worker.stop(wait=True, timeout=10)
    [subscription] = graph.subscriptions(address)
    assert subscription.notification_url.endswith("/hooks/graph/notifications")


def test_a_poison_mail_is_quarantined_over_graph_and_the_others_arrive(graph_app, graph_tenant, agent, admin,
                                                                      connect_graph, graph, monkeypatch) -> None:
    import connector.parse_pool as parsing_module
    from connector.models import ImportFailure
    from tests.sync.test_sync_pass import parse_or_choke

    monkeypatch.setattr(parsing_module, "_parse_one", parse_or_choke)
    account_id, address = connect_graph(graph_app, graph_tenant, agent)
    graph.deliver(address, make_mail(to=address, subject="Poison", headers={"X-Poison": "yes"}))
    graph.deliver(address, make_mail(to=address, subject="Fine"))
    outcomes = [run_pass(graph_app, account_id) for _ in range(3)]
    assert [o.failed for o in outcomes] == [1, 1, 0] and outcomes[2].quarantined == 1
    [poison] = [m for m in graph.messages(address) if b"X-Poison" in m.raw]
    with graph_app.extensions["connector"].db.session() as session:
        failure = session.scalar(select(ImportFailure).where(ImportFailure.account_id == account_id))
        assert failure.quarantined and failure.attempts == 3 and failure.raw_sha256
        # counted by its Graph id: the numbers of a Graph listing start again at each pass
        assert failure.message_key in (poison.immutable_id, poison.rest_id) and failure.uid is None
    assert counts(graph_app, account_id) == (1, 1)
    graph.deliver(address, make_mail(to=address, subject="Next"))
    assert run_pass(graph_app, account_id).imported == 1
    assert run_pass(graph_app, account_id).failed == 0  # moved past the quarantined mail for good
    assert counts(graph_app, account_id) == (2, 2)
    # fixed (here: the parser no longer chokes), an admin imports it again: the folder is listed again
    monkeypatch.undo()
    client = graph_app.test_client()
    login(client, admin.email)
    page = client.get("/admin/quarantine").get_data(as_text=True)
    assert "(Microsoft Graph)" in page
    again = client.post(f"/admin/quarantine/{failure.id}/retry", data={"csrf_token": csrf_token(page)})
    assert again.status_code == 302
    result = run_pass(graph_app, account_id)
    assert result.imported == 1 and result.failed == 0
    assert counts(graph_app, account_id) == (3, 3)


def test_a_lost_sendmail_answer_is_settled_in_sent_items_not_sent_again(graph_app, graph_tenant, agent,
                                                                        connect_graph, graph, monkeypatch) -> None:
    from connector.transport import graph as graph_transport

    monkeypatch.setattr(graph_transport, "SENT_LOOKUP_WAITS", (0.2, 0.5))
    rt = graph_app.extensions["connector"]
    account_id, address = connect_graph(graph_app, graph_tenant, agent)
    graph.deliver(address, make_mail(to=address, subject="Lost answer"))
    assert run_pass(graph_app, account_id).imported == 1
    with rt.db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.account_id == account_id))
        user = session.get(User, agent.id)
        outbox.queue_reply(session, tickets.get_ticket(session, user, ticket.id), user, "Sent once.")
    graph.fail_next(status=504, method="POST", path="/sendMail", after=True)  # Graph sends, the answer is lost
    assert Sender(rt, "test").send_due(lambda: False)
    assert Sender(rt, "test").send_due(lambda: False)
    assert len(graph.sent_mail(address)) == 1
    with rt.db.session() as session:
        item = session.scalar(select(OutboxItem).where(OutboxItem.account_id == account_id))
        assert item.state == "sent" and "found in Sent Items" in item.server_reply


def test_a_move_that_did_not_run_is_caught_up_at_the_next_pass(graph_app, graph_tenant, agent, connect_graph,
                                                              graph) -> None:
    """The delta cursor moves past imported mail, so a move that failed (or a worker killed before it) is
    caught up by listing the folder: no imported mail is left behind in it."""
    account_id, address = connect_graph(graph_app, graph_tenant, agent)
    with graph_app.extensions["connector"].db.session() as session:
        account = session.get(Account, account_id)
        account.post_import_action, account.move_to_folder = "move", "Done"
    for i in range(3):
        graph.deliver(address, make_mail(to=address, subject=f"Stuck {i}"))
    graph.fail_next(count=100, status=429, retry_after=1, method="POST", path="/move")
    assert run_pass(graph_app, account_id).imported == 3
    assert len(graph.messages(address, "inbox")) == 3  # imported, not moved
    with graph.limits.lock:
        graph.limits.faults.clear()
    graph.deliver(address, make_mail(to=address, subject="Not yet imported"))
    assert run_pass(graph_app, account_id).imported == 1
    assert graph.messages(address, "inbox") == []
    assert len(graph.messages(address, graph.folder_id(address, "Done"))) == 4
