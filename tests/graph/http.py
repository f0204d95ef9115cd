"""Request context, path segments and JSON answers shared by the route modules.

Graph path segments are case-insensitive and keys may be given as a segment or in parentheses:
`/me/mailFolders/inbox/messages` and `/me/mailfolders('Inbox')/messages` are the same resource.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from werkzeug.wrappers import Request, Response

from . import errors
from .auth import Caller
from .model import Mailbox
from .odata import Preferences

JSON_TYPE = ("application/json;odata.metadata=minimal;odata.streaming=true;"
             "IEEE754Compatible=false;charset=utf-8")
_KEYED = re.compile(r"^(?P<name>[^()]+)\((?P<quote>'?)(?P<key>.*)(?P=quote)\)$")
KNOWN_OPTIONS = {"$select", "$top", "$skip", "$filter", "$orderby", "$expand", "$count",
                 "$skiptoken", "$deltatoken", "$search", "changetype", "includehiddenfolders"}


@dataclass(frozen=True)
class Segment:
    raw: str
    name: str  # lower-case name without the key
    key: str | None  # from name('key') / name(key)


def segments(path: str) -> list[Segment]:
    out = []
    for part in path.strip("/").split("/"):
        if not part:
            continue
        match = _KEYED.match(part)
        if match:
            out.append(Segment(part, match.group("name").lower(),
                               match.group("key").replace("''", "'")))
        else:
            out.append(Segment(part, part.lower(), None))
    return out


@dataclass
class Ctx:
    """One request on its way through: who calls, which mailbox, what they prefer."""

    request: Request
    request_id: str
    base: str  # https://127.0.0.1:PORT/v1.0
    caller: Caller | None = None
    box: Mailbox | None = None
    mailbox_path: str = "me"  # as the request named it: "me" or "users/{id}"
    prefs: Preferences = Preferences()

    @property
    def args(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.request.args.items()}

    def check_options(self) -> None:
        for name in self.request.args:
            if name.startswith("$") and name.lower() not in KNOWN_OPTIONS:
                raise errors.bad_request(f"Query option '{name}' is not supported.")

    def json_body(self) -> Any:
        data = self.request.get_data()
        if not data.strip():
            raise errors.bad_request("Empty Payload. JSON content expected.")
        try:
            return json.loads(data)
        except ValueError:
            raise errors.bad_request("Unable to read JSON request payload. Please ensure "
                                     "Content-Type header is set and payload is of valid JSON "
                                     "format.") from None

    def link(self, path: str, params: dict[str, str]) -> str:
        """An @odata.nextLink / deltaLink: `$` kept literal in option names, as Graph does."""
        query = "&".join(f"{k}={quote(str(v), safe=chr(39) + ',()/:')}" for k, v in params.items())
        return f"{self.base}/{path.lstrip('/')}" + (f"?{query}" if query else "")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(data), status=status, content_type=JSON_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def empty(status: int) -> Response:
    return Response(b"", status=status)
