"""Query parameters read strictly: a malformed one is a 400 that names it, never a 500 further down.

Every page and API endpoint reads its query string through these functions, so `page=²`,
`page=99999999999999999999`, `q=%00abc` or `status=bogus` end here with a sentence instead of
reaching the database (SQLite raises OverflowError on integers past 64 bits; PostgreSQL refuses
NUL in text).
"""
from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from flask import request
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter, ValidationError

MAX_PAGE = 1_000_000  # 50 million tickets at 50 a page; the offset stays far inside 64 bits
MAX_SEARCH = 500
MAX_ADDRESS = 320
MAX_DB_ID = 2 ** 63 - 1  # BIGINT; ids past it do not exist anywhere


class BadParameter(BadRequest):
    """400 whose description is the sentence shown to the person (page) or script (`detail`)."""

    def __init__(self, sentence: str) -> None:
        super().__init__(description=sentence)


def _raw(name: str) -> str | None:
    value = request.args.get(name)
    return None if value is None or value == "" else value


def has_control_characters(value: str) -> bool:
    """NUL, line breaks and other C0/C1 controls, and Unicode line/paragraph separators."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value)


def is_page_number(value: str) -> bool:
    """1 to MAX_PAGE in ASCII digits: str.isdigit() accepts "²" and other digits int() refuses."""
    return value.isascii() and value.isdigit() and len(value) <= len(str(MAX_PAGE)) and 1 <= int(value) <= MAX_PAGE


def page(name: str = "page") -> int:
    value = _raw(name)
    if value is None:
        return 1
    if not is_page_number(value):
        raise BadParameter(f"{name} must be a whole number from 1 to {MAX_PAGE:,}.")
    return int(value)


def choice(name: str, allowed: Iterable[str]) -> str | None:
    """One of `allowed`, or None when absent or empty (no filter)."""
    allowed = tuple(allowed)
    value = _raw(name)
    if value is not None and value not in allowed:
        raise BadParameter(f"{name} must be one of {', '.join(allowed)} (or left out).")
    return value


def flag(name: str) -> bool:
    """"1" is on; "0" or absent is off; anything else is a mistake worth saying so."""
    value = _raw(name)
    if value not in (None, "0", "1"):
        raise BadParameter(f"{name} must be 1 or 0 (or left out).")
    return value == "1"


def search_text(name: str = "q") -> str | None:
    value = _raw(name)
    if value is None or not value.strip():
        return None
    if has_control_characters(value):
        raise BadParameter(f"The search text ({name}) contains a control character such as %00 or a line break; "
                           "remove it and search again.")
    if len(value) > MAX_SEARCH:
        raise BadParameter(f"The search text ({name}) is longer than {MAX_SEARCH} characters; shorten it.")
    return value.strip()


def mailbox_address(name: str = "account") -> str | None:
    """A mailbox filter: the mailbox's address (what /api/v1/tickets reports as a ticket's `account`)."""
    value = _raw(name)
    if value is None:
        return None
    value = value.strip().lower()
    local, at, domain = value.partition("@")
    if not at or not local or not domain or "@" in domain or len(value) > MAX_ADDRESS \
            or has_control_characters(value) or any(ch.isspace() for ch in value):
        raise BadParameter(f"{name} must be a mailbox address such as support@contoso.com (or left out).")
    return value


class DatabaseIdConverter(IntegerConverter):
    """`<int:...>` in every route: an id past 64 bits (or thousands of digits, which int() refuses) is
    "no such page", a 404, instead of an overflow in the database driver."""

    def __init__(self, map, *args, **kwargs) -> None:
        kwargs.setdefault("max", MAX_DB_ID)
        super().__init__(map, *args, **kwargs)

    def to_python(self, value: str):
        if len(value) > len(str(MAX_DB_ID)):
            raise ValidationError()
        return super().to_python(value)
