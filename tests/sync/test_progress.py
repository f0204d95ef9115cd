"""A first import of a large mailbox shows its progress on the accounts page while it runs."""
from __future__ import annotations

import re

from connector.sync import import_pass
from connector.sync import AccountSync
from tests.support.app import login
from tests.support.mail import connect, make_mail

PROGRESS_RE = re.compile(r'<progress max="(\d+)" value="(\d+)"></progress>\s*<small>(\d+) of (\d+) imported')


def test_accounts_page_shows_count_and_bar_during_the_first_import(mail_app, org, ca, agent, dovecot, mocker):
    account_id, address = connect(mail_app, org, ca, agent)
    for i in range(12):
        dovecot.deliver(address, make_mail(to=address, subject=f"Old mail {i}"))
    rt = mail_app.extensions["connector"]
    rt.settings.mail.fetch_batch_size = 5
    client = mail_app.test_client()
    login(client, agent.email)
    seen = []
    real_ingest = import_pass.ingest

    def look_then_ingest(*args, **kwargs):
        """Each batch is stored after the ones before it are committed: the page must show those."""
        match = PROGRESS_RE.search(client.get("/accounts").get_data(as_text=True))
        seen.append(match.groups() if match else None)
        return real_ingest(*args, **kwargs)

    mocker.patch.object(import_pass, "ingest", side_effect=look_then_ingest)
    sync = AccountSync(rt, account_id)
    try:
        assert sync.run_pass().imported == 12
    finally:
        sync.close()
    assert seen == [("12", "0", "0", "12"), ("12", "5", "5", "12"), ("12", "10", "10", "12")]
    assert "<progress" not in client.get("/accounts").get_data(as_text=True)  # done: no bar
