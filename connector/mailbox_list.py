"""One page of the mailboxes a person may see, optionally narrowed to addresses containing a text.

The Mailboxes page used to render every visible mailbox with its settings, transport and members
forms: at 700 mailboxes a GET took about a second, and an admin of 3,000 had no way to find one.
Paging keeps the page's cost to PAGE_SIZE rows whatever the installation's size, and the search is
how an admin finds a mailbox among thousands. Visibility is `accounts.visible_accounts_query`, so a
member never sees other mailboxes, on any page or in any search.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .accounts import visible_accounts_query
from .models import Account, User

PAGE_SIZE = 50


@dataclass(frozen=True)
class MailboxPage:
    """`page` is the page shown (a page past the end shows the last one); `total` counts every match."""
    items: list[Account]
    page: int
    pages: int
    total: int
    q: str | None

    @property
    def previous_page(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next_page(self) -> int | None:
        return self.page + 1 if self.page < self.pages else None

    @property
    def first_number(self) -> int:
        """The 1-based position of the page's first row among all matches (0 when there is none)."""
        return 0 if not self.items else (self.page - 1) * PAGE_SIZE + 1


def _matching(user: User, q: str | None):
    query = visible_accounts_query(user)
    if q:
        # addresses are stored in lower case; autoescape makes % and _ in the text plain characters
        query = query.where(func.lower(Account.address).contains(q.lower(), autoescape=True))
    return query


def mailbox_page(session: Session, user: User, *, page: int = 1, q: str | None = None,
                 per_page: int = PAGE_SIZE) -> MailboxPage:
    """Alphabetical by address; counting first so that a page past the end (a mailbox on the last page
    was just disconnected) shows the last page instead of an empty one."""
    query = _matching(user, q)
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    items = list(session.scalars(query.order_by(Account.address, Account.id)
                                 .limit(per_page).offset((page - 1) * per_page)))
    return MailboxPage(items=items, page=page, pages=pages, total=total, q=q)
