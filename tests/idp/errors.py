"""Errors shaped like Azure AD's, so the app's error handling meets the real thing."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any


class AADError(Exception):
    """An AADSTS error: token endpoint JSON body, or redirect/page parameters at /authorize."""

    def __init__(self, code: int, error: str, message: str, status: int = 400,
                 suberror: str | None = None, subcode: str | None = None) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.code = code
        self.error = error
        self.message = message
        self.status = status
        self.suberror = suberror
        self.subcode = subcode  # error_subcode on the redirect (e.g. "cancel")

    @property
    def uri(self) -> str:
        """Microsoft's documentation link for the code (not served here)."""
        return f"https://login.microsoftonline.com/error?code={self.code}"

    def description(self, correlation_id: str | None = None) -> str:
        """`AADSTSnnnnn: text` plus the trace lines Microsoft appends."""
        return self._description(*_ids(correlation_id))

    def _description(self, trace_id: str, correlation_id: str, ts: str) -> str:
        return (f"AADSTS{self.code}: {self.message}\r\nTrace ID: {trace_id}\r\n"
                f"Correlation ID: {correlation_id}\r\nTimestamp: {ts}")

    def body(self, correlation_id: str | None = None) -> dict[str, Any]:
        """The JSON error body of the token endpoint."""
        trace_id, correlation_id, ts = _ids(correlation_id)
        body: dict[str, Any] = {
            "error": self.error,
            "error_description": self._description(trace_id, correlation_id, ts),
            "error_codes": [self.code],
            "timestamp": ts,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": self.uri,
        }
        if self.suberror:
            body["suberror"] = self.suberror
        return body


def _ids(correlation_id: str | None) -> tuple[str, str, str]:
    ts = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(uuid.uuid4()), correlation_id or str(uuid.uuid4()), ts


def unknown_client(client_id: str, tenant: str) -> AADError:
    return AADError(
        700016, "unauthorized_client",
        f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
        "This can happen if the application has not been installed by the administrator of the "
        "tenant or consented to by any user in the tenant. You may have sent your authentication "
        "request to the wrong tenant.")


def unknown_tenant(tenant: str) -> AADError:
    return AADError(
        90002, "invalid_tenant",
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud. Check with your subscription administrator, this may "
        "happen if there are no active subscriptions for the tenant.")


def missing_parameter(name: str) -> AADError:
    return AADError(900144, "invalid_request",
                    f"The request body must contain the following parameter: '{name}'.")


# Messages for revoke(code=...): what Microsoft says when a refresh token stops working.
REVOCATION_TEXT: dict[int, str] = {
    50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed. "
           "The user might have changed or reset their password.",
    50076: "Due to a configuration change made by your administrator, or because you moved to a "
           "new location, you must use multi-factor authentication to access "
           "'00000002-0000-0ff1-ce00-000000000000'.",
    70043: "The refresh token has expired or is invalid due to sign-in frequency checks by "
           "conditional access.",
    700082: "The refresh token has expired due to inactivity. The token was issued on a date and "
            "was inactive for 90.00:00:00.",
    50078: "Due to a configuration change made by your administrator, or because you moved to a "
           "new location, you must enroll in multi-factor authentication.",
    50057: "The user account is disabled.",
    65001: "The user or administrator has not consented to use the application.",
}
REVOCATION_SUBERROR: dict[int, str] = {50076: "basic_action", 50078: "basic_action",
                                       50057: "user_account_disabled"}


def revoked(code: int) -> AADError:
    text = REVOCATION_TEXT.get(code, "The provided grant is no longer valid.")
    return AADError(code, "invalid_grant", text, suberror=REVOCATION_SUBERROR.get(code))
