"""REST API v1: JSON, bearer tokens, errors as {"error", "detail"}."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Flask, abort, g, jsonify, request
from sqlalchemy import text

from .. import accounts, api_tokens, outbox, tickets
from ..mail.compose import ComposeError
from ..mail.filenames import display_filename
from ..models import TICKET_STATUSES
from . import params
from .context import db, readable_ticket, runtime
from .security import api_auth

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


@bp.get("/health")
def health():
    """For load balancers and monitors, without a token: only whether the app and its database answer.
    Details about the processes (host names, ids) are for an admin's token: they help an attacker map
    the installation."""
    try:
        db().execute(text("SELECT 1"))
        database = "ok"
    except Exception:  # noqa: BLE001 - health reports, it does not raise
        db().rollback()
        database = "unreachable"
    status = "ok" if database == "ok" else "degraded"
    body = {"status": status, "database": database}
    caller = _bearer_user_or_none() if database == "ok" else None
    if caller is not None and caller.is_admin:
        body["worker"] = runtime().worker.status() if runtime().worker is not None else "not in this process"
        body["workers"] = live_workers()
    return jsonify(body), 200 if status == "ok" else 503


def live_workers() -> list[dict]:
    """Every worker in the workers table (any machine), with the mailboxes it holds a lease on now."""
    from ..worker.registry import workers_overview

    return [dict(row, started_at=iso(row["started_at"]), heartbeat_at=iso(row["heartbeat_at"]))
            for row in workers_overview(db())]


def _bearer_user_or_none():
    """The token's user if a valid one came along; health never refuses, it only tells less."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return api_tokens.check(db(), token.strip()).user if scheme.lower() == "bearer" else None


def account_json(account) -> dict:
    return {"id": account.id, "address": account.address, "status": account.status,
            "last_sync_at": iso(account.last_sync_at), "last_error": account.last_error,
            "provider": account.provider, "transport": account.transport}


@bp.get("/accounts")
@api_auth
def account_list():
    return jsonify([account_json(a) for a in accounts.visible_accounts(db(), g.api_user)])


def ticket_json(ticket) -> dict:
    return {"id": ticket.id, "number": ticket.number, "subject": ticket.subject, "status": ticket.status,
            "customer": ticket.customer_address, "account": ticket.account.address,
            "created_at": iso(ticket.created_at), "updated_at": iso(ticket.updated_at),
            "article_count": ticket.article_count}


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def article_json(article) -> dict:
    return {"id": article.id, "direction": article.direction, "from": article.from_addr,
            "to": _split(article.to_addrs), "cc": _split(article.cc_addrs), "subject": article.subject,
            "message_id": article.message_id, "date": iso(article.date or article.created_at),
            "body_text": article.body_text,
            "attachments": [{"filename": display_filename(a.filename), "content_type": a.content_type, "size": a.size,
                             "sha256": a.blob_sha256} for a in article.attachments],
            "delivery": delivery_state(article),
            "delivery_error": article.outbox.last_error if article.outbox is not None else None}


def delivery_state(article) -> str | None:
    """The contract knows queued/sent/failed; an item being handed to the server is still queued."""
    if article.outbox is None:
        return None
    return "queued" if article.outbox.state == "sending" else article.outbox.state


def _error(status: int, error: str, detail: str):
    response = jsonify(error=error, detail=detail)
    response.status_code = status
    return response


@bp.get("/tickets")
@api_auth
def ticket_list():
    result = tickets.search_tickets(db(), g.api_user, status=params.choice("status", TICKET_STATUSES),
                                    account=params.mailbox_address("account"), q=params.search_text("q"),
                                    page=params.page())
    return jsonify(items=[ticket_json(t) for t in result.items], next_page=result.next_page)


def _visible_ticket(ticket_id: int):
    ticket = readable_ticket(g.api_user, ticket_id)
    if ticket is None:
        abort(404, "No such ticket, or it belongs to a mailbox you are not a member of.")
    return ticket


@bp.get("/tickets/<int:ticket_id>")
@api_auth
def ticket_detail(ticket_id: int):
    ticket = _visible_ticket(ticket_id)
    return jsonify(ticket_json(ticket) | {"articles": [article_json(a) for a in ticket.articles]})


@bp.post("/tickets/<int:ticket_id>/reply")
@api_auth
def ticket_reply(ticket_id: int):
    ticket = _visible_ticket(ticket_id)
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict) or not isinstance(payload.get("body_text"), str):
        return _error(400, "bad_request", 'send JSON {"body_text": "...", "cc": []}')
    cc = payload.get("cc") or []
    if not isinstance(cc, list) or not all(isinstance(c, str) for c in cc):
        return _error(400, "bad_request", "cc must be a list of addresses")
    try:
        article = outbox.queue_reply(db(), ticket, g.api_user, payload["body_text"], cc)
    except (ComposeError, ValueError) as exc:
        db().rollback()
        return _error(400, "bad_request", str(exc))
    db().commit()
    runtime().wakeup.set()
    return jsonify(article_id=article.id), 202


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
