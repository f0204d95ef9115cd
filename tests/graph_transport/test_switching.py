"""A transport per mailbox: the API shows it, a mailbox switches (with a new consent when needed), and a
mailbox whose SMTP AUTH is off (535 5.7.139) is offered the switch to Graph in one click."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from connector import users
from connector.models import Account, OutboxItem
from connector.outbox import Sender
from tests.idp.driver import complete_authorization
from tests.support.app import csrf_token, finish_connect, login, post_form
from tests.support.graph_connect import connect_with_transport
from tests.support.mail import make_mail, run_pass

pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")


def _account(app, account_id: int) -> Account:
    with app.extensions["connector"].db.session() as session:
        account = session.get(Account, account_id)
        session.expunge(account)
        return account


def test_the_api_shows_each_mailboxs_transport(graph_app, graph_tenant, agent, connect_graph, ca) -> None:
    graph_id, _ = connect_graph(graph_app, graph_tenant, agent)
    imap_id, _ = connect_with_transport(graph_app, graph_tenant, ca.ca_path, agent, "imap")
    with graph_app.extensions["connector"].db.session() as session:
        token = users.issue_api_token(session, session.merge(agent))
    listed = graph_app.test_client().get("/api/v1/accounts", headers={"Authorization": f"Bearer {token}"}).get_json()
    by_id = {row["id"]: row for row in listed}
    assert by_id[graph_id]["transport"] == "graph" and by_id[imap_id]["transport"] == "imap"
    assert by_id[graph_id]["provider"] == "microsoft"


def test_the_admins_default_is_what_the_connect_form_proposes(graph_app, graph_tenant, admin) -> None:
    from tests.support.mail import register
    register(graph_app, graph_tenant)
    client = graph_app.test_client()
    login(client, admin.email)
    page = client.get("/admin/microsoft").get_data(as_text=True)
    for permission in ("Mail.ReadWrite", "Mail.Send", "Mail.ReadWrite.Shared", "Mail.Send.Shared"):
        assert f"<code>{permission}</code>" in page
    assert '<option selected value="imap">' in page or 'value="imap" selected' in page
    done = client.post("/admin/microsoft/transport", data={"transport": "graph", "csrf_token": csrf_token(page)})
    assert done.status_code == 302
    accounts_page = client.get("/accounts").get_data(as_text=True)
    assert '<option value="graph" selected>Microsoft Graph</option>' in accounts_page
    refused = client.post("/admin/microsoft/transport", data={"transport": "pop3", "csrf_token": csrf_token(page)})
    assert refused.status_code == 400


def test_switching_asks_for_consent_once_then_reads_over_graph(graph_app, graph_tenant, agent, ca, graph) -> None:
    account_id, address = connect_with_transport(graph_app, graph_tenant, ca.ca_path, agent, "imap")
    client = graph_app.test_client()
    login(client, agent.email)
    # the IMAP sign-in has no consent for Graph: the switch goes through Microsoft, asking the Graph scopes
    started = post_form(client, f"/accounts/{account_id}/transport", {"transport": "graph"})
    assert started.status_code == 302 and "Mail.ReadWrite" in started.headers["Location"]
    assert _account(graph_app, account_id).transport == "imap"  # nothing changes before the consent
    done = finish_connect(client, complete_authorization(started.headers["Location"], address, "pw",
                                                         ca_path=ca.ca_path))
    assert done.status_code == 302
    assert _account(graph_app, account_id).transport == "graph"
    graph.deliver(address, make_mail(to=address, subject="Over Graph now"))
    assert run_pass(graph_app, account_id).imported == 1
    # back to IMAP: that consent is stored, so the switch needs no sign-in
    back = post_form(client, f"/accounts/{account_id}/transport", {"transport": "imap"})
    assert back.status_code == 302 and back.headers["Location"].endswith("/accounts")
    account = _account(graph_app, account_id)
    assert account.transport == "imap" and account.sync_cursor is None and account.last_uid == 0
    # and to Graph again: consented now, one click
    again = post_form(client, f"/accounts/{account_id}/transport", {"transport": "graph"})
    assert again.headers["Location"].endswith("/accounts") and _account(graph_app, account_id).transport == "graph"
    assert run_pass(graph_app, account_id).imported == 0  # read again from the start: no duplicates


@pytest.fixture
def both_app(make_app, mail_config, graph):
    """IMAP and SMTP at Dovecot and the SMTP test server, Graph at the stand-in."""
    microsoft = dict(mail_config["microsoft"], graph_host=graph.url)
    return make_app(microsoft=microsoft)


def test_smtp_auth_off_offers_graph_in_one_click(both_app, graph_tenant, agent, make_user, ca, graph, smtp_server,
                                                 dovecot) -> None:
    rt = both_app.extensions["connector"]
    account_id, address = connect_with_transport(both_app, graph_tenant, ca.ca_path, agent, "imap")
    dovecot.deliver(address, make_mail(to=address, subject="Need help"))
    assert run_pass(both_app, account_id).imported == 1
    client = both_app.test_client()
    login(client, agent.email)
    with rt.db.session() as session:
        token = users.issue_api_token(session, session.merge(agent))
        ticket_id = session.scalar(select(OutboxItem.id).limit(1))  # none yet
        assert ticket_id is None
    from connector.models import Ticket
    with rt.db.session() as session:
        ticket_id = session.scalar(select(Ticket.id).where(Ticket.account_id == account_id))
    reply = client.post(f"/api/v1/tickets/{ticket_id}/reply", headers={"Authorization": f"Bearer {token}"},
                        json={"body_text": "Our answer"})
    assert reply.status_code == 202
    smtp_server.fail_next(535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for "
                               "the Tenant", stage="auth")
    Sender(rt, "test").send_due(lambda: False)
    with rt.db.session() as session:
        item = session.scalar(select(OutboxItem).where(OutboxItem.account_id == account_id))
        assert item.state == "failed" and "Microsoft Graph works where" in item.last_error
    page = client.get("/accounts").get_data(as_text=True)
    assert f'id="switch-graph-{account_id}"' in page
    member = make_user()
    with rt.db.session() as session:
        from connector.accounts import add_member
        add_member(session, session.get(Account, account_id), session.merge(member))
    member_client = both_app.test_client()
    login(member_client, member.email)
    assert f'id="switch-graph-{account_id}"' not in member_client.get("/accounts").get_data(as_text=True)
    # one click: the consent for Graph, then the failed reply goes out over Graph
    started = client.post(f"/accounts/{account_id}/transport", data={"transport": "graph",
                                                                     "csrf_token": csrf_token(page)})
    assert started.status_code == 302
    done = finish_connect(client, complete_authorization(started.headers["Location"], address, "pw",
                                                         ca_path=ca.ca_path))
    assert done.status_code == 302
    assert _account(both_app, account_id).transport == "graph"
    assert Sender(rt, "test").send_due(lambda: False)
    [sent] = graph.sent_mail(address)
    with rt.db.session() as session:
        item = session.scalar(select(OutboxItem).where(OutboxItem.account_id == account_id))
        assert item.state == "sent" and sent.message_id
    assert f'id="switch-graph-{account_id}"' not in client.get("/accounts").get_data(as_text=True)


def test_an_imap_sign_in_refused_with_a_fresh_token_offers_graph(both_app, graph_tenant, agent, ca, dovecot) -> None:
    """IMAP switched off for a mailbox: Dovecot refuses the sign-in although the token is valid (here the
    user name does not match the token's, which Dovecot refuses the same way)."""
    from connector.mail.imap import ImapMailbox
    from connector.transport import MailServers
    from connector.worker.mailbox import MailboxRunner
    from connector.sync.fence import Unfenced

    class ImapOff(ImapMailbox):
        def login(self, user: str, token: str) -> None:
            super().login("imap-off-" + user, token)

    rt = both_app.extensions["connector"]
    account_id, address = connect_with_transport(both_app, graph_tenant, ca.ca_path, agent, "imap")
    rt.servers = MailServers(rt, imap_factory=ImapOff)
    assert MailboxRunner(rt, account_id, Unfenced()).run_once() == "failed"
    account = _account(both_app, account_id)
    assert "refused the sign-in" in account.last_error and "Microsoft Graph works where" in account.last_error
    client = both_app.test_client()
    login(client, agent.email)
    assert f'id="switch-graph-{account_id}"' in client.get("/accounts").get_data(as_text=True)


def test_a_shared_mailbox_connects_over_graph_only_with_full_access(graph_app, graph_tenant, agent, ca,
                                                                    graph) -> None:
    from connector import outbox, tickets
    from connector.models import Ticket, User

    rt = graph_app.extensions["connector"]
    delegate = graph_tenant.add_user("delegate")
    shared = f"support@{graph_tenant.domain}"
    graph.mailbox(shared, "Support")
    client = graph_app.test_client()
    from tests.support.mail import register
    register(graph_app, graph_tenant)
    login(client, agent.email)

    def connect():
        started = post_form(client, "/accounts/connect/microsoft", {"transport": "graph", "mailbox": shared})
        assert "Mail.ReadWrite.Shared" in started.headers["Location"]  # the .Shared permissions are asked
        return finish_connect(client, complete_authorization(started.headers["Location"], delegate, "pw",
                                                             ca_path=ca.ca_path))
    refused = connect()
    assert refused.status_code == 403 and "Full Access" in refused.get_data(as_text=True)
    with rt.db.session() as session:
        assert session.scalar(select(Account).where(Account.address == shared)) is None  # nothing stored
    graph_tenant.idp.grant_mailbox_access(delegate, shared)
    assert connect().status_code == 302
    with rt.db.session() as session:
        account = session.scalar(select(Account).where(Account.address == shared))
        account_id = account.id
        assert account.transport == "graph" and account.token_owner == delegate
    graph.deliver(shared, make_mail(to=shared, subject="To the team"))
    assert run_pass(graph_app, account_id).imported == 1
    graph.grant_send_as(delegate, shared)
    with rt.db.session() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.account_id == account_id))
        user = session.get(User, agent.id)
        outbox.queue_reply(session, tickets.get_ticket(session, user, ticket.id), user, "From the team.")
    assert Sender(rt, "test").send_due(lambda: False)
    [sent] = graph.sent_mail(shared)
    assert sent.sender.lower() == delegate.lower()
    assert any(r.path.startswith(f"/v1.0/users/{shared}") for r in graph.requests_for(shared))


def test_switching_back_to_imap_deletes_the_graph_subscription(hooks_graph_app, make_org, agent, ca, graph,
                                                              caplog) -> None:
    """Graph would otherwise call for up to three days about a folder nobody reads over Graph."""
    from tests.idp.model import DEFAULT_PERMISSIONS
    from tests.support.graph import GRAPH_PERMISSIONS
    from connector.mail.graph import notify_store
    from connector.mail.graph.subscriptions import SubscriptionManager
    from connector.transport import MailboxError, graph_open, switch

    rt = hooks_graph_app.extensions["connector"]
    graph_tenant = make_org(redirect_uri=hooks_graph_app.config["BASE_URL"] + "/auth/microsoft/callback",
                            permissions=list(DEFAULT_PERMISSIONS) + GRAPH_PERMISSIONS)
    account_id, address = connect_with_transport(hooks_graph_app, graph_tenant, ca.ca_path, agent, "graph")
    with rt.db.session() as session:
        account = session.get(Account, account_id)
        graph_box = graph_open.graph_mailbox(rt, account)
    manager = SubscriptionManager(rt.db, hooks_graph_app.config["BASE_URL"], allow_private_hosts=True)
    assert manager.maintain(account_id, graph_box, "Inbox").active
    assert len(graph.subscriptions(address)) == 1
    with rt.db.session() as session:
        switch.apply(session.get(Account, account_id), "imap")  # as after a sign-in for the IMAP scopes
        session.commit()
    with rt.db.session() as session, caplog.at_level("INFO"):
        try:
            rt.servers.open_mailbox(session, session.get(Account, account_id))  # the worker, over IMAP now
        except MailboxError:
            pass  # IMAP points nowhere here; the subscription is dealt with before the sign-in
    assert graph.subscriptions(address) == []
    with rt.db.session() as session:
        assert notify_store.get(session, account_id) is None
    assert "Graph subscription is forgotten" in caplog.text
