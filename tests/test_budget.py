"""The worker processes of connector/mail/budget.py and the parse budget of connector/parse_pool.py: an item
that overruns its budget is stopped and reported alone, a process that dies costs only its item, and the
next work still gets done. The functions the processes run are module level: they travel by name."""
from __future__ import annotations

import os
import time

import pytest

from connector import parse_pool
from connector.mail import budget
from connector.mail.parse import MailHeaders, ParsedMail
from tests.support.mail import make_mail


def square(x: int) -> int:
    return x * x


def hang_on(item: str) -> str:
    if item == "hang":
        while True:  # a busy loop: nothing short of killing the process stops it
            pass
    return item.upper()


def die_on(item: str) -> str:
    if item == "die":
        os._exit(3)
    return item.upper()


def refuse(item: str) -> str:
    raise ValueError(f"no {item}")


@pytest.fixture(scope="module")
def pool():
    one = budget.BudgetPool(2)
    yield one
    one.shutdown()


def test_results_come_back_in_item_order_across_processes(pool):
    assert pool.map(square, list(range(50)), budget=10, slice_size=7).result() == [n * n for n in range(50)]
    assert pool.map(square, [], budget=10).result() == []


def test_an_item_over_its_budget_is_stopped_and_the_others_of_its_slice_still_finish(pool):
    started = time.monotonic()
    results = pool.map(hang_on, ["a", "hang", "b", "c"], budget=1.0, slice_size=4).result()
    elapsed = time.monotonic() - started
    assert results[0] == "A" and results[2:] == ["B", "C"]
    assert isinstance(results[1], budget.Overrun) and "1 s budget" in str(results[1])
    assert elapsed < 30  # the budget, a process start and the rest of the slice: far from forever
    assert pool.map(square, [3], budget=10).result() == [9]  # a new process took the stopped one's place


def test_a_process_that_dies_costs_only_its_item(pool):
    results = pool.map(die_on, ["a", "die", "b"], budget=10, slice_size=3).result()
    assert results[0] == "A" and results[2] == "B"
    assert isinstance(results[1], budget.WorkerLost) and "exit code 3" in str(results[1])


def test_an_item_that_raises_comes_back_as_its_error(pool):
    [error] = pool.map(refuse, ["thanks"], budget=10).result()
    assert isinstance(error, RuntimeError) and str(error) == "ValueError: no thanks"


def test_many_small_jobs_from_many_threads(pool):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as threads:
        jobs = list(threads.map(lambda n: pool.map(square, [n, n + 1], budget=10).result(), range(40)))
    assert jobs == [[n * n, (n + 1) * (n + 1)] for n in range(40)]


# -- the parse budget, with the real parser --------------------------------------------------------------
def hang_or_parse(raw: bytes, max_size: int, headers: bool = True):
    """parse_pool._parse_one for a test: hangs on a marked mail (the only way to make a parse hang on purpose
    now that the parser is linear), parses any other."""
    from connector.mail.parse import parse_message

    if b"X-Test-Hang: yes" in raw:
        time.sleep(3600)
    return parse_message(raw, max_size=max_size, headers=headers)


def test_a_parse_over_the_budget_is_a_parse_timeout_and_the_batch_completes(monkeypatch):
    monkeypatch.setattr(parse_pool, "_parse_one", hang_or_parse)
    raws = [make_mail(to="s@example.com", subject="first"),
            make_mail(to="s@example.com", subject="stuck", headers={"X-Test-Hang": "yes"}),
            make_mail(to="s@example.com", subject="third")]
    started = time.monotonic()
    collect, pooled = parse_pool.start(raws, headers_only=False, max_size=1 << 20, budget=1)
    first, stuck, third = collect()
    assert pooled and time.monotonic() - started < 30
    assert isinstance(first, ParsedMail) and first.headers.subject == "first"
    assert isinstance(third, ParsedMail) and third.headers.subject == "third"
    assert isinstance(stuck, parse_pool.ParseTimeout)
    assert "1 s budget ([mail] parse_timeout_seconds)" in str(stuck)


def test_a_real_parse_longer_than_a_tiny_budget_is_stopped():
    """No hook: nobody parses 30 MB in 10 ms (its hand-over to the process does not count)."""
    big = make_mail(to="s@example.com", body="x" * (30 * 1024 * 1024))
    [result] = parse_pool.start([big], headers_only=False, max_size=64 << 20, budget=0.01)[0]()
    assert isinstance(result, parse_pool.ParseTimeout)
    [ok] = parse_pool.start([big], headers_only=True, max_size=64 << 20, budget=30)[0]()
    assert isinstance(ok, MailHeaders) and ok.size == len(big)


def test_without_worker_processes_mail_is_parsed_in_process(monkeypatch):
    def unavailable(*args, **kwargs):
        raise budget.PoolUnavailable("no fork server here")

    monkeypatch.setattr(budget.BudgetPool, "map", unavailable)
    collect, pooled = parse_pool.start([make_mail(to="s@example.com", subject="here")], headers_only=False,
                                    max_size=1 << 20)
    [parsed] = collect()
    assert not pooled and parsed.headers.subject == "here"
