"""/subscriptions: create (with the validation handshake), list, get, renew, delete, reauthorize.

https://learn.microsoft.com/graph/api/subscription-post-subscriptions (201),
/graph/api/subscription-list, /graph/api/subscription-get, /graph/api/subscription-update (200),
/graph/api/subscription-delete (204), /graph/api/subscription-reauthorize (204). Subscriptions
are visible to the app (and, with delegated tokens, the user) that created them; anything else
is 404 ResourceNotFound, like an expired one.
"""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from werkzeug.wrappers import Response

from . import errors, permissions
from .clock import parse_iso
from .http import Ctx, Segment, empty, json_response
from .subscriptions import MIN_MINUTES, Subscription, check_url, \
    parse_change_types, parse_resource, validate_endpoint


def _only(ctx: Ctx, *methods: str) -> None:
    if ctx.request.method not in methods:
        raise errors.GraphError(405, "BadRequest", f"The HTTP method '{ctx.request.method}' is "
                                "not supported for this resource.")


def handle(srv: Any, ctx: Ctx, rest: list[Segment]) -> Response:
    if not rest:
        _only(ctx, "GET", "POST")
        return _create(srv, ctx) if ctx.request.method == "POST" else _list(srv, ctx)
    sub_id = rest[0].raw
    if len(rest) == 2 and rest[1].name == "reauthorize":
        _only(ctx, "POST")
        _touch(srv, ctx, _owned(srv, ctx, sub_id))
        return empty(204)
    if len(rest) > 1:
        raise errors.segment_not_found(rest[1].raw)
    _only(ctx, "GET", "PATCH", "DELETE")
    sub = _owned(srv, ctx, sub_id)
    if ctx.request.method == "DELETE":
        srv.notifier.remove(sub.sub_id)
        return empty(204)
    if ctx.request.method == "PATCH":
        _renew(srv, ctx, sub)
    return json_response(sub.json(ctx.base))


def _owned(srv: Any, ctx: Ctx, sub_id: str) -> Subscription:
    sub = srv.notifier.active(sub_id)
    caller = ctx.caller
    if sub is None or sub.app_id != caller.app_id or \
            (not caller.is_app and sub.creator_id != caller.oid):
        raise errors.resource_not_found()
    return sub


def _list(srv: Any, ctx: Ctx) -> Response:
    caller = ctx.caller
    with srv.notifier.lock:
        subs = [s for s in list(srv.notifier.subscriptions.values())
                if s.app_id == caller.app_id and (caller.is_app or s.creator_id == caller.oid)]
    live = [s for s in subs if srv.notifier.active(s.sub_id) is not None]
    return json_response({"@odata.context": f"{ctx.base}/$metadata#subscriptions",
                          "value": [s.json(ctx.base) for s in live]})


def _expiration(srv: Any, value: Any):
    try:
        moment = parse_iso(str(value))
    except ValueError:
        raise errors.bad_request(f"Invalid expirationDateTime '{value}'.", "InvalidRequest") from None
    now = srv.clock.now()
    if moment <= now:
        raise errors.bad_request("Subscription expiration must be in the future.", "InvalidRequest")
    limit = srv.max_subscription_minutes
    if moment > now + timedelta(minutes=limit):
        raise errors.bad_request(f"Subscription expiration can only be {limit} minutes in the "
                                 "future.", "InvalidRequest")
    return max(moment, now + timedelta(minutes=MIN_MINUTES))


def _handshake(srv: Any, url: str) -> None:
    _, failure = validate_endpoint(url, str(srv.ca.ca_path), srv.validation_timeout)
    if failure:
        raise errors.bad_request(failure, "InvalidRequest")


def _create(srv: Any, ctx: Ctx) -> Response:
    data = ctx.json_body()
    if not isinstance(data, dict):
        raise errors.bad_request("Empty Payload. JSON content expected.")
    for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
        if not data.get(name):
            raise errors.bad_request(f"The request is invalid: '{name}' is required.",
                                     "InvalidRequest")
    if data.get("includeResourceData"):
        raise errors.bad_request("Notifications with resource data need an encryption "
                                 "certificate; this stand-in sends basic notifications only.",
                                 "InvalidRequest")
    change_types = parse_change_types(data["changeType"])
    user_ref, folder_ref = parse_resource(str(data["resource"]))
    box = srv.resolve_mailbox(ctx.caller, user_ref)
    if not box.rest_enabled:
        raise errors.rest_not_enabled()
    permissions.check(ctx.caller, box, "subscribe", srv.sender.send_as)
    with srv.store.lock:
        folder_id = srv.store.folder(box, folder_ref).folder_id if folder_ref else None
    expiration = _expiration(srv, data["expirationDateTime"])
    url = check_url(data["notificationUrl"], "notificationUrl", srv.allow_http_notifications)
    lifecycle = data.get("lifecycleNotificationUrl")
    if lifecycle:
        lifecycle = check_url(lifecycle, "lifecycleNotificationUrl", srv.allow_http_notifications)
    state = data.get("clientState")
    if state is not None and len(str(state)) > 128:
        raise errors.bad_request("clientState must be at most 128 characters.", "InvalidRequest")
    _handshake(srv, url)
    if lifecycle:
        _handshake(srv, lifecycle)
    caller = ctx.caller
    sub = Subscription(str(uuid.uuid4()), str(data["resource"]), box.address, folder_id,
                       change_types, url, lifecycle, None if state is None else str(state),
                       expiration, caller.app_id, caller.oid or caller.app_id, caller.tenant_id,
                       ctx.prefs.immutable_ids, float(caller.claims.get("exp", 0)),
                       str(data.get("latestSupportedTlsVersion") or "v1_2"))
    srv.notifier.add(sub)
    return json_response(sub.json(ctx.base), 201)


def _touch(srv: Any, ctx: Ctx, sub: Subscription) -> None:
    """Renewing or reauthorizing answers a reauthorizationRequired challenge."""
    with srv.notifier.lock:
        sub.needs_reauthorization = False
        sub.paused = False
        sub.token_exp = float(ctx.caller.claims.get("exp", 0))


def _renew(srv: Any, ctx: Ctx, sub: Subscription) -> None:
    data = ctx.json_body()
    if not isinstance(data, dict):
        raise errors.bad_request("Empty Payload. JSON content expected.")
    if "lifecycleNotificationUrl" in data:
        raise errors.bad_request("lifecycleNotificationUrl cannot be changed; delete the "
                                 "subscription and create a new one.", "InvalidRequest")
    expiration = _expiration(srv, data["expirationDateTime"]) \
        if data.get("expirationDateTime") else None
    url = None
    if data.get("notificationUrl"):
        url = check_url(data["notificationUrl"], "notificationUrl", srv.allow_http_notifications)
        _handshake(srv, url)
    with srv.notifier.lock:
        if expiration is not None:
            sub.expiration = expiration
        if url is not None:
            sub.notification_url = url
    _touch(srv, ctx, sub)
