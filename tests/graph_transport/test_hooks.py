"""The hooks Microsoft calls, on their own: the validation handshake, bounds, and what a notification
may change (only with its subscription's secret)."""
from __future__ import annotations

import io
from urllib.parse import quote

import pytest

from connector.mail.graph import notify_store
from connector.mail.graph.notify_store import MAX_ITEMS
from connector.models import Account, GraphSubscription

HOOKS = ("/hooks/graph/notifications", "/hooks/graph/lifecycle")


@pytest.fixture
def subscribed(app):
    """(account id, subscription id, secret) of a mailbox with a stored subscription."""
    rt = app.extensions["connector"]
    secret, hashed = notify_store.new_client_state()
    with rt.db.session() as session:
        account = Account(address="desk@hooks.test", transport="graph")
        session.add(account)
        session.flush()
        session.add(GraphSubscription(account_id=account.id, subscription_id="sub-1", resource="me/messages",
                                      client_state_hash=hashed))
        return account.id, "sub-1", secret


def news(app) -> list[int]:
    with app.extensions["connector"].db.session() as session:
        return notify_store.accounts_with_news(session)


@pytest.mark.parametrize("path", HOOKS)
def test_the_validation_token_comes_back_decoded_as_plain_text(client, path) -> None:
    token = "Validation: Testing client application reachability for subscription Request-Id: 1+2 & é"
    answer = client.post(f"{path}?validationToken={quote(token, safe='')}", data=b"",
                         content_type="text/plain; charset=utf-8")  # no CSRF token, no session
    assert answer.status_code == 200 and answer.get_data(as_text=True) == token
    assert answer.mimetype == "text/plain" and answer.headers["X-Content-Type-Options"] == "nosniff"
    assert client.post(f"{path}?validationToken={'x' * 2000}").status_code == 400


@pytest.mark.parametrize("path", HOOKS)
def test_bounds(client, path) -> None:
    assert client.post(path, data=b"value=1", content_type="application/x-www-form-urlencoded").status_code == 415
    assert client.post(path, data=b"{not json", content_type="application/json").status_code == 400
    assert client.post(path, json={"value": "nope"}).status_code == 400
    assert client.post(path, json=[1, 2]).status_code == 400
    big = b'{"value": [' + b'{"subscriptionId": "x"},' * 60000 + b'{}]}'
    assert client.post(path, data=big, content_type="application/json").status_code == 413
    assert client.get(path).status_code == 405


@pytest.mark.parametrize("path", HOOKS)
def test_a_body_without_content_length_is_bounded_too(client, path) -> None:
    def chunked(data: bytes):
        return client.post(path, input_stream=io.BytesIO(data), content_type="application/json",
                           headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    assert chunked(b'{"value": []}').status_code == 202
    assert chunked(b'{"value": [' + b'{"subscriptionId": "x"},' * 60000 + b'{}]}').status_code == 413


def test_a_notification_with_its_secret_marks_news_and_wakes_the_worker(app, client, subscribed) -> None:
    account_id, sub_id, secret = subscribed
    rt = app.extensions["connector"]
    rt.wakeup.clear()
    stranger = {"value": [{"subscriptionId": sub_id, "clientState": "guess"},
                          {"subscriptionId": "no-such-sub", "clientState": secret}, "junk", {}]}
    assert client.post(HOOKS[0], json=stranger).status_code == 202
    assert news(app) == [] and not rt.wakeup.is_set()
    good = {"value": [{"subscriptionId": sub_id, "clientState": secret, "changeType": "created"}] * 3}
    assert client.post(HOOKS[0], json=good).status_code == 202
    assert news(app) == [account_id] and rt.wakeup.is_set()
    with rt.db.session() as session:
        first = notify_store.get(session, account_id).news_at
    assert client.post(HOOKS[0], json=good).status_code == 202  # again: no new write while news waits
    with rt.db.session() as session:
        assert notify_store.get(session, account_id).news_at == first
        assert notify_store.take_news(session, account_id)


def test_lifecycle_events_are_kept_strongest_first(app, client, subscribed) -> None:
    account_id, sub_id, secret = subscribed

    def event(name):
        body = {"value": [{"subscriptionId": sub_id, "clientState": secret, "lifecycleEvent": name}]}
        assert client.post(HOOKS[1], json=body).status_code == 202

    event("missed")
    event("subscriptionRemoved")
    event("reauthorizationRequired")  # weaker than a removal, which must still be handled
    event("somethingNew")  # unknown: ignored
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        assert notify_store.take_lifecycle(session, account_id) == "subscriptionRemoved"
        assert notify_store.take_lifecycle(session, account_id) is None
    assert news(app) == [account_id]
    # a change notification posted to the lifecycle URL changes nothing there
    body = {"value": [{"subscriptionId": sub_id, "clientState": secret, "changeType": "created"}]}
    assert client.post(HOOKS[1], json=body).status_code == 202
    with rt.db.session() as session:
        assert notify_store.take_lifecycle(session, account_id) is None


def test_only_so_many_items_are_read_from_one_request(app, client, subscribed) -> None:
    account_id, sub_id, secret = subscribed
    body = {"value": [{"subscriptionId": f"s{i}", "clientState": "x"} for i in range(MAX_ITEMS)]
            + [{"subscriptionId": sub_id, "clientState": secret}]}
    assert client.post(HOOKS[0], json=body).status_code == 202
    assert news(app) == []  # the item past the limit was not read
