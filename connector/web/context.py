"""Access to the runtime and the per-request database session from views."""
from __future__ import annotations

from flask import current_app, g
from sqlalchemy.orm import Session

from .. import bodies, tickets
from ..models import Ticket, User
from ..runtime import Runtime


def runtime() -> Runtime:
    return current_app.extensions["connector"]


def db() -> Session:
    """The request's session; committed by the view that changes something."""
    if "db_session" not in g:
        g.db_session = runtime().db.sessionmaker()
    return g.db_session


def readable_ticket(user: User, ticket_id: int) -> Ticket | None:
    """The ticket if `user` may see it, with every article's body ready to read (a big import leaves
    bodies for later; they are extracted here if the worker has not got to them yet, each within the parse
    budget, so opening a ticket never hangs on a hostile mail)."""
    ticket = tickets.get_ticket(db(), user, ticket_id)
    if ticket is not None:
        mail = runtime().settings.mail
        bodies.ensure_extracted(db(), ticket.articles, max_size=mail.max_message_bytes,
                                budget=mail.parse_timeout_seconds)
    return ticket
