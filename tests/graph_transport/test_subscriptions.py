"""Change notifications end to end: the stand-in validates and calls the app's hooks over HTTPS, the
manager creates, renews, reauthorizes and recreates, and only notifications with the right secret count."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select, text

from connector.mail.graph import notify_store
from connector.mail.graph.subscriptions import LIFETIME_MINUTES, SubscriptionManager, public_https_problem
from connector.models import GraphSubscription, utcnow
from tests.support.mail import make_mail

pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")


class Clock:
    """The manager's clock: now plus what a test moves it on by. Only ours moves: the stand-in's stays
    with the test IdP's, whose tokens would look expired to a stand-in in the future."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self):
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def push(graph, hooks_app, add_account, rt_of, clock, mailbox, alice):
    """(manager, account id, runtime) for alice's mailbox."""
    rt = rt_of(hooks_app)
    manager = SubscriptionManager(rt.db, hooks_app.config["BASE_URL"], allow_private_hosts=True, clock=clock)
    return manager, add_account(hooks_app, alice), rt


def row_of(rt, account_id) -> GraphSubscription | None:
    with rt.db.session() as session:
        return notify_store.get(session, account_id)


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def has_news(rt, account_id) -> bool:
    with rt.db.session() as session:
        return account_id in notify_store.accounts_with_news(session)


def subscription_calls(graph):
    return [(r.method, r.path.rsplit("/subscriptions", 1)[1], r.status) for r in graph.requests_for()
            if "/subscriptions" in r.path]


def test_a_subscription_is_validated_and_its_notifications_mark_news(graph, push, mailbox, alice) -> None:
    manager, account_id, rt = push
    state = manager.maintain(account_id, mailbox, "Inbox")
    assert state.active and state.read_now  # read once after subscribing: nothing falls between
    [sub] = graph.subscriptions(alice)
    base = manager.base_url
    assert (sub.notification_url, sub.lifecycle_url) == (f"{base}/hooks/graph/notifications",
                                                         f"{base}/hooks/graph/lifecycle")
    assert sub.change_types == {"created"} and sub.folder_id == graph.folder_id(alice, "inbox")
    row = row_of(rt, account_id)
    assert row.subscription_id == sub.sub_id and row.client_state_hash == notify_store.state_hash(sub.client_state)
    with rt.db.engine.connect() as connection:  # the secret itself is nowhere in the database
        dumped = repr(connection.execute(text("SELECT * FROM graph_subscriptions")).all())
    assert sub.client_state not in dumped and len(sub.client_state) >= 40
    rt.wakeup.clear()
    graph.deliver(alice, make_mail(to=alice, subject="Ping"))
    assert wait_for(lambda: has_news(rt, account_id))
    assert rt.wakeup.is_set()
    with rt.db.session() as session:
        assert notify_store.take_news(session, account_id)
    with rt.db.session() as session:
        assert not notify_store.take_news(session, account_id)
    assert manager.maintain(account_id, mailbox, "Inbox") == type(state)(True, False)  # nothing to do
    assert [c[0] for c in subscription_calls(graph)] == ["POST"]


def test_a_wrong_client_state_is_ignored(graph, push, mailbox, alice, caplog) -> None:
    manager, account_id, rt = push
    manager.maintain(account_id, mailbox, "Inbox")
    [sub] = graph.subscriptions(alice)
    caplog.set_level(logging.INFO)
    url = manager.base_url + "/hooks/graph/notifications"
    for state in ("forged", sub.client_state[:-1], sub.client_state + "x", None, 7):
        note = {"value": [{"subscriptionId": sub.sub_id, "clientState": state, "changeType": "created",
                           "resource": "Users/x/Messages/y"}]}
        answer = requests.post(url, json=note, verify=str(graph.ca.ca_path), timeout=10)
        assert answer.status_code == 202  # the same answer as a good one: a stranger learns nothing
    assert not has_news(rt, account_id)
    warnings = [r.getMessage() for r in caplog.records if "clientState did not match" in r.getMessage()]
    assert len(warnings) == 5 and sub.sub_id in warnings[0]  # one line per request
    assert not any(sub.client_state[:20] in r.getMessage() or "forged" in r.getMessage() for r in caplog.records)
    good = {"value": [{"subscriptionId": sub.sub_id, "clientState": sub.client_state, "changeType": "created"}]}
    assert requests.post(url, json=good, verify=str(graph.ca.ca_path), timeout=10).status_code == 202
    assert has_news(rt, account_id)


def test_renewal_well_before_expiry(graph, push, clock, mailbox, alice) -> None:
    manager, account_id, rt = push
    manager.maintain(account_id, mailbox, "Inbox")
    first_expiry = row_of(rt, account_id).expires_at
    clock.advance(LIFETIME_MINUTES * 60 / 2 - 3600)  # more than half left: nothing to do
    assert manager.maintain(account_id, mailbox, "Inbox").active
    assert [c[0] for c in subscription_calls(graph)] == ["POST"]
    clock.advance(2 * 3600)  # under half left (about 34 hours): renewed
    state = manager.maintain(account_id, mailbox, "Inbox")
    assert state.active and not state.read_now
    assert [c[:1] + c[2:] for c in subscription_calls(graph)] == [("POST", 201), ("PATCH", 200)]
    row = row_of(rt, account_id)
    [sub] = graph.subscriptions(alice)
    assert row.expires_at > first_expiry + timedelta(hours=30)
    assert row.expires_at == sub.expiration.replace(tzinfo=None)
    graph.advance(LIFETIME_MINUTES * 60 + 60)  # Graph past the old expiry: still alive thanks to renewal
    graph.deliver(alice, make_mail(to=alice))
    assert wait_for(lambda: has_news(rt, account_id))


def test_lifecycle_events(graph, push, mailbox, alice) -> None:
    manager, account_id, rt = push
    manager.maintain(account_id, mailbox, "Inbox")
    [sub] = graph.subscriptions(alice)
    with rt.db.session() as session:
        notify_store.take_news(session, account_id)
    # reauthorizationRequired, with notifications held back until we reauthorize
    graph.send_lifecycle(sub.sub_id, "reauthorizationRequired", pause=True)
    assert wait_for(lambda: row_of(rt, account_id).lifecycle_event == "reauthorizationRequired")
    graph.deliver(alice, make_mail(to=alice, subject="lost while paused"))
    state = manager.maintain(account_id, mailbox, "Inbox")
    assert state.active and state.read_now  # the folder is read: what was not notified is found
    assert subscription_calls(graph)[-1][:2] == ("POST", f"/{sub.sub_id}/reauthorize")
    assert not sub.paused and row_of(rt, account_id).lifecycle_event is None
    # missed: read the folder, keep the subscription
    graph.send_lifecycle(sub.sub_id, "missed")
    assert wait_for(lambda: row_of(rt, account_id).lifecycle_event == "missed")
    assert has_news(rt, account_id)
    assert manager.maintain(account_id, mailbox, "Inbox").read_now
    assert [s.sub_id for s in graph.subscriptions(alice)] == [sub.sub_id]
    # subscriptionRemoved: a new subscription with a new secret
    graph.send_lifecycle(sub.sub_id, "subscriptionRemoved")
    assert wait_for(lambda: row_of(rt, account_id).lifecycle_event == "subscriptionRemoved")
    state = manager.maintain(account_id, mailbox, "Inbox")
    [new] = graph.subscriptions(alice)
    assert state.active and state.read_now and new.sub_id != sub.sub_id and new.client_state != sub.client_state
    assert row_of(rt, account_id).subscription_id == new.sub_id
    with rt.db.session() as session:
        notify_store.take_news(session, account_id)
    graph.deliver(alice, make_mail(to=alice))
    assert wait_for(lambda: has_news(rt, account_id))


def test_lifecycle_notifications_need_the_secret_too(graph, push, mailbox, alice) -> None:
    manager, account_id, rt = push
    manager.maintain(account_id, mailbox, "Inbox")
    [sub] = graph.subscriptions(alice)
    url = manager.base_url + "/hooks/graph/lifecycle"
    forged = {"value": [{"subscriptionId": sub.sub_id, "clientState": "guess", "lifecycleEvent": "subscriptionRemoved"}]}
    assert requests.post(url, json=forged, verify=str(graph.ca.ca_path), timeout=10).status_code == 202
    assert row_of(rt, account_id).lifecycle_event is None
    assert manager.maintain(account_id, mailbox, "Inbox") .active
    assert [s.sub_id for s in graph.subscriptions(alice)] == [sub.sub_id]  # not recreated on a stranger's word


def test_a_gone_subscription_is_created_again(graph, push, clock, mailbox, alice) -> None:
    manager, account_id, rt = push
    manager.maintain(account_id, mailbox, "Inbox")
    [sub] = graph.subscriptions(alice)
    graph.expire_subscription(sub.sub_id)  # Graph lost it; we learn it when renewing
    clock.advance(LIFETIME_MINUTES * 60 / 2 + 60)
    state = manager.maintain(account_id, mailbox, "Inbox")
    [new] = graph.subscriptions(alice)
    assert state.active and state.read_now and new.sub_id != sub.sub_id
    assert [c[0] + str(c[2]) for c in subscription_calls(graph)] == ["POST201", "PATCH404", "POST201"]
    with rt.db.session() as session:  # and one that ran out while the worker was down
        notify_store.get(session, account_id).expires_at = clock() - timedelta(minutes=1)
    state = manager.maintain(account_id, mailbox, "Inbox")
    [newest] = graph.subscriptions(alice)  # the old one deleted, in case Graph's clock is behind ours
    assert state.read_now and newest.sub_id not in (sub.sub_id, new.sub_id)


def test_changing_the_folder_moves_the_subscription(graph, push, mailbox, alice) -> None:
    manager, account_id, rt = push
    manager.maintain(account_id, mailbox, "Inbox")
    graph.create_folder(alice, "Support")
    manager.maintain(account_id, mailbox, "Support")
    [sub] = graph.subscriptions(alice)
    assert sub.folder_id == graph.folder_id(alice, "Support")
    assert [c[0] for c in subscription_calls(graph)] == ["POST", "DELETE", "POST"]


def test_a_failed_validation_falls_back_to_polling_and_retries_later(graph, hooks_app, add_account, rt_of,
                                                                      clock, mailbox, alice) -> None:
    rt = rt_of(hooks_app)
    from tests.support.net import free_port
    nowhere = f"https://127.0.0.1:{free_port()}"  # base_url the stand-in cannot reach
    manager = SubscriptionManager(rt.db, nowhere, allow_private_hosts=True, clock=clock)
    account_id = add_account(hooks_app, alice)
    state = manager.maintain(account_id, mailbox, "Inbox")
    assert not state.active and state.read_now
    assert state.reason.startswith(f"Change notifications for {alice} could not be set up, so new mail is found "
                                   "by polling")
    assert graph.subscriptions(alice) == []
    assert not manager.maintain(account_id, mailbox, "Inbox").active
    assert len(subscription_calls(graph)) == 1  # not tried again on every pass
    manager.base_url = hooks_app.config["BASE_URL"]  # reachable now (a proxy fixed, say)
    clock.advance(16 * 60)
    assert manager.maintain(account_id, mailbox, "Inbox").active


def test_no_subscription_without_public_https_or_for_a_shared_mailbox(graph, hooks_app, add_account, rt_of,
                                                                       open_mailbox, shared_setup, graph_org,
                                                                       mailbox, alice) -> None:
    rt = rt_of(hooks_app)
    local = SubscriptionManager(rt.db, "http://localhost:5000")
    state = local.maintain(add_account(hooks_app, alice), mailbox, "Inbox")
    assert not state.active and "is not HTTPS" in state.reason and "polling" in state.reason
    delegate, shared, token = shared_setup
    graph_org.idp.grant_mailbox_access(delegate, shared)
    shared_box = open_mailbox(shared, token, shared=True, user=delegate)
    public = SubscriptionManager(rt.db, hooks_app.config["BASE_URL"], allow_private_hosts=True)
    state = public.maintain(add_account(hooks_app, shared), shared_box, "Inbox")
    assert not state.active and "shared mailbox" in state.reason
    assert subscription_calls(graph) == []


@pytest.mark.parametrize("url,problem", [
    ("https://helpdesk.example.com", None), ("https://203.0.113.9:8443", "not reachable"),
    ("https://8.8.8.8", None), ("https://127.0.0.1:5000", "not reachable"), ("https://localhost", "not reachable"),
    ("https://desk.local", "not reachable"), ("https://intranet", "not reachable"), ("https://[::1]", "not reachable"),
    ("http://helpdesk.example.com", "not HTTPS"), ("", "not HTTPS"), ("https://10.1.2.3", "not reachable"),
])
def test_public_https(url, problem) -> None:
    found = public_https_problem(url)
    assert (found is None) if problem is None else (problem in found)


def test_disconnecting_deletes_the_subscription(graph, push, mailbox, alice) -> None:
    manager, account_id, rt = push
    manager.maintain(account_id, mailbox, "Inbox")
    manager.drop(account_id, mailbox)
    assert graph.subscriptions(alice) == [] and row_of(rt, account_id) is None
    with rt.db.session() as session:
        assert session.scalars(select(GraphSubscription)).all() == []
