"""Password guessing is slowed down, and nobody can use that to keep a person out (connector/throttle.py).

Keys: (account, client) gets `max_login_failures` free failures, a client 4x over all accounts, an
account 10x over all clients; then growing delays. A known browser (device cookie) counts on its own.
"""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from connector import throttle, users
from connector.models import LoginThrottle
from connector.web import devices
from tests.support.app import PASSWORD
from tests.support.signin import Clock, failures, sign_in, sign_out, wait_seconds

STRANGER = "203.0.113.66"
OWNER = "198.51.100.7"


def _signed_in(response) -> bool:
    return response.status_code == 302 and response.headers["Location"] == "/tickets"


# -- one client guessing one account ------------------------------------------------------------------------

def test_five_wrong_passwords_make_this_client_wait_not_the_account(app, agent, mocker):
    clock = Clock(mocker)
    guesser = app.test_client()
    for _ in range(5):
        assert sign_in(guesser, agent.email, "wrong password", ip=STRANGER).status_code == 401
    refused = sign_in(guesser, agent.email, ip=STRANGER)  # even the right password is not checked now
    assert refused.status_code == 429
    assert wait_seconds(refused) == 5 and refused.headers["Retry-After"] == "5"
    assert guesser.get("/accounts").status_code == 302  # not signed in
    # the owner, from their own address, is not held up at all
    assert _signed_in(sign_in(app.test_client(), agent.email, ip=OWNER))
    clock.advance(6)
    assert _signed_in(sign_in(guesser, agent.email, ip=STRANGER))


def test_a_stranger_cannot_keep_the_admin_out(app, make_user, mocker):
    """The attack of issue 10: a few wrong passwords an hour used to lock admin@localhost for good."""
    clock = Clock(mocker)
    admin = make_user("admin", email="admin@localhost")
    stranger = app.test_client()
    waits = []
    for _ in range(15):  # as many as the stranger may try in an hour and a half, each after the wait
        response = sign_in(stranger, admin.email, "guess", ip=STRANGER)
        assert response.status_code == 401
        refused = sign_in(stranger, admin.email, "guess", ip=STRANGER)
        if refused.status_code == 429:
            waits.append(wait_seconds(refused))
            clock.advance(waits[-1])
        owner = app.test_client()
        assert _signed_in(sign_in(owner, admin.email, ip=OWNER)), "the admin was kept out"
    assert waits == sorted(waits) and waits[0] == 5 and waits[-1] == 15 * 60  # growing, up to 15 minutes


def test_the_wait_grows_with_every_failure(app, agent, mocker):
    clock = Clock(mocker)
    client = app.test_client()
    seen = []
    for _ in range(10):
        while (response := sign_in(client, agent.email, "wrong", ip=STRANGER)).status_code == 429:
            seen.append(wait_seconds(response))
            clock.advance(seen[-1])
    assert seen == [5, 10, 20, 40, 80]  # after the 5th, 6th, ... 9th failure


def test_a_successful_sign_in_clears_the_count(app, agent):
    client = app.test_client()
    for _ in range(4):
        assert sign_in(client, agent.email, "wrong password", ip=STRANGER).status_code == 401
    assert failures(app, f"pair:{agent.email}|{STRANGER}") == 4
    assert _signed_in(sign_in(client, agent.email, ip=STRANGER))
    assert failures(app, f"pair:{agent.email}|{STRANGER}") == 0
    assert failures(app, f"client:{STRANGER}") == 4  # the success gave its own attempt back
    sign_out(client, ip=STRANGER)
    for _ in range(4):  # four more: without the reset this would be eight, and waiting
        assert sign_in(client, agent.email, "wrong password", ip=STRANGER).status_code == 401
    assert _signed_in(sign_in(client, agent.email, ip=STRANGER))


def test_unknown_addresses_are_throttled_alike(app):
    """Whether an account exists shows neither in the answers nor in the throttling."""
    client = app.test_client()
    answers = [sign_in(client, "nobody@helpdesk.test", "guess", ip=STRANGER).status_code for _ in range(6)]
    assert answers == [401] * 5 + [429]


# -- one client guessing many accounts (spraying) -------------------------------------------------------------

def test_one_client_guessing_many_addresses_is_slowed_down(app, make_user):
    victim = make_user("agent")
    client = app.test_client()
    for n in range(20):
        assert sign_in(client, f"guess{n}@helpdesk.test", "wrong password", ip=STRANGER).status_code == 401
    assert sign_in(client, victim.email, ip=STRANGER).status_code == 429
    assert _signed_in(sign_in(app.test_client(), victim.email, ip=OWNER))


def test_old_failures_are_forgotten(app, make_user, mocker):
    """An office behind one address must not wait for good because of weeks of typos."""
    clock = Clock(mocker)
    user = make_user("agent")
    client = app.test_client()
    for n in range(19):
        sign_in(client, f"typo{n}@helpdesk.test", "wrong password", ip=STRANGER)
    clock.advance(2 * 3600)
    sign_in(client, "typo-late@helpdesk.test", "wrong password", ip=STRANGER)  # the twentieth, but alone now
    assert failures(app, f"client:{STRANGER}") == 1
    assert _signed_in(sign_in(client, user.email, ip=STRANGER))


def test_ipv6_clients_count_per_64_block(app, agent):
    client = app.test_client()
    for n in range(5):  # five addresses of one subscriber's /64
        assert sign_in(client, agent.email, "wrong", ip=f"2001:db8:1:2::{n + 1:x}").status_code == 401
    assert sign_in(client, agent.email, ip="2001:db8:1:2:ffff::1").status_code == 429
    assert _signed_in(sign_in(app.test_client(), agent.email, ip="2001:db8:1:3::1"))  # another /64


def test_client_key():
    assert throttle.client_key("192.0.2.1") == "192.0.2.1"
    assert throttle.client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert throttle.client_key("2001:db8::1") == throttle.client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert throttle.client_key("") == "unknown" and throttle.client_key("x" * 100) == "x" * 64


# -- many clients guessing one account ------------------------------------------------------------------------

@pytest.fixture
def strict_app(make_app):
    """max_login_failures = 2: a pair may fail twice, a client 8 times, an account 20 times."""
    return make_app(app={"max_login_failures": 2})


def test_an_account_under_attack_still_lets_its_owner_in(strict_app, make_user, mocker):
    clock = Clock(mocker)
    app = strict_app
    with app.extensions["connector"].db.session() as session:
        owner = users.create_user(session, "owner@helpdesk.test", PASSWORD, "agent")
    bots = [f"192.0.2.{n}" for n in range(1, 21)]
    for ip in bots:  # a botnet: twenty addresses, one guess each
        assert sign_in(app.test_client(), owner.email, "guess", ip=ip).status_code == 401
    assert failures(app, f"account:{owner.email}") == 20
    # now only clients without a failure on this account get a check
    assert sign_in(app.test_client(), owner.email, "guess again", ip=bots[0]).status_code == 429
    assert sign_in(app.test_client(), owner.email, "new bot", ip="192.0.2.99").status_code == 401
    assert _signed_in(sign_in(app.test_client(), owner.email, ip=OWNER))
    # the owner's success does not lift the account's wait for the bots
    assert sign_in(app.test_client(), owner.email, "guess again", ip=bots[1]).status_code == 429
    # the wait grows: after it, one bot's guess is checked, and the next must wait longer
    clock.advance(5)
    assert sign_in(app.test_client(), owner.email, "guess again", ip=bots[2]).status_code == 401
    refused = sign_in(app.test_client(), owner.email, "guess again", ip=bots[3])
    assert refused.status_code == 429 and wait_seconds(refused) > 5


def test_the_owners_usual_browser_is_not_slowed_by_an_attack(strict_app, mocker):
    Clock(mocker)
    app = strict_app
    with app.extensions["connector"].db.session() as session:
        owner = users.create_user(session, "owner@helpdesk.test", PASSWORD, "agent")
    usual = app.test_client()
    assert _signed_in(sign_in(usual, owner.email, ip=OWNER))  # gets a device cookie
    sign_out(usual, ip=OWNER)
    for n in range(1, 21):
        sign_in(app.test_client(), owner.email, "guess", ip=f"192.0.2.{n}")
    # a typo in the usual browser, then the right password: in (counted under the device alone)
    assert sign_in(usual, owner.email, "typo", ip=OWNER).status_code == 401
    assert _signed_in(sign_in(usual, owner.email, ip=OWNER))
    # the same person in a new browser after a typo waits: that client has failed on the account
    fresh = app.test_client()
    assert sign_in(fresh, owner.email, "typo", ip=OWNER).status_code == 401
    assert sign_in(fresh, owner.email, ip=OWNER).status_code == 429


def test_a_neighbour_behind_the_same_address_cannot_keep_the_owner_out(strict_app, mocker):
    Clock(mocker)
    app = strict_app
    with app.extensions["connector"].db.session() as session:
        owner = users.create_user(session, "owner@helpdesk.test", PASSWORD, "agent")
    usual = app.test_client()
    assert _signed_in(sign_in(usual, owner.email, ip=OWNER))
    sign_out(usual, ip=OWNER)
    neighbour = app.test_client()
    for n in range(8):  # sprays from the same office address until that address waits
        sign_in(neighbour, f"someone{n}@helpdesk.test", "guess", ip=OWNER)
    assert sign_in(app.test_client(), owner.email, ip=OWNER).status_code == 429
    assert _signed_in(sign_in(usual, owner.email, ip=OWNER))


def test_a_device_cookie_counts_only_for_its_own_user(strict_app, mocker):
    Clock(mocker)
    app = strict_app
    with app.extensions["connector"].db.session() as session:
        first = users.create_user(session, "first@helpdesk.test", PASSWORD, "agent")
        second = users.create_user(session, "second@helpdesk.test", PASSWORD, "agent")
    browser = app.test_client()
    assert _signed_in(sign_in(browser, first.email, ip=STRANGER))
    cookie = browser.get_cookie(devices.COOKIE)
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    sign_out(browser, ip=STRANGER)
    sprayer = app.test_client()
    for n in range(8):  # the address now waits
        sign_in(sprayer, f"someone{n}@helpdesk.test", "guess", ip=STRANGER)
    assert _signed_in(sign_in(browser, first.email, ip=STRANGER))  # the cookie's own user: counted apart
    sign_out(browser, ip=STRANGER)
    assert sign_in(browser, second.email, ip=STRANGER).status_code == 429  # first's cookie is no help to second
    forged = app.test_client()
    forged.set_cookie(devices.COOKIE, cookie.value[:-3] + "AAA")
    assert sign_in(forged, first.email, ip=STRANGER).status_code == 429  # a bad signature is no cookie


# -- the client address: X-Forwarded-For only for trusted proxies -------------------------------------------

def test_x_forwarded_for_is_ignored_without_trusted_proxies(app, agent):
    client = app.test_client()
    for n in range(5):  # a new made-up address in each request does not make a new client
        response = sign_in(client, agent.email, "wrong", ip=STRANGER, forwarded_for=f"192.0.2.{n}")
        assert response.status_code == 401
    assert sign_in(client, agent.email, ip=STRANGER, forwarded_for="192.0.2.77").status_code == 429
    assert failures(app, f"pair:{agent.email}|{STRANGER}") == 5


def test_x_forwarded_for_is_believed_for_one_trusted_proxy(make_app):
    app = make_app(app={"trusted_proxies": 1})
    with app.extensions["connector"].db.session() as session:
        user = users.create_user(session, "behind@helpdesk.test", PASSWORD, "agent")
    proxy = "10.0.0.2"
    client = app.test_client()
    for n in range(5):  # the proxy appends the real address; what the client wrote before it is ignored
        response = sign_in(client, user.email, "wrong", ip=proxy, forwarded_for=f"192.0.2.{n}, {STRANGER}")
        assert response.status_code == 401
    assert failures(app, f"pair:{user.email}|{STRANGER}") == 5
    assert sign_in(client, user.email, ip=proxy, forwarded_for=f"192.0.2.99, {STRANGER}").status_code == 429
    # everyone else behind the same proxy is another client
    assert _signed_in(sign_in(app.test_client(), user.email, ip=proxy, forwarded_for=OWNER))


def test_a_negative_number_of_proxies_is_refused(make_app):
    from connector.config import ConfigError

    with pytest.raises(ConfigError, match="trusted_proxies must be 0"):
        make_app(app={"trusted_proxies": -1})


# -- counting is atomic: parallel guesses against the real database ------------------------------------------

def _parallel_wrong_passwords(app, email: str, count: int, max_failures: int) -> list[users.SignIn]:
    rt = app.extensions["connector"]
    start = threading.Barrier(count)
    results: list[users.SignIn] = []

    def guess(n: int) -> None:
        session = rt.db.sessionmaker()
        try:
            start.wait(timeout=30)
            result = users.authenticate(session, email, f"wrong {n}", STRANGER, max_failures)
            session.commit()
            results.append(result)
        finally:
            session.close()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == count, "a guessing thread did not finish"
    return results


def test_parallel_wrong_passwords_are_counted_exactly(app, agent):
    results = _parallel_wrong_passwords(app, agent.email, 24, max_failures=1000)
    assert all(r.error == "Wrong email or password." for r in results)
    assert failures(app, f"pair:{agent.email}|{STRANGER}") == 24
    assert failures(app, f"client:{STRANGER}") == 24
    assert failures(app, f"account:{agent.email}") == 24


def test_parallel_guesses_cannot_slip_past_the_limit(app, agent):
    """24 guesses at once where 5 are free: exactly 5 passwords are checked, 19 wait."""
    results = _parallel_wrong_passwords(app, agent.email, 24, max_failures=5)
    checked = [r for r in results if r.retry_after == 0]
    assert len(checked) == 5 and all(r.error == "Wrong email or password." for r in checked)
    assert all(r.error.startswith("Too many failed sign-ins.") for r in results if r.retry_after)
    assert failures(app, f"pair:{agent.email}|{STRANGER}") == 5


def test_rows_without_anything_to_remember_are_purged(app, mocker):
    clock = Clock(mocker)
    mocker.patch("connector.throttle._last_purge", None)
    for n in range(3):
        sign_in(app.test_client(), f"made-up{n}@helpdesk.test", "guess", ip=STRANGER)
    clock.advance(2 * 3600)
    mocker.patch("connector.throttle._last_purge", None)
    sign_in(app.test_client(), "one-more@helpdesk.test", "guess", ip="192.0.2.5")
    with app.extensions["connector"].db.session() as session:
        keys = set(session.scalars(select(LoginThrottle.key)))
    assert keys == {"pair:one-more@helpdesk.test|192.0.2.5", "client:192.0.2.5", "account:one-more@helpdesk.test"}
