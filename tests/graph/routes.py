"""The WSGI application: version prefix, size limit, token, mailbox, faults, rights, throttling.

Order per request, as a caller of Graph meets it: 413 for bodies over 4 MB, 401 for the token,
404 for an unknown user, injected faults, 404 MailboxNotEnabledForRESTAPI, 403 for missing
permissions or mailbox rights, 429 throttling, then the operation. Every answer carries
request-id and client-request-id headers and is recorded in the request log.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from . import errors, mail_routes, permissions, subscription_routes
from .http import Ctx, Segment, json_response, segments
from .odata import Preferences
from .render import user_json

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 4 * 1024 * 1024
WRITE_METHODS = ("POST", "PATCH", "PUT")


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: str
    status: int
    mailbox: str | None  # the mailbox addressed (lower-case), None for /subscriptions etc.
    app_id: str | None
    user: str | None  # the signed-in user
    code: str | None  # Graph error code, None on success
    at: float
    request_id: str


class GraphApp:
    def __init__(self, srv: Any) -> None:
        self.srv = srv

    def __call__(self, environ: dict, start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        ctx = Ctx(request, str(uuid.uuid4()), self.srv.url + "/v1.0")
        code = None
        try:
            response = self._serve(ctx)
        except errors.GraphError as exc:
            code = exc.code
            response = json_response(exc.body(ctx.request_id,
                                              request.headers.get("client-request-id")),
                                     exc.status, exc.headers)
        except Exception:  # noqa: BLE001 - a bug in the stand-in must still answer like Graph
            log.exception("graph stand-in failed on %s %s", request.method, request.path)
            code = "generalException"
            response = json_response(errors.GraphError(500, code, "An unspecified error has "
                                                       "occurred.").body(ctx.request_id, None), 500)
        response.headers["request-id"] = ctx.request_id
        response.headers["client-request-id"] = request.headers.get("client-request-id",
                                                                    ctx.request_id)
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
        caller = ctx.caller
        self.srv.log_request(LoggedRequest(
            request.method, request.path, request.query_string.decode("latin-1"),
            response.status_code, ctx.box.address if ctx.box else None,
            caller.app_id if caller else None, caller.email if caller else None, code,
            self.srv.clock.time(), ctx.request_id))
        return response

    def _serve(self, ctx: Ctx) -> Response:
        request = ctx.request
        path = request.path
        if not (path == "/v1.0" or path.startswith("/v1.0/")):
            version = path.strip("/").split("/")[0]
            raise errors.bad_request(f"Invalid version: {version}")
        if (request.content_length or 0) > MAX_REQUEST_BYTES:
            raise errors.request_too_large()
        body = request.get_data() if request.method in WRITE_METHODS else b""
        if len(body) > MAX_REQUEST_BYTES:
            raise errors.request_too_large()
        ctx.prefs = Preferences.parse(request.headers.getlist("Prefer"))
        ctx.caller = self.srv.verifier.verify(request.headers.get("Authorization"))
        ctx.check_options()
        segs = segments(path[len("/v1.0"):])
        if not segs:
            raise errors.segment_not_found("")
        head = segs[0]
        if head.name == "subscriptions" and head.key is None:
            self._fault(ctx, None, before=True)
            return subscription_routes.handle(self.srv, ctx, segs[1:])
        ref, rest = self._mailbox_ref(ctx, segs)
        ctx.box = self.srv.resolve_mailbox(ctx.caller, ref)
        if not rest:
            return self._user(ctx, ref)
        need, action = mail_routes.plan(self.srv, ctx, rest)
        fault = self._fault(ctx, ctx.box.address, before=True)
        if not ctx.box.rest_enabled:
            raise errors.rest_not_enabled()
        permissions.check(ctx.caller, ctx.box, need, self.srv.sender.send_as)
        throttle = self.srv.limits
        key = throttle.admit(ctx.caller.app_id, ctx.box.address, len(body))
        try:
            pause = throttle.delays.get(ctx.box.address)
            if pause:
                time.sleep(pause)
            response = action()
        finally:
            throttle.release(key)
        if fault is not None:
            raise fault.error()
        return response

    def _mailbox_ref(self, ctx: Ctx, segs: list[Segment]) -> tuple[str | None, list[Segment]]:
        head = segs[0]
        if head.name == "me" and head.key is None:
            ctx.mailbox_path = "me"
            return None, segs[1:]
        if head.name == "users":
            if head.key is not None:
                ref, rest = head.key, segs[1:]
            elif len(segs) > 1:
                ref, rest = segs[1].raw, segs[2:]
            else:
                raise errors.GraphError(403, "Authorization_RequestDenied",
                                        "Insufficient privileges to complete the operation.")
            ctx.mailbox_path = f"users/{ref}"
            return ref, rest
        raise errors.segment_not_found(head.raw)

    def _fault(self, ctx: Ctx, address: str | None, before: bool) -> Any:
        """Raise an injected fault now, or return one to raise after doing the work."""
        fault = self.srv.limits.fault_for(ctx.request.method, ctx.request.path, address)
        if fault is not None and not fault.after and before:
            raise fault.error()
        return fault

    def _user(self, ctx: Ctx, ref: str | None) -> Response:
        """GET /me, /users/{id}: https://learn.microsoft.com/graph/api/user-get."""
        if ctx.request.method != "GET":
            raise errors.GraphError(405, "BadRequest", "The HTTP method is not supported.")
        caller, box = ctx.caller, ctx.box
        own = permissions.is_own(caller, box)
        wanted = permissions.DIRECTORY if own else permissions.OTHER_USERS
        if not caller.has_any(*wanted):
            raise errors.insufficient_privileges()
        user = self.srv.idp.users.get(box.address)
        given = user.given_name if user else None
        surname = (user.family_name or None) if user else None
        return json_response({"@odata.context": f"{ctx.base}/$metadata#users/$entity",
                              **user_json(box, given, surname)})
