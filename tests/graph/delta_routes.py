"""GET /me/mailFolders/{id}/messages/delta (https://learn.microsoft.com/graph/api/message-delta).

Pages of `Prefer: odata.maxpagesize` (default 10) with @odata.nextLink ($skiptoken) until the
round ends with @odata.deltaLink ($deltatoken). Supported options on the first request only:
$select, changeType, $filter=receivedDateTime ge|gt {value}, $orderby=receivedDateTime desc,
$top. A stale token answers as delta.py describes (410 syncStateNotFound, or 410 resyncRequired
with a Location header holding the initial request).
"""
from __future__ import annotations

import re
from typing import Any

from werkzeug.wrappers import Response

from . import errors
from .delta import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, DeltaError, DeltaQuery
from .http import Ctx, json_response
from .odata import parse_filter, parse_int
from .render import MESSAGE_PROPERTIES, SELECT_ONLY, message_json, parse_select

_RECEIVED_FILTER = re.compile(r"^\s*receivedDateTime\s+(ge|gt)\s+\S+\s*$", re.IGNORECASE)
_ORDER = re.compile(r"^\s*receivedDateTime\s+desc\s*$", re.IGNORECASE)


def _query(srv: Any, ctx: Ctx, folder_id: str) -> DeltaQuery:
    args = ctx.args
    text = args.get("$filter")
    if text and not _RECEIVED_FILTER.match(text):
        raise errors.bad_request("The query filter contains one or more invalid nodes.",
                                 "ErrorInvalidUrlQueryFilter")
    order = args.get("$orderby")
    if order and not _ORDER.match(order):
        raise errors.bad_request("The only supported $orderby for delta is receivedDateTime desc.")
    change = args.get("changetype")
    if change is not None and change.lower() not in ("created", "updated", "deleted"):
        raise errors.bad_request(f"Invalid changeType '{change}'.")
    if "$search" in args:
        raise errors.bad_request("$search is not supported for delta queries.")
    return DeltaQuery(ctx.box.address, folder_id,
                      parse_select(args.get("$select"), MESSAGE_PROPERTIES + SELECT_ONLY),
                      change.lower() if change else None, bool(order), parse_filter(text),
                      srv.delta.generation(ctx.box.address))


def delta(srv: Any, ctx: Ctx, folder_key: str | None) -> Response:
    if folder_key is None:
        raise errors.bad_request("Change tracking of messages is a per-folder operation: use "
                                 "/mailFolders/{id}/messages/delta.")
    args = ctx.args
    with srv.store.lock:
        folder = srv.store.folder(ctx.box, folder_key)
        path = f"{ctx.mailbox_path}/mailFolders('{folder.folder_id}')/messages/delta"
        try:
            if args.get("$skiptoken"):
                round_, offset = srv.delta.next_page(ctx.box, folder.folder_id, args["$skiptoken"])
            elif args.get("$deltatoken"):
                round_, offset = srv.delta.resume(ctx.box, folder.folder_id, args["$deltatoken"])
            else:
                round_, offset = srv.delta.begin(ctx.box, _query(srv, ctx, folder.folder_id))
        except DeltaError as exc:
            if exc.resync:
                exc.error.headers["Location"] = ctx.link(path, {"$deltatoken": ""})
            raise exc.error from None
        size = ctx.prefs.max_page_size or parse_int(args, "$top", DEFAULT_PAGE_SIZE, 1,
                                                    MAX_PAGE_SIZE)
        chunk, skiptoken, deltatoken = srv.delta.page(round_, offset, min(size, MAX_PAGE_SIZE))
        value = []
        for kind, immutable_id, rest_id in chunk:
            message = ctx.box.messages.get(immutable_id)
            if kind == "message" and message is not None and message.folder_id == folder.folder_id:
                value.append({"@odata.type": "#microsoft.graph.message",
                              **message_json(message, round_.query.select,
                                             immutable=ctx.prefs.immutable_ids,
                                             body_text=ctx.prefs.body_text)})
            else:
                value.append({"@odata.type": "#microsoft.graph.message",
                              "id": immutable_id if ctx.prefs.immutable_ids else rest_id,
                              "@removed": {"reason": "deleted"}})
    body: dict[str, Any] = {"@odata.context": f"{ctx.base}/$metadata#Collection(message)"}
    if skiptoken:
        body["@odata.nextLink"] = ctx.link(path, {"$skiptoken": skiptoken})
    else:
        body["@odata.deltaLink"] = ctx.link(path, {"$deltatoken": deltatoken or ""})
    body["value"] = value
    applied = ctx.prefs.applied(page_size_used=True)
    return json_response(body, headers={"Preference-Applied": applied} if applied else None)
