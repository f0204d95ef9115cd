"""Errors in Microsoft Graph's JSON shape, with the codes Exchange Online answers.

Shape (https://learn.microsoft.com/graph/errors):
    {"error": {"code": "...", "message": "...",
               "innerError": {"date": "...", "request-id": "...", "client-request-id": "..."}}}

Codes and messages were taken from Microsoft's documentation where it names them and otherwise
from what the service is publicly reported to answer (the comment at each factory says which).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


class GraphError(Exception):
    """An error answer; raised anywhere in request handling, rendered by the router."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self, request_id: str, client_request_id: str | None) -> dict[str, Any]:
        inner = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                 "request-id": request_id,
                 "client-request-id": client_request_id or request_id}
        return {"error": {"code": self.code, "message": self.message, "innerError": inner}}


# ---- authentication (401) ---------------------------------------------------------------------
# https://learn.microsoft.com/graph/resolve-auth-errors: every token problem is
# 401 InvalidAuthenticationToken; the message says which check failed.

def invalid_token(message: str, www_authenticate: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message,
                      {"WWW-Authenticate": www_authenticate})


# ---- authorization (403) ----------------------------------------------------------------------

def access_denied() -> GraphError:
    """Missing Mail.* permission, or no Full Access to another user's mailbox (Exchange's text)."""
    return GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")


def insufficient_privileges() -> GraphError:
    """Directory reads (/me, /users/{id}) without User.Read & co. (Microsoft Entra's code)."""
    return GraphError(403, "Authorization_RequestDenied",
                      "Insufficient privileges to complete the operation.")


def send_as_denied() -> GraphError:
    """sendMail for a mailbox (or From address) the signed-in user may not send as."""
    return GraphError(403, "ErrorSendAsDenied",
                      "The user account which was used to submit this request does not have the "
                      "right to send mail on behalf of the specified sending account., Cannot "
                      "submit message.")


def quota_exceeded() -> GraphError:
    return GraphError(403, "ErrorQuotaExceeded", "Mailbox has exceeded maximum mailbox size., "
                      "Cannot save changes made to an item to store.")


# ---- not found / malformed --------------------------------------------------------------------

def item_not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def id_malformed() -> GraphError:
    return GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")


def invalid_user(user: str) -> GraphError:
    return GraphError(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")


def rest_not_enabled() -> GraphError:
    """A mailbox on premises, without an Exchange Online licence, or inactive."""
    return GraphError(404, "MailboxNotEnabledForRESTAPI",
                      "REST API is not yet supported for this mailbox.")


def segment_not_found(segment: str) -> GraphError:
    return GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


def resource_not_found() -> GraphError:
    """Subscriptions that do not exist (any more) or belong to another app."""
    return GraphError(404, "ResourceNotFound", "The object was not found.")


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def unknown_property(name: str, entity: str = "Microsoft.OutlookServices.Message") -> GraphError:
    return GraphError(400, "RequestBroker--ParseUri",
                      f"Could not find a property named '{name}' on type '{entity}'.")


# ---- size and throttling ----------------------------------------------------------------------

def request_too_large() -> GraphError:
    """Graph's front door refuses bodies over 4 MB (reported text; the docs give only 413)."""
    return GraphError(413, "RequestEntityTooLarge", "The maximum request length supported is 4MB.")


def message_too_large() -> GraphError:
    return GraphError(400, "ErrorMessageSizeExceeded", "The message exceeds the maximum supported size.")


def throttled(retry_after: int, limit: str, status: int = 429,
              code: str = "ApplicationThrottled") -> GraphError:
    """https://learn.microsoft.com/graph/throttling: 429 (or 503) with Retry-After seconds."""
    return GraphError(status, code, f"Application is over its {limit} limit.",
                      {"Retry-After": str(retry_after)})
