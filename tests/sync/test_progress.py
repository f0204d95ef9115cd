"""A first import of a large mailbox shows its progress on the accounts page while it runs."""
from __future__ import annotations

import re

from connector.mail.imap import ImapMailbox
from connector.sync import AccountSync
from tests.support.app import login
from tests.support.mail import connect, make_mail


def test_accounts_page_shows_count_and_bar_during_the_first_import(mail_app, org, ca, agent, dovecot):
    account_id, address = connect(mail_app, org, ca, agent)
    for i in range(12):
        dovecot.deliver(address, make_mail(to=address, subject=f"Old mail {i}"))
    rt = mail_app.extensions["connector"]
    rt.settings.mail.fetch_batch_size = 5
    client = mail_app.test_client()
    login(client, agent.email)
    seen = []

    class Watched(ImapMailbox):
        def fetch(self, uids):
            page = client.get("/accounts").get_data(as_text=True)
            match = re.search(r'<progress max="(\d+)" value="(\d+)"></progress>\s*<small>(\d+) of (\d+) imported',
                              page)
            seen.append(match.groups() if match else None)
            yield from super().fetch(uids)

    sync = AccountSync(rt, account_id, mailbox_factory=Watched)
    try:
        assert sync.run_pass().imported == 12
    finally:
        sync.close()
    assert all(m is not None for m in seen), seen  # a bar with a count on every look during the import
    done = [int(m[1]) for m in seen]
    assert seen[0] == ("12", "0", "0", "12")
    assert done == sorted(done) and any(0 < d < 12 for d in done), seen  # it moves while importing
    assert "<progress" not in client.get("/accounts").get_data(as_text=True)  # done: no bar
