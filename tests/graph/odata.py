"""OData query options and Prefer headers, the subset Outlook's mail API supports.

https://learn.microsoft.com/graph/query-parameters: $select, $top, $skip, $filter (eq, ne, gt,
ge, lt, le, and, or, not, parentheses, startswith/endswith/contains, paths such as
from/emailAddress/address), $orderby. String comparisons are case-insensitive, as in Exchange.
Filters are evaluated against the message's JSON representation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping

from . import errors
from .clock import parse_iso

_TOKEN = re.compile(r"""\s*(?:
    (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)?)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<punct>[(),])
  | (?P<word>[A-Za-z_@][A-Za-z0-9_./@]*)
)""", re.VERBOSE)
COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
FUNCTIONS = {"startswith", "endswith", "contains"}


def _invalid(detail: str = "") -> errors.GraphError:
    return errors.bad_request("Invalid filter clause" + (f": {detail}" if detail else ""))


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise _invalid(f"syntax error at position {pos}")
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "string":
            out.append(("lit", value[1:-1].replace("''", "'")))
        elif kind == "datetime":
            out.append(("lit", parse_iso(value)))
        elif kind == "number":
            out.append(("lit", float(value)))
        elif kind == "word" and value.lower() in ("true", "false", "null"):
            out.append(("lit", {"true": True, "false": False, "null": None}[value.lower()]))
        else:
            out.append((kind or "", value))
    return out


def resolve(item: Mapping[str, Any], path: str) -> Any:
    value: Any = item
    for part in path.split("/"):
        if not isinstance(value, Mapping):
            return None
        key = next((k for k in value if k.lower() == part.lower()), None)
        value = value.get(key) if key else None
    return value


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        try:
            if re.match(r"^\d{4}-\d\d-\d\dT", value):
                return parse_iso(value)
        except ValueError:
            pass
        return value.lower()
    if isinstance(value, bool) or value is None or isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def _compare(op: str, left: Any, right: Any) -> bool:
    left, right = _norm(left), _norm(right)
    if op == "eq":
        return left == right
    if op == "ne":
        return left != right
    if left is None or right is None or type(left) is not type(right):
        return False
    return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op]


Predicate = Callable[[Mapping[str, Any]], bool]


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, Any]:
        token = self.peek()
        if token is None or (kind and token[0] != kind) or \
                (value and str(token[1]).lower() != value):
            raise _invalid(f"expected {value or kind}")
        self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token and token[0] == "word" and str(token[1]).lower() == word:
            self.pos += 1
            return True
        return False

    def parse(self) -> Predicate:
        predicate = self.disjunction()
        if self.peek() is not None:
            raise _invalid(f"unexpected '{self.peek()[1]}'")  # type: ignore[index]
        return predicate

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.keyword("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda m: any(p(m) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.unary()]
        while self.keyword("and"):
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda m: all(p(m) for p in parts))

    def unary(self) -> Predicate:
        if self.keyword("not"):
            inner = self.unary()
            return lambda m: not inner(m)
        token = self.peek()
        if token == ("punct", "("):
            self.take()
            inner = self.disjunction()
            self.take("punct", ")")
            return inner
        path = str(self.take("word")[1])
        if path.lower() in FUNCTIONS:
            self.take("punct", "(")
            target = str(self.take("word")[1])
            self.take("punct", ",")
            needle = str(self.take("lit")[1]).lower()
            self.take("punct", ")")
            test = {"startswith": str.startswith, "endswith": str.endswith,
                    "contains": str.__contains__}[path.lower()]
            return lambda m: test(str(resolve(m, target) or "").lower(), needle)
        op = str(self.take("word")[1]).lower()
        if op not in COMPARISONS:
            raise _invalid(f"unsupported operator '{op}'")
        literal = self.take("lit")[1]
        return lambda m: _compare(op, resolve(m, path), literal)


def parse_filter(text: str | None) -> Predicate | None:
    return _Parser(text).parse() if text and text.strip() else None


def parse_orderby(text: str | None) -> list[tuple[str, bool]]:
    """[(path, descending)]."""
    out = []
    for clause in (text or "").split(","):
        words = clause.split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise errors.bad_request(f"Invalid $orderby clause '{clause.strip()}'.")
        out.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return out


def parse_int(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.bad_request(f"Invalid value '{raw}' for query option {name}.") from None
    if not low <= value <= high:
        raise errors.bad_request(f"The value of {name} must be between {low} and {high}.",
                                 "ErrorInvalidParameter" if name == "$top" else "BadRequest")
    return value


@dataclass(frozen=True)
class Preferences:
    """Prefer header values (https://learn.microsoft.com/graph/api/resources/message, paging,
    immutable ids)."""

    max_page_size: int | None = None
    body_text: bool = False
    immutable_ids: bool = False

    @classmethod
    def parse(cls, headers: list[str]) -> "Preferences":
        values: dict[str, str] = {}
        for header in headers:
            for item in header.split(","):
                key, _, value = item.strip().partition("=")
                values[key.strip().lower()] = value.strip().strip('"')
        size = values.get("odata.maxpagesize")
        return cls(max_page_size=int(size) if size and size.isdigit() and int(size) > 0 else None,
                   body_text=values.get("outlook.body-content-type", "").lower() == "text",
                   immutable_ids=values.get("idtype", "").lower() == "immutableid")

    def applied(self, page_size_used: bool = False) -> str | None:
        parts = []
        if page_size_used and self.max_page_size:
            parts.append(f"odata.maxpagesize={self.max_page_size}")
        if self.body_text:
            parts.append('outlook.body-content-type="text"')
        if self.immutable_ids:
            parts.append('IdType="ImmutableId"')
        return ", ".join(parts) or None
