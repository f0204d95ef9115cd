"""A rotated refresh token is saved before the next refresh.

The test IdP's refresh tokens are single-use (tests/idp: each refresh returns a new one and refuses the
one redeemed), so a worker that did not save the new token at once would find its mailbox "needs
reconnect" at its next refresh. Here every use of a token refreshes it (access tokens valid 120 s; msal
renews those with under 5 minutes left), and two `connector sync --once` processes in a row each start
from what the previous one saved in the database.
"""
from __future__ import annotations

import json
import subprocess
import sys

from connector.models import Account
from tests.support.app import connector_env
from tests.support.mail import connect, counts, make_mail


def stored_refresh_tokens(rt, account_id: int) -> list[str]:
    """The refresh tokens in the mailbox's saved token cache (decrypted: ciphertexts always differ)."""
    with rt.db.session() as session:
        cache = json.loads(rt.vault.decrypt_text(session.get(Account, account_id).token_cache_enc))
    return [entry["secret"] for entry in cache["RefreshToken"].values()]


def test_each_rotated_refresh_token_is_saved_before_the_next_refresh(mail_app, org, ca, agent, dovecot, idp):
    rt = mail_app.extensions["connector"]
    assert idp.strict_rotation  # the IdP's default: a redeemed refresh token is refused
    idp.access_token_lifetime = 120
    try:
        account_id, address = connect(mail_app, org, ca, agent)
        assert stored_refresh_tokens(rt, account_id) == idp.live_refresh_tokens(address)
        env = connector_env(rt.settings)
        for round_ in range(2):
            dovecot.deliver(address, make_mail(to=address, subject=f"Round {round_}"))
            refreshes = idp.token_calls[(address, "refresh_token")]
            done = subprocess.run([sys.executable, "-m", "connector.cli", "sync", "--account", address, "--once"],
                                  env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"round {round_}: {done.stdout}{done.stderr[-2000:]}"
            assert idp.token_calls[(address, "refresh_token")] > refreshes, "the sync did not refresh its token"
            # what the database holds is the refresh token that works now, not the one just redeemed
            assert stored_refresh_tokens(rt, account_id) == idp.live_refresh_tokens(address)
        assert counts(mail_app, account_id) == (2, 2)
        with rt.db.session() as session:
            assert session.get(Account, account_id).status == "connected"
    finally:
        idp.access_token_lifetime = 3600


def test_two_workers_refreshing_one_mailbox_at_once_keep_it_connected(mail_app, org, ca, agent, idp):
    """Two workers (or a worker's mailbox and sender threads) read the same cache, then both refresh: the
    second redeems a refresh token the first has just redeemed. It must pick up the first one's saved token
    instead of putting the mailbox in "needs reconnect"."""
    from connector import tokens

    rt = mail_app.extensions["connector"]
    idp.access_token_lifetime = 120  # every use refreshes
    try:
        account_id, address = connect(mail_app, org, ca, agent)
        with rt.db.sessionmaker() as first, rt.db.sessionmaker() as second:
            early = first.get(Account, account_id)
            first.commit()  # no transaction held (SQLite's write lock); the loaded values stay
            late = second.get(Account, account_id)
            second.commit()
            assert stored_refresh_tokens(rt, account_id) == idp.live_refresh_tokens(address)  # both hold it
            token = tokens.access_token(first, rt, early)
            other = tokens.access_token(second, rt, late)
        assert idp.introspect(token, user=address)["active"] and idp.introspect(other, user=address)["active"]
        with rt.db.session() as session:
            account = session.get(Account, account_id)
            assert (account.status, account.last_error) == ("connected", None)
        assert stored_refresh_tokens(rt, account_id) == idp.live_refresh_tokens(address)
    finally:
        idp.access_token_lifetime = 3600
