"""A small installation with one of everything, for tests that try every route as every kind of person.

    world = seed(app, org)          # people, two mailboxes, tickets, an outbox item, a quarantined mail
    client = world.client("member")  # signed in (or "anonymous", or "token:owner" for a bearer token)

The people, by what the product lets them do with the mailbox `world.address`:
- owner: connected it (`Account.connected_by_id`); manages its settings, reconnect, disconnect, members;
- member: added to it; reads and answers its tickets;
- outsider: an agent who is neither (and owns a mailbox of their own, `world.foreign_*`);
- admin: sees and manages everything;
- other: a second member, the one that member-management routes remove;
- spare: a user who is nobody's member yet, the one member-management routes add.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import select

from connector import api_tokens, bulk_insert, outbox, tickets, users
from connector.crypto import hash_password
from connector.mail.parse import parse_message
from connector.models import Account, AccountMember, ImportFailure, OutboxItem, User
from connector.ingest import FetchedMail, ingest
from tests.support.app import PASSWORD, csrf_token, login
from tests.support.mail import register

ROLES = ("anonymous", "outsider", "member", "owner", "admin")
TOKEN_ROLES = ("token:outsider", "token:member", "token:owner", "token:admin")
_n = itertools.count(1)
_password_hash: list[str] = []  # hashed once: scrypt is slow on purpose, and a world has six people


def _hashed_password() -> str:
    if not _password_hash:
        _password_hash.append(hash_password(PASSWORD))
    return _password_hash[0]


def mail_with_everything(to: str, subject: str) -> bytes:
    """HTML with an inline image, a text part and an attachment: every article route has something to show."""
    msg = EmailMessage()
    msg["From"] = "Customer <customer@example.net>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.net")
    msg.set_content("The text of the mail.")
    cid = make_msgid(domain="example.net")
    msg.add_alternative(f'<p>The HTML of the mail <img src="cid:{cid[1:-1]}" alt="logo"></p>', subtype="html")
    msg.get_payload()[1].add_related(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image", "gif", cid=cid)
    msg.add_attachment(b"%PDF-1.4 an invoice", maintype="application", subtype="pdf", filename="invoice.pdf")
    return msg.as_bytes()


@dataclass
class World:
    app: object
    emails: dict[str, str]
    user_ids: dict[str, int]
    tokens: dict[str, str]
    address: str
    subject: str
    account_id: int
    ticket_id: int
    article_id: int
    outgoing_article_id: int
    attachment_id: int
    failure_id: int
    revocable_token_id: int  # a second API token of the member's, for the revoke route
    foreign_account_id: int
    foreign_ticket_id: int
    foreign_article_id: int
    foreign_attachment_id: int
    _clients: dict = field(default_factory=dict)

    def client(self, role: str):
        """A test client for `role`, signed in once and reused. Token roles carry only the bearer header
        (and an anonymous session's CSRF token, so a refusal cannot be the CSRF check's)."""
        if role not in self._clients:
            client = self.app.test_client()
            if role in ROLES and role != "anonymous":
                response = login(client, self.emails[role])
                assert response.status_code == 302, f"{role} could not sign in"
                client.csrf = csrf_token(client.get("/account/password").get_data(as_text=True))
            else:
                client.csrf = csrf_token(client.get("/login").get_data(as_text=True))
            if role.startswith("token:"):
                client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {self.tokens[role.split(':', 1)[1]]}"
            self._clients[role] = client
        return self._clients[role]


def seed(app, org=None) -> World:
    """Everything in one database; with `org` the Azure app is registered too (connect routes need it)."""
    rt = app.extensions["connector"]
    n = next(_n)
    if org is not None:
        register(app, org)
    with rt.db.session() as session:
        people = {role: User(email=f"{role}{n}@world.test", password_hash=_hashed_password(),
                             role="admin" if role == "admin" else "agent")
                  for role in ("admin", "owner", "member", "outsider", "other", "spare")}
        session.add_all(people.values())
        session.flush()
        address, foreign_address = f"desk{n}@company.test", f"elsewhere{n}@outsider.test"
        account = Account(address=address, connected_by_id=people["owner"].id, token_owner=address)
        foreign = Account(address=foreign_address, connected_by_id=people["outsider"].id,
                          token_owner=foreign_address)
        session.add_all([account, foreign])
        session.flush()
        session.add_all([AccountMember(account_id=account.id, user_id=people["member"].id),
                         AccountMember(account_id=account.id, user_id=people["other"].id)])
        subject = f"Confidential case {n} of {address}"
        raw = mail_with_everything(address, subject)
        ticket_id = ingest(session, account, [FetchedMail(raw, parse_message(raw))])[0].ticket_id
        foreign_raw = mail_with_everything(foreign_address, f"The outsider's own case {n}")
        foreign_ticket_id = ingest(session, foreign, [FetchedMail(foreign_raw, parse_message(foreign_raw))])[0].ticket_id
        session.flush()
        ticket = tickets.get_ticket(session, people["admin"], ticket_id)
        [incoming] = ticket.articles
        attachment = next(a for a in incoming.attachments if a.filename == "invoice.pdf")
        reply = outbox.queue_reply(session, ticket, people["owner"], "Our first answer.")
        session.flush()
        item = session.scalar(select(OutboxItem).where(OutboxItem.article_id == reply.id))
        item.state, item.last_error = "failed", "The server said no (a test's failed delivery)."
        foreign_ticket = tickets.get_ticket(session, people["admin"], foreign_ticket_id)
        [foreign_article] = foreign_ticket.articles
        failure = ImportFailure(account_id=account.id, uidvalidity=1, uid=7, attempts=3, quarantined=True,
                                last_error="a test's broken mail", raw_sha256=bulk_insert.store_blob(session, raw))
        session.add(failure)
        session.flush()
        tokens = {role: users.issue_api_token(session, people[role])
                  for role in ("outsider", "member", "owner", "admin")}
        _, revocable = api_tokens.create(session, people["member"], "the member's script")
        return World(
            app=app, emails={role: user.email for role, user in people.items()},
            user_ids={role: user.id for role, user in people.items()}, tokens=tokens, address=address,
            subject=subject, account_id=account.id, ticket_id=ticket_id, article_id=incoming.id,
            outgoing_article_id=reply.id, attachment_id=attachment.id, failure_id=failure.id,
            revocable_token_id=revocable.id,
            foreign_account_id=foreign.id, foreign_ticket_id=foreign_ticket_id,
            foreign_article_id=foreign_article.id,
            foreign_attachment_id=next(a.id for a in foreign_article.attachments if a.filename == "invoice.pdf"))

