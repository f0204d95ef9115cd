"""Messages and sendMail under /me and /users/{id | userPrincipalName}; folders in folder_routes.

`plan()` only reads the path: it answers which permission the call needs ("read", "write",
"send") and a closure doing the work, so the router can check rights and throttling first.
Docs per endpoint group:
- messages: https://learn.microsoft.com/graph/api/user-list-messages (default page 10, $top
  1-1000, nextLink with $skip, newest first), /graph/api/message-get, /graph/outlook-get-mime-message
  ($value), /graph/api/message-update, /graph/api/message-move (201, new id),
  /graph/api/message-copy, /graph/api/message-delete (204), /graph/api/message-permanentdelete
- delta: see delta_routes.py; sending: /graph/api/user-sendmail (see sending.py)
"""
from __future__ import annotations

from typing import Any, Callable

from werkzeug.wrappers import Response

from . import errors, folder_routes
from .delta_routes import delta
from .folder_routes import only
from .http import Ctx, Segment, empty, json_response
from .model import Message
from .odata import parse_filter, parse_int, parse_orderby, resolve
from .render import MESSAGE_PROPERTIES, SELECT_ONLY, message_json, parse_select

Action = Callable[[], Response]
UPDATABLE = {"isread", "categories", "flag", "importance", "inferenceclassification"}
DRAFT_ONLY = {"subject", "body", "torecipients", "ccrecipients", "bccrecipients", "replyto",
              "from", "sender", "internetmessageheaders", "isdeliveryreceiptrequested",
              "isreadreceiptrequested", "uniquebody"}
FILTERABLE = [p for p in MESSAGE_PROPERTIES if p not in ("body",)]


def _key(rest: list[Segment], i: int) -> tuple[str | None, int]:
    """The key of rest[i-1] if given in parentheses, else rest[i] as a key segment."""
    key = rest[i - 1].key
    if key is None and i < len(rest):
        return rest[i].raw, i + 1
    return key, i


def plan(srv: Any, ctx: Ctx, rest: list[Segment]) -> tuple[str, Action]:
    head = rest[0]
    if head.name == "sendmail" and len(rest) == 1:
        only(ctx, "POST")
        return "send", lambda: send_mail(srv, ctx)
    if head.name == "messages":
        return _messages(srv, ctx, None, rest, 1)
    if head.name != "mailfolders":
        raise errors.segment_not_found(head.raw)
    folder_key, i = _key(rest, 1)
    if folder_key is None:
        return folder_routes.collection(srv, ctx, "msgfolderroot", rest, i)
    while i < len(rest):
        seg = rest[i]
        if seg.name == "childfolders":
            child, j = _key(rest, i + 1)
            if child is None:
                return folder_routes.collection(srv, ctx, folder_key, rest, j)
            folder_key, i = child, j
        elif seg.name == "messages":
            return _messages(srv, ctx, folder_key, rest, i + 1)
        else:
            raise errors.segment_not_found(seg.raw)
    only(ctx, "GET")
    key = folder_key
    return "read", lambda: folder_routes.get(srv, ctx, key)


# ---- messages ---------------------------------------------------------------------------------

def _messages(srv: Any, ctx: Ctx, folder_key: str | None, rest: list[Segment],
              i: int) -> tuple[str, Action]:
    if i == len(rest) and rest[i - 1].key is None:
        only(ctx, "GET")
        return "read", lambda: _message_list(srv, ctx, folder_key)
    if i < len(rest) and rest[i].name == "delta" and rest[i - 1].key is None:
        if i + 1 != len(rest):
            raise errors.segment_not_found(rest[i + 1].raw)
        only(ctx, "GET")
        return "read", lambda: delta(srv, ctx, folder_key)
    message_key, j = _key(rest, i)
    tail = rest[j:]
    if not tail:
        only(ctx, "GET", "PATCH", "DELETE")
        method = ctx.request.method
        if method == "GET":
            return "read", lambda: _message_get(srv, ctx, folder_key, message_key)
        if method == "PATCH":
            return "write", lambda: _message_update(srv, ctx, folder_key, message_key)
        return "write", lambda: _message_delete(srv, ctx, folder_key, message_key, False)
    if len(tail) == 1 and tail[0].name == "$value":
        only(ctx, "GET")
        return "read", lambda: _message_value(srv, ctx, folder_key, message_key)
    if len(tail) == 1 and tail[0].name in ("move", "copy"):
        only(ctx, "POST")
        copy = tail[0].name == "copy"
        return "write", lambda: _message_move(srv, ctx, folder_key, message_key, copy)
    if len(tail) == 1 and tail[0].name == "permanentdelete":
        only(ctx, "POST")
        return "write", lambda: _message_delete(srv, ctx, folder_key, message_key, True)
    raise errors.segment_not_found(tail[0].raw)


def _find(srv: Any, ctx: Ctx, folder_key: str | None, message_key: str) -> Message:
    message = srv.store.message(ctx.box, message_key)
    if folder_key is not None and srv.store.folder(ctx.box, folder_key).folder_id \
            != message.folder_id:
        raise errors.item_not_found()
    return message


def _render(ctx: Ctx, message: Message, select: list[str] | None) -> dict[str, Any]:
    return message_json(message, select, immutable=ctx.prefs.immutable_ids,
                        body_text=ctx.prefs.body_text)


def _entity(ctx: Ctx, body: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.context": f"{ctx.base}/$metadata#users('{ctx.box.object_id}')"
            "/messages/$entity", **body}


def _prefer_headers(ctx: Ctx) -> dict[str, str]:
    applied = ctx.prefs.applied()
    return {"Preference-Applied": applied} if applied else {}


def _order_value(message: Message, row: Callable[[Message], dict[str, Any]],
                 path: str) -> tuple[int, Any]:
    """Sort key; times at full precision (the JSON has seconds), arrival order breaking ties."""
    if path.lower() == "receiveddatetime":
        return (1, (message.received, message.entered_seq))
    return _sort_key(resolve(row(message), path))


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, str):
        return (1, value.lower())
    return (1, value)


def _message_list(srv: Any, ctx: Ctx, folder_key: str | None) -> Response:
    args = ctx.args
    select = parse_select(args.get("$select"), MESSAGE_PROPERTIES + SELECT_ONLY)
    top = parse_int(args, "$top", 10, 1, 1000)
    skip = parse_int(args, "$skip", 0, 0, 10 ** 9)
    predicate = parse_filter(args.get("$filter"))
    order = parse_orderby(args.get("$orderby")) or [("receivedDateTime", True)]
    with srv.store.lock:
        if folder_key is None:
            purged = ctx.box.well_known["recoverableitemsdeletions"]
            items = [m for m in ctx.box.messages.values() if m.folder_id != purged]
        else:
            items = ctx.box.in_folder(srv.store.folder(ctx.box, folder_key).folder_id)
        cache: dict[int, dict[str, Any]] = {}

        def row(message: Message) -> dict[str, Any]:  # the JSON, only when filtering needs it
            if id(message) not in cache:
                cache[id(message)] = message_json(message, FILTERABLE,
                                                  immutable=ctx.prefs.immutable_ids)
            return cache[id(message)]
        rows = [m for m in items if predicate is None or predicate(row(m))]
        for path, descending in reversed(order):
            rows.sort(key=lambda m, p=path: _order_value(m, row, p), reverse=descending)
        page = [_render(ctx, m, select) for m in rows[skip:skip + top]]
    scope = f"users('{ctx.box.object_id}')" + \
        (f"/mailFolders('{folder_key}')" if folder_key else "")
    body: dict[str, Any] = {"@odata.context": f"{ctx.base}/$metadata#{scope}/messages", "value": page}
    if skip + top < len(rows):
        params = {k: v for k, v in ctx.request.args.items() if k.lower() != "$skip"}
        body["@odata.nextLink"] = ctx.link(ctx.request.path.split("/v1.0/", 1)[1],
                                           {**params, "$skip": str(skip + top)})
    return json_response(body, headers=_prefer_headers(ctx))


def _message_get(srv: Any, ctx: Ctx, folder_key: str | None, key: str) -> Response:
    select = parse_select(ctx.args.get("$select"), MESSAGE_PROPERTIES + SELECT_ONLY)
    with srv.store.lock:
        body = _render(ctx, _find(srv, ctx, folder_key, key), select)
    return json_response(_entity(ctx, body), headers=_prefer_headers(ctx))


def _message_value(srv: Any, ctx: Ctx, folder_key: str | None, key: str) -> Response:
    with srv.store.lock:
        raw = _find(srv, ctx, folder_key, key).raw
    return Response(raw, status=200, content_type="text/plain")


def _message_update(srv: Any, ctx: Ctx, folder_key: str | None, key: str) -> Response:
    data = ctx.json_body()
    if not isinstance(data, dict):
        raise errors.bad_request("Empty Payload. JSON content expected.")
    changes: dict[str, Any] = {}
    for name, value in data.items():
        lowered = name.lower()
        if lowered in DRAFT_ONLY:
            raise errors.bad_request("Update operation is invalid for property of a sent "
                                     "message.", "ErrorInvalidPropertyUpdateSentMessage")
        if lowered not in UPDATABLE:
            raise errors.bad_request(f"Property '{name}' does not exist on type "
                                     "'Microsoft.OutlookServices.Message' or is read-only.")
        if lowered == "isread":
            if not isinstance(value, bool):
                raise errors.bad_request("Cannot convert the literal to the expected type "
                                         "'Edm.Boolean'.")
            changes["is_read"] = value
        elif lowered == "categories":
            changes["categories"] = [str(c) for c in value or []]
        elif lowered == "flag":
            changes["flag_status"] = str((value or {}).get("flagStatus") or "notFlagged")
        elif lowered == "importance":
            if str(value).lower() not in ("low", "normal", "high"):
                raise errors.bad_request(f"Invalid importance '{value}'.")
            changes["importance"] = str(value).lower()
    with srv.store.lock:
        message = _find(srv, ctx, folder_key, key)
        if changes:
            srv.store.update(ctx.box, message, **changes)
        body = _render(ctx, message, None)
    return json_response(_entity(ctx, body), headers=_prefer_headers(ctx))


def _message_move(srv: Any, ctx: Ctx, folder_key: str | None, key: str, copy: bool) -> Response:
    data = ctx.json_body()
    target = str((data or {}).get("destinationId") or "") if isinstance(data, dict) else ""
    if not target:
        raise errors.bad_request("The value of the parameter 'DestinationId' is empty.",
                                 "ErrorInvalidParameter")
    with srv.store.lock:
        message = _find(srv, ctx, folder_key, key)
        folder = srv.store.folder(ctx.box, target)
        moved = srv.store.copy(ctx.box, message, folder) if copy else \
            srv.store.move(ctx.box, message, folder)
        body = _render(ctx, moved, None)
    return json_response({"@odata.context": f"{ctx.base}/$metadata#message",
                          "@odata.type": "#microsoft.graph.message", **body}, 201,
                         headers=_prefer_headers(ctx))


def _message_delete(srv: Any, ctx: Ctx, folder_key: str | None, key: str,
                    permanent: bool) -> Response:
    with srv.store.lock:
        message = _find(srv, ctx, folder_key, key)
        if permanent:
            srv.store.purge(ctx.box, message)
        else:
            srv.store.delete(ctx.box, message)
    return empty(204)


def send_mail(srv: Any, ctx: Ctx) -> Response:
    mimetype = (ctx.request.mimetype or "").lower()
    if mimetype == "text/plain":
        srv.sender.mime(ctx.caller, ctx.box, ctx.request.get_data())
    elif mimetype in ("application/json", ""):
        srv.sender.json(ctx.caller, ctx.box, ctx.json_body())
    else:
        raise errors.GraphError(415, "UnsupportedMediaType",
                                f"Content-Type '{mimetype}' is not supported; use "
                                "application/json or text/plain (base64 MIME).")
    return empty(202)
