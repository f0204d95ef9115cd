"""The Graph transport against the Graph stand-in (tests/graph) over HTTPS, with real tokens from the
test IdP through msal: fixtures for people, mailboxes and clients."""
from __future__ import annotations

import pytest

from connector.mail.graph import GraphMailbox
from tests.support.graph import MAIL_SCOPES, SHARED_SCOPES, graph, graph_org, webhook  # noqa: F401


@pytest.fixture
def alice(graph_org) -> str:
    return graph_org.add_user("alice", "Alice Example")


@pytest.fixture
def bob(graph_org) -> str:
    return graph_org.add_user("bob", "Bob Example")


@pytest.fixture
def alice_token(graph_org, alice):
    return graph_org.token_source(alice, MAIL_SCOPES)


@pytest.fixture
def open_mailbox(graph, graph_org):
    """open_mailbox(address, token, **options) -> GraphMailbox at the stand-in; closed after the test."""
    opened: list[GraphMailbox] = []

    def make(address: str, token, **options) -> GraphMailbox:
        options.setdefault("backoff", 0.01)
        mailbox = GraphMailbox(address, token, graph_host=graph.url, ca_bundle=str(graph_org.ca_path), **options)
        opened.append(mailbox)
        return mailbox
    yield make
    for mailbox in opened:
        mailbox.close()


@pytest.fixture
def mailbox(open_mailbox, alice, alice_token) -> GraphMailbox:
    return open_mailbox(alice, alice_token)


@pytest.fixture
def shared_setup(graph, graph_org):
    """(delegate, shared address, token with the .Shared scopes); no Full Access or Send As yet."""
    delegate = graph_org.add_user("agent", "Agent Smith")
    shared = f"support@{graph_org.domain}"
    graph.mailbox(shared, "Support")
    return delegate, shared, graph_org.token_source(delegate, SHARED_SCOPES)


def _served_over_https(app, ca, port: int):
    """Serve `app` on 127.0.0.1:port over HTTPS (the test CA), so the stand-in can call its hooks."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app, threaded=True)
    server.socket = ca.server_context("connector").wrap_socket(server.socket, server_side=True,
                                                                do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    app.config["BASE_URL"] = f"https://127.0.0.1:{port}"
    yield app
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def hooks_app(make_app, ca):
    """The app served over HTTPS (the test CA) on 127.0.0.1, so the stand-in can call its hooks."""
    from tests.support.net import free_port

    port = free_port()
    yield from _served_over_https(make_app(app={"base_url": f"https://127.0.0.1:{port}"}), ca, port)


@pytest.fixture
def hooks_graph_app(make_app, ca, graph):
    """graph_app (below), served over HTTPS like hooks_app: its mailboxes connect through the real flow
    and get change notifications."""
    from tests.support.net import free_port

    port = free_port()
    app = make_app(app={"base_url": f"https://127.0.0.1:{port}"},
                   microsoft={"graph_host": graph.url, "imap_host": "127.0.0.1", "imap_port": 9,
                              "smtp_host": "127.0.0.1", "smtp_port": 9},
                   worker={"poll_interval_seconds": 1})
    yield from _served_over_https(app, ca, port)


@pytest.fixture
def add_account(rt_of):
    def add(app, address: str) -> int:
        from connector.models import Account
        with rt_of(app).db.session() as session:
            account = Account(address=address, transport="graph")
            session.add(account)
            session.flush()
            return account.id
    return add


@pytest.fixture
def rt_of():
    return lambda app: app.extensions["connector"]


# ---- the product over Graph: an app whose mailboxes connect with the Graph transport -----------

@pytest.fixture
def graph_app(make_app, graph):
    """The app with [microsoft] graph_host at the stand-in (IMAP and SMTP point nowhere)."""
    return make_app(microsoft={"graph_host": graph.url, "imap_host": "127.0.0.1", "imap_port": 9,
                               "smtp_host": "127.0.0.1", "smtp_port": 9},
                    worker={"poll_interval_seconds": 1})


@pytest.fixture
def graph_tenant(make_org):
    """A tenant whose app lists the IMAP/SMTP permissions and the Graph mail permissions."""
    from tests.idp.model import DEFAULT_PERMISSIONS
    from tests.support.graph import GRAPH_PERMISSIONS
    return make_org(permissions=list(DEFAULT_PERMISSIONS) + GRAPH_PERMISSIONS)


@pytest.fixture
def connect_graph(graph, ca):
    """connect_graph(app, org, user, local=None) -> (account id, address): the whole connect flow with
    the transport "Microsoft Graph" chosen on the form (consent for the Graph permissions)."""
    from tests.support.graph_connect import connect_with_transport

    def connect(app, org, user, local: str | None = None, mailbox: str | None = None):
        account_id, address = connect_with_transport(app, org, ca.ca_path, user, "graph", local, mailbox)
        graph.mailbox(address)
        return account_id, address
    return connect
