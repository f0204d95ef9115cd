"""One sync pass against a real Dovecot that checks XOAUTH2 tokens with the test identity provider."""
from __future__ import annotations

from sqlalchemy import select

from connector.models import Account, Ticket
from connector.sync import AccountSync
from tests.support.mail import connect, counts, make_mail, run_pass


def test_new_mail_becomes_a_ticket_and_a_reply_threads_into_it(mail_app, org, ca, agent, dovecot):
    account_id, address = connect(mail_app, org, ca, agent)
    first = make_mail(to=address, subject="Printer on fire", body="It is burning.")
    dovecot.deliver(address, first)
    result = run_pass(mail_app, account_id)
    assert result.imported == 1
    assert counts(mail_app, account_id) == (1, 1)

    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.account_id == account_id))
        article = ticket.articles[0]
        assert ticket.subject == "Printer on fire"
        assert ticket.customer_address == "customer@example.net"
        assert "It is burning." in article.body_text
        first_id = article.message_id
        number = ticket.number

    dovecot.deliver(address, make_mail(to=address, subject="Re: Printer on fire", in_reply_to=first_id,
                                       references=first_id, body="Still burning."))
    dovecot.deliver(address, make_mail(to=address, subject=f"Another thing [#{number}]", body="By tag."))
    dovecot.deliver(address, make_mail(to=address, subject="Unrelated", body="New."))
    result = run_pass(mail_app, account_id)
    assert result.imported == 3
    assert counts(mail_app, account_id) == (2, 4)

    # a second pass finds nothing new, and re-reading the folder duplicates nothing
    assert run_pass(mail_app, account_id).imported == 0
    with rt.db.session() as session:
        session.get(Account, account_id).last_uid = 0
    again = run_pass(mail_app, account_id)
    assert (again.imported, again.duplicates) == (0, 4)
    assert counts(mail_app, account_id) == (2, 4)


def test_closed_ticket_reopens_on_reply_but_not_on_auto_reply(mail_app, org, ca, agent, dovecot):
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="Help", message_id="<q1@example.net>"))
    run_pass(mail_app, account_id)
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        session.scalar(select(Ticket).where(Ticket.account_id == account_id)).status = "closed"
    dovecot.deliver(address, make_mail(to=address, subject="Out of office", in_reply_to="<q1@example.net>",
                                       headers={"Auto-Submitted": "auto-replied"}))
    run_pass(mail_app, account_id)
    with rt.db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.account_id == account_id))
        assert (ticket.status, ticket.article_count) == ("closed", 2)
        assert ticket.articles[-1].is_auto
    dovecot.deliver(address, make_mail(to=address, subject="Re: Help", in_reply_to="<q1@example.net>"))
    run_pass(mail_app, account_id)
    with rt.db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.account_id == account_id))
        assert (ticket.status, ticket.article_count) == ("open", 3)


def test_mail_a_mailbox_sends_itself_is_ignored(mail_app, org, ca, agent, dovecot):
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, sender=address, subject="Note to self"))
    result = run_pass(mail_app, account_id)
    assert result.ignored == 1
    assert counts(mail_app, account_id) == (0, 0)


def test_uidvalidity_change_duplicates_nothing(mail_app, org, ca, agent, dovecot):
    account_id, address = connect(mail_app, org, ca, agent)
    for _ in range(3):
        dovecot.deliver(address, make_mail(to=address))
    run_pass(mail_app, account_id)
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        before = session.get(Account, account_id).uidvalidity
    dovecot.reset_uidvalidity(address)
    dovecot.deliver(address, make_mail(to=address, subject="After the change"))
    result = run_pass(mail_app, account_id)
    assert (result.imported, result.duplicates) == (1, 3)
    assert counts(mail_app, account_id) == (4, 4)
    with rt.db.session() as session:
        assert session.get(Account, account_id).uidvalidity != before


def test_connection_cut_in_the_middle_of_a_batch_loses_and_duplicates_nothing(mail_app, org, ca, agent, dovecot):
    from connector.mail.imap import ImapMailbox

    account_id, address = connect(mail_app, org, ca, agent)
    rt = mail_app.extensions["connector"]
    rt.settings.mail.fetch_batch_size = 3
    for i in range(10):
        dovecot.deliver(address, make_mail(to=address, subject=f"Mail {i}"))
    fetched = []

    class CutAfterFirstBatch(ImapMailbox):
        def fetch(self, uids):
            for item in super().fetch(uids):
                fetched.append(item[0])
                yield item
                if len(fetched) == 5:  # in the middle of the second batch
                    dovecot.kick(address)
                    self.client.socket().close()

    rt.servers.imap_factory = CutAfterFirstBatch
    sync = AccountSync(rt, account_id)
    try:
        sync.run_pass()
    except Exception as exc:  # the pass fails as a whole; what was committed stays
        assert "connection" in str(exc).lower() or "imap" in str(exc).lower()
    finally:
        sync.close()
    tickets, _ = counts(mail_app, account_id)
    assert 3 <= tickets < 10
    result = run_pass(mail_app, account_id)
    assert counts(mail_app, account_id) == (10, 10)
    assert result.imported == 10 - tickets


def parse_or_choke(raw: bytes, max_size: int, headers: bool = True):
    """The parse a parser process runs (pickled by name, so module level), choking on the poison."""
    from connector.mail.parse import parse_message

    if b"X-Poison: yes" in raw:
        raise ValueError("this mail breaks the importer")
    return parse_message(raw, max_size=max_size, headers=headers)


def test_poison_message_is_quarantined_and_the_next_mail_still_arrives(mail_app, org, ca, agent, dovecot, monkeypatch):
    import connector.parse_pool as parsing_module
    from connector.models import ImportFailure

    monkeypatch.setattr(parsing_module, "_parse_one", parse_or_choke)
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="Poison", headers={"X-Poison": "yes"}))
    dovecot.deliver(address, make_mail(to=address, subject="Fine"))
    outcomes = [run_pass(mail_app, account_id) for _ in range(3)]
    assert [o.failed for o in outcomes] == [1, 1, 0]
    assert outcomes[2].quarantined == 1
    rt = mail_app.extensions["connector"]
    with rt.db.session() as session:
        failure = session.scalar(select(ImportFailure).where(ImportFailure.account_id == account_id))
        assert failure.quarantined and failure.attempts == 3 and failure.raw_sha256
        assert "breaks the importer" in failure.last_error
        assert session.get(Account, account_id).last_uid >= 2
    dovecot.deliver(address, make_mail(to=address, subject="Next"))
    assert run_pass(mail_app, account_id).imported == 1
    assert counts(mail_app, account_id)[0] == 2


def _set_action(app, account_id, action, folder=""):
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        account = session.get(Account, account_id)
        account.post_import_action, account.move_to_folder = action, folder


def test_post_import_actions_do_what_they_say_on_the_server(mail_app, org, ca, agent, dovecot):
    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="kept"))
    run_pass(mail_app, account_id)
    [kept] = dovecot.messages(address)
    assert "\\Seen" not in kept["flags"]  # BODY.PEEK: importing does not mark read

    _set_action(mail_app, account_id, "mark_read")
    dovecot.deliver(address, make_mail(to=address, subject="read me"))
    run_pass(mail_app, account_id)
    flags = {m["uid"]: m["flags"] for m in dovecot.messages(address)}
    assert "\\Seen" in flags[max(flags)] and "\\Seen" not in flags[min(flags)]

    _set_action(mail_app, account_id, "move", "Imported")
    dovecot.deliver(address, make_mail(to=address, subject="move me", message_id="<move@example.net>"))
    run_pass(mail_app, account_id)
    assert "<move@example.net>" not in [m["message_id"] for m in dovecot.messages(address)]
    assert "<move@example.net>" in [m["message_id"] for m in dovecot.messages(address, "Imported")]

    _set_action(mail_app, account_id, "delete")
    dovecot.deliver(address, make_mail(to=address, subject="delete me", message_id="<del@example.net>"))
    run_pass(mail_app, account_id)
    assert "<del@example.net>" not in [m["message_id"] for m in dovecot.messages(address)]
    assert len(dovecot.messages(address)) == 2
    assert counts(mail_app, account_id) == (4, 4)


def test_a_changed_encryption_key_is_explained_not_crashed(mail_app, org, ca, agent, dovecot, smtp_server):
    from cryptography.fernet import Fernet

    from connector.crypto import Vault
    from connector.outbox import Sender
    from connector.worker import Worker

    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address))
    rt = mail_app.extensions["connector"]
    assert run_pass(mail_app, account_id).imported == 1
    with rt.db.session() as session:
        from connector import outbox
        ticket = session.scalar(select(Ticket).where(Ticket.account_id == account_id))
        article_id = outbox.queue_reply(session, ticket, session.get(type(agent), agent.id), "hi").id
    rt.vault = Vault([Fernet.generate_key()])  # as if someone replaced encryption.key
    ok, lines = Worker(rt).sync_once(address)
    assert not ok and "cannot be decrypted" in lines[0] and "encryption key" in lines[0]
    assert not Sender(rt, "t").send_due(lambda: False)
    with rt.db.session() as session:
        from connector.models import OutboxItem
        item = session.scalar(select(OutboxItem).where(OutboxItem.article_id == article_id))
        assert item.state == "failed" and "cannot be decrypted" in item.last_error


def test_a_move_that_did_not_run_after_its_commit_runs_at_the_next_pass(mail_app, org, ca, agent, dovecot,
                                                                         monkeypatch):
    """The connection breaks (or the worker dies) after a batch's commit, before its move: the mails stay in
    INBOX, imported. The next pass moves them, and only them: mails imported before "move" was chosen
    stay where they are."""
    from connector.transport.imap import ImapTransport

    account_id, address = connect(mail_app, org, ca, agent)
    dovecot.deliver(address, make_mail(to=address, subject="before", message_id="<before@example.net>"))
    run_pass(mail_app, account_id)  # imported while the action was "keep"
    _set_action(mail_app, account_id, "move", "Imported")
    for i in range(3):
        dovecot.deliver(address, make_mail(to=address, subject=f"stuck {i}", message_id=f"<stuck{i}@example.net>"))
    real = ImapTransport.after_import

    def broken(self, uids, action, folder):
        raise OSError("connection reset by peer")

    monkeypatch.setattr(ImapTransport, "after_import", broken)
    assert run_pass(mail_app, account_id).imported == 3
    assert len(dovecot.messages(address)) == 4  # imported, not moved
    monkeypatch.setattr(ImapTransport, "after_import", real)
    dovecot.deliver(address, make_mail(to=address, subject="new", message_id="<new@example.net>"))
    assert run_pass(mail_app, account_id).imported == 1
    assert [m["message_id"] for m in dovecot.messages(address)] == ["<before@example.net>"]
    assert sorted(m["message_id"] for m in dovecot.messages(address, "Imported")) == \
        ["<new@example.net>", "<stuck0@example.net>", "<stuck1@example.net>", "<stuck2@example.net>"]
    assert counts(mail_app, account_id) == (5, 5)
