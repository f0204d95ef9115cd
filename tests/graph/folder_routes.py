"""Mail folders: list (paged), get, create under the root or as a child folder.

https://learn.microsoft.com/graph/api/user-list-mailfolders (default page 10, nextLink with
$skip, hidden folders only with includeHiddenFolders=true), /graph/api/mailfolder-get,
/graph/api/mailfolder-list-childfolders, /graph/api/mailfolder-post-childfolders and
/graph/api/user-post-mailfolders (201; 409 ErrorFolderExists for a duplicate name).
Well-known names (inbox, sentitems, deleteditems, archive, drafts, junkemail, ...) work wherever
an id does, in any case.
"""
from __future__ import annotations

from typing import Any, Callable

from werkzeug.wrappers import Response

from . import errors
from .http import Ctx, Segment, json_response
from .odata import parse_int
from .render import FOLDER_PROPERTIES, folder_json, parse_select

Action = Callable[[], Response]


def only(ctx: Ctx, *methods: str) -> None:
    if ctx.request.method not in methods:
        raise errors.GraphError(405, "BadRequest",
                                f"The HTTP method '{ctx.request.method}' is not supported "
                                "for this resource.")


def collection(srv: Any, ctx: Ctx, parent_key: str, rest: list[Segment],
               i: int) -> tuple[str, Action]:
    if i != len(rest):
        raise errors.segment_not_found(rest[i].raw)
    only(ctx, "GET", "POST")
    if ctx.request.method == "POST":
        return "write", lambda: _create(srv, ctx, parent_key)
    return "read", lambda: _list(srv, ctx, parent_key)


def get(srv: Any, ctx: Ctx, key: str) -> Response:
    select = parse_select(ctx.args.get("$select"), FOLDER_PROPERTIES,
                          "Microsoft.OutlookServices.MailFolder")
    with srv.store.lock:
        folder = srv.store.folder(ctx.box, key)
        body = folder_json(ctx.box, folder, select)
    return json_response({"@odata.context": f"{ctx.base}/$metadata#users('{ctx.box.object_id}')"
                          "/mailFolders/$entity", **body})


def _list(srv: Any, ctx: Ctx, parent_key: str) -> Response:
    args = ctx.args
    select = parse_select(args.get("$select"), FOLDER_PROPERTIES,
                          "Microsoft.OutlookServices.MailFolder")
    top = parse_int(args, "$top", 10, 1, 1000)
    skip = parse_int(args, "$skip", 0, 0, 10 ** 9)
    hidden = args.get("includehiddenfolders", "").lower() == "true"
    with srv.store.lock:
        parent = srv.store.folder(ctx.box, parent_key)
        folders = [f for f in ctx.box.children(parent.folder_id) if hidden or not f.hidden]
        page = [folder_json(ctx.box, f, select) for f in folders[skip:skip + top]]
    body: dict[str, Any] = {"@odata.context": f"{ctx.base}/$metadata#users('{ctx.box.object_id}')"
                            "/mailFolders", "value": page}
    if skip + top < len(folders):
        params = {k: v for k, v in ctx.request.args.items() if k.lower() != "$skip"}
        body["@odata.nextLink"] = ctx.link(ctx.request.path.split("/v1.0/", 1)[1],
                                           {**params, "$skip": str(skip + top)})
    return json_response(body)


def _create(srv: Any, ctx: Ctx, parent_key: str) -> Response:
    data = ctx.json_body()
    name = str((data or {}).get("displayName") or "").strip() if isinstance(data, dict) else ""
    if not name:
        raise errors.bad_request("The value of the parameter 'DisplayName' is empty.",
                                 "ErrorInvalidParameter")
    with srv.store.lock:
        parent = srv.store.folder(ctx.box, parent_key)
        folder = srv.store.create_folder(ctx.box, parent, name, bool(data.get("isHidden")))
        body = folder_json(ctx.box, folder)
    return json_response({"@odata.context": f"{ctx.base}/$metadata#users('{ctx.box.object_id}')"
                          "/mailFolders/$entity", **body}, 201)
