"""Graph's limits met politely: 4 requests at a time per mailbox, throttling per mailbox, bounded
retries of transient failures, one token refresh on 401."""
from __future__ import annotations

import logging
import threading

import pytest

from connector.mail.graph import GraphError
from tests.support.mail import make_mail

pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")


def fill(graph, address: str, count: int) -> None:
    for i in range(count):
        graph.deliver(address, make_mail(to=address, subject=f"Mail {i}"))


def ids_of(mailbox) -> list[str]:
    return [m.id for p in mailbox.delta_pages("inbox", None) for m in p.messages]


def test_fetches_never_exceed_four_concurrent_requests_per_mailbox(graph, open_mailbox, alice, graph_org) -> None:
    fill(graph, alice, 16)
    token = graph_org.token_source(alice)
    # two clients of the same mailbox in one process (the sync and the outbox), each fetching at once
    first, second = open_mailbox(alice, token), open_mailbox(alice, token)
    ids = ids_of(first)
    graph.delay(alice, 0.25)  # each request holds its slot a while: more than 4 at once would be refused
    graph.clear_log()
    results: dict[str, list] = {}

    def fetch(name, mailbox):
        results[name] = list(mailbox.fetch_mime(ids))
    threads = [threading.Thread(target=fetch, args=(n, m)) for n, m in (("a", first), ("b", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    graph.delay(alice, 0)
    log = graph.requests_for(alice)
    assert len(log) == 32 and all(r.status == 200 for r in log), [(r.status, r.code) for r in log if r.status != 200]
    assert [k for k, _ in results["a"]] == ids and [k for k, _ in results["b"]] == ids


def test_throttling_of_one_mailbox_leaves_the_others_alone(graph, open_mailbox, alice, bob, graph_org) -> None:
    fill(graph, alice, 2)
    fill(graph, bob, 2)
    alice_box = open_mailbox(alice, graph_org.token_source(alice))
    bob_box = open_mailbox(bob, graph_org.token_source(bob))
    graph.throttle(alice, seconds=120, retry_after=17)
    graph.clear_log()
    with pytest.raises(GraphError) as throttled:
        ids_of(alice_box)
    error = throttled.value
    assert error.throttled and error.retry_after == 17 and not error.permanent and not error.reconnect
    assert "waits 17 s before using this mailbox again; other mailboxes carry on" in error.message
    assert len(graph.requests_for(alice)) == 1  # no retry, no sleeping here: the caller backs off
    assert len(ids_of(bob_box)) == 2  # meanwhile, another mailbox of the same app works
    graph.advance(121)
    assert len(ids_of(alice_box)) == 2


def test_throttling_in_the_middle_of_a_fetch_gives_what_came_before(graph, open_mailbox, alice, graph_org) -> None:
    fill(graph, alice, 6)
    mailbox = open_mailbox(alice, graph_org.token_source(alice), concurrency=1)
    ids = ids_of(mailbox)
    graph.fail_next(status=429, code="ApplicationThrottled", retry_after=5, address=alice,
                    path=ids[3][:40])
    fetched = []
    with pytest.raises(GraphError) as throttled:
        for key, raw in mailbox.fetch_mime(ids):
            fetched.append(key)
    assert fetched == ids[:3] and throttled.value.retry_after == 5


def test_503_with_retry_after_is_throttling_and_without_it_is_retried(graph, mailbox, alice) -> None:
    fill(graph, alice, 1)
    graph.fail_next(status=503, retry_after=9, address=alice)
    with pytest.raises(GraphError) as busy:
        ids_of(mailbox)
    assert busy.value.retry_after == 9 and busy.value.status == 503
    graph.clear_log()
    graph.fail_next(2, status=503, address=alice)
    graph.fail_next(1, status=502, address=alice)
    assert len(ids_of(mailbox)) == 1
    assert [r.status for r in graph.requests_for(alice)][:4] == [503, 503, 502, 200]


def test_transient_failures_are_retried_a_bounded_number_of_times(graph, mailbox, alice) -> None:
    graph.fail_next(50, status=500, address=alice)
    graph.clear_log()
    with pytest.raises(GraphError) as failed:
        ids_of(mailbox)
    assert failed.value.status == 500 and failed.value.retry_after and not failed.value.permanent
    assert len(graph.requests_for(alice)) == 1 + mailbox.http.retries


def test_a_refused_token_is_refreshed_once(graph, mailbox, alice, alice_token, caplog) -> None:
    fill(graph, alice, 1)
    caplog.set_level(logging.DEBUG)
    alice_token.override = "not-a-token.at.all"  # the cached token is refused; msal's refresh works
    assert len(ids_of(mailbox)) == 1
    assert alice_token.refreshes == 1
    alice_token.override = graph_token_for_another_audience(alice)
    alice_token.sticky = True  # even a fresh token is refused: the grant is no good any more
    mailbox.http._token = None
    with pytest.raises(GraphError) as refused:
        ids_of(mailbox)
    assert refused.value.reconnect and refused.value.auth and refused.value.code == "InvalidAuthenticationToken"
    assert "Reconnect the mailbox" in refused.value.message and alice_token.refreshes == 2
    assert "eyJ" not in refused.value.message + refused.value.detail
    ours = [r for r in caplog.records if r.name.startswith(("connector", "urllib3", "requests"))]
    assert ours and not [r for r in ours if "eyJ" in r.getMessage() or "Bearer" in r.getMessage()]


def graph_token_for_another_audience(address: str) -> str:
    """A well-formed JWT that Graph refuses: signed by nobody it trusts."""
    import jwt
    return jwt.encode({"aud": "https://outlook.office.com", "upn": address, "scp": "Mail.ReadWrite"},
                      "a-secret-nobody-at-graph-knows-of-32", algorithm="HS256")
