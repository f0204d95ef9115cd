"""Endpoints Microsoft Graph calls: change notifications and lifecycle notifications.

Anonymous by design (Microsoft signs nothing in); a notification counts only with the clientState
secret of its subscription (mail/graph/notify_store.py), anything else gets 202 and is ignored, so a
stranger learns nothing. CSRF does not apply (no session, no cookie; Microsoft posts JSON).
Bounded: JSON only, at most MAX_BODY bytes, MAX_ITEMS notifications read, no network call and at
most one write per mailbox per request; the worker is woken and does the slow part.

- Validation (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks): a POST with
  `?validationToken=...` must get 200, text/plain, the URL-decoded token, within 10 seconds.
- Notifications must get a 2xx within 3 seconds, else Graph retries and finally drops them (and the
  lifecycle URL hears "missed").
"""
from __future__ import annotations

import json
import logging

from flask import Blueprint, Flask, Response, request

from ..mail.graph import notify_store
from .context import db, runtime

log = logging.getLogger(__name__)
bp = Blueprint("graph_hooks", __name__, url_prefix="/hooks/graph")
MAX_BODY = 1024 * 1024
MAX_VALIDATION_TOKEN = 1024


@bp.post("/notifications")
def notifications() -> Response:
    return _receive(lifecycle=False)


@bp.post("/lifecycle")
def lifecycle() -> Response:
    return _receive(lifecycle=True)


def _receive(lifecycle: bool) -> Response:
    token = request.args.get("validationToken")
    if token is not None:
        if len(token) > MAX_VALIDATION_TOKEN:
            return _plain("validationToken is too long", 400)
        return _plain(token, 200)
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _plain("too large", 413)
    if request.mimetype != "application/json":
        return _plain("JSON only", 415)
    data = request.stream.read(MAX_BODY + 1)  # bounded even without a Content-Length (chunked)
    if len(data) > MAX_BODY:
        return _plain("too large", 413)
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return _plain("not JSON", 400)
    items = body.get("value") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return _plain("no value list", 400)
    received = notify_store.record(db(), items, lifecycle)
    db().commit()
    if received.accounts:
        runtime().wakeup.set()
    if received.ignored:
        log.info("Graph %s: %d accepted, %d ignored", "lifecycle" if lifecycle else "notifications",
                 received.accepted, received.ignored)
    return Response(b"", status=202)


def _plain(text: str, status: int) -> Response:
    return Response(text, status=status, content_type="text/plain; charset=utf-8")


def init_app(app: Flask, csrf) -> None:
    app.register_blueprint(bp)
    csrf.exempt(bp)
