"""A local stand-in for Microsoft Graph v1.0 mail, for tests and benchmarks.

    graph = GraphServer(ca, idp).start()          # or: with GraphServer(ca, idp) as graph:
    graph.url                                     # https://127.0.0.1:PORT; API at graph.base_url
    graph.deliver("alice@contoso.test", raw)      # mail arrives in the Inbox
    graph.sent("alice@contoso.test")              # MIME the mailbox sent over sendMail

Tokens are the test IdP's (tests/idp): audience https://graph.microsoft.com, delegated Mail.*
scopes; the signature is checked against the IdP's JWKS over HTTPS. The stand-in follows
Microsoft's published behaviour (each module cites its documentation page); tests/support/graph.py
has fixtures and a helper that gets a Graph token through msal. Control API: control.py.
"""
from .model import Folder, Mailbox, Message
from .server import GraphServer

__all__ = ["GraphServer", "Mailbox", "Folder", "Message"]
