"""delegation.prove_full_access: every way the proof can end, with a scripted IMAP seam (the real sign-ins
against Dovecot are in tests/sync/test_shared_mailbox.py and tests/e2e/test_connect_shared.py)."""
from __future__ import annotations

import pytest

from connector.delegation import AccessRefused, no_full_access, prove_full_access
from connector.mail.imap import ImapError

SHARED, DELEGATE, TOKEN = "support@contoso.test", "agent2@contoso.test", "eyJ0eXAi.token.sig"


class ScriptedMailbox:
    """Stands in for ImapMailbox: `login_error`, and the folders SELECT opens; records the calls."""

    def __init__(self, *, connect_error=None, login_error=None, folders=("INBOX",), select_error=None):
        self.connect_error, self.login_error = connect_error, login_error
        self.folders, self.select_error = set(folders), select_error
        self.calls: list[tuple] = []

    def __call__(self, host, port, ca_bundle, timeout=60):
        self.calls.append(("connect", host, port, ca_bundle))
        if self.connect_error:
            raise self.connect_error
        return self

    def login(self, user, token):
        self.calls.append(("login", user, token))
        if self.login_error:
            raise self.login_error

    def select(self, folder):
        self.calls.append(("select", folder))
        if self.select_error:
            raise self.select_error
        if folder not in self.folders:
            raise ImapError(f'The folder "{folder}" cannot be opened')

    def close(self):
        self.calls.append(("close",))


def prove(mailbox: ScriptedMailbox, folder: str = "INBOX") -> None:
    prove_full_access("imap.test", 993, "/ca.pem", shared=SHARED, delegate=DELEGATE, token=TOKEN, folder=folder,
                      mailbox_factory=mailbox)


def test_the_proof_signs_in_as_the_shared_mailbox_with_the_delegates_token():
    mailbox = ScriptedMailbox(folders=("INBOX", "Support"))
    prove(mailbox, folder="Support")
    assert mailbox.calls == [("connect", "imap.test", 993, "/ca.pem"), ("login", SHARED, TOKEN),
                             ("select", "Support"), ("close",)]


def test_a_refused_sign_in_means_no_full_access():
    mailbox = ScriptedMailbox(login_error=ImapError("AUTHENTICATE failed", auth_failed=True))
    with pytest.raises(AccessRefused) as refused:
        prove(mailbox)
    assert str(refused.value) == (
        "agent2@contoso.test has no Full Access to support@contoso.test: an Exchange admin grants it with "
        "Add-MailboxPermission -Identity support@contoso.test -User agent2@contoso.test -AccessRights FullAccess, "
        "then connect again.")
    assert mailbox.calls[-1] == ("close",)


def test_a_sign_in_that_cannot_open_the_mailbox_means_no_full_access():
    """Exchange may accept AUTHENTICATE and refuse SELECT for a delegate without Full Access."""
    mailbox = ScriptedMailbox(folders=())
    with pytest.raises(AccessRefused) as refused:
        prove(mailbox, folder="Support")
    assert str(refused.value) == no_full_access(DELEGATE, SHARED)
    assert [c for c in mailbox.calls if c[0] == "select"] == [("select", "Support"), ("select", "INBOX")]


def test_a_missing_folder_is_not_a_refusal_when_the_inbox_opens():
    mailbox = ScriptedMailbox(folders=("INBOX",))
    prove(mailbox, folder="Gone")  # access proven; the sync reports the folder setting as usual
    assert ("select", "INBOX") in mailbox.calls


@pytest.mark.parametrize("failure, where, words", [
    (ImapError("Cannot reach the IMAP server imap.test:993 (ConnectionRefusedError)."), "connect",
     "could not be checked, so nothing was stored: Cannot reach the IMAP server imap.test:993 "
     "(ConnectionRefusedError). Try again in a few minutes."),
    (ImapError("Exchange is throttling this mailbox; waiting as it asked.", retry_after=2.0), "login",
     "could not be checked, so nothing was stored: Exchange is throttling this mailbox; waiting as it asked."),
    (ConnectionResetError("reset"), "select", "could not be checked, so nothing was stored: the IMAP connection "
                                              "failed (ConnectionResetError)."),
])
def test_when_the_access_cannot_be_checked_nothing_is_claimed(failure, where, words):
    mailbox = ScriptedMailbox(**{{"connect": "connect_error", "login": "login_error",
                                  "select": "select_error"}[where]: failure})
    with pytest.raises(AccessRefused) as unchecked:
        prove(mailbox)
    assert str(unchecked.value).startswith(f"The access of {DELEGATE} to {SHARED} ")
    assert words in str(unchecked.value)
    assert "no Full Access" not in str(unchecked.value)
