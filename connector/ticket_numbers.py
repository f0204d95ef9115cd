"""Ticket numbers and the subject tag `[#number]` that ties a customer's answer to its ticket."""
from __future__ import annotations

import re

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from .models import Ticket

TAG_RE = re.compile(r"\[#(\d{1,12})\]")
FIRST_NUMBER = 10001


def ticket_tag(number: int) -> str:
    return f"[#{number}]"


def next_ticket_number(session: Session) -> int:
    """A number for one new ticket (see `take_ticket_numbers`)."""
    return take_ticket_numbers(session.connection(), 1, peek_ticket_number(session.connection()))[0]


def peek_ticket_number(conn) -> int:
    """The number the next new ticket will most likely get, without taking it.

    SQLite: max(number) + 1, and certain (every transaction holds the write lock from its BEGIN
    IMMEDIATE, see db.py). PostgreSQL: the next value of the `ticket_numbers` sequence (revision
    0006), certain unless another transaction takes numbers meanwhile.
    """
    if conn.dialect.name == "postgresql":
        return conn.execute(text("SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END "
                                 "FROM ticket_numbers")).scalar()
    return (conn.execute(select(func.max(Ticket.number))).scalar() or FIRST_NUMBER - 1) + 1


def take_ticket_numbers(conn, count: int, first: int) -> list[int]:
    """`count` numbers for new tickets, ascending: SQLite from `first` on (its `peek_ticket_number`);
    PostgreSQL from the sequence, which never hands a number out twice and never waits for another
    transaction (the numbers are consecutive unless another one took numbers meanwhile)."""
    if conn.dialect.name == "postgresql":
        return list(conn.execute(text("SELECT nextval('ticket_numbers') FROM generate_series(1, :count)"),
                                 {"count": count}).scalars())
    return list(range(first, first + count))

