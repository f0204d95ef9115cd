"""Errors in Google's shapes.

Token, revocation and tokeninfo endpoints answer JSON `{"error", "error_description"}`; the
descriptions are Google's terse ones as clients see them in the wild ("Bad Request",
"Unauthorized", "Token has been expired or revoked.", "Malformed auth code."), which is exactly
why a client must key on `error` and not parse the text.

The authorization endpoint shows problems it cannot send back to a trusted redirect URI on its
own page ("Access blocked: ...", "Error 400: redirect_uri_mismatch"), never as a redirect
(web-server guide, "Authorization errors":
https://developers.google.com/identity/protocols/oauth2/web-server#authorization-errors).
"""
from __future__ import annotations

from typing import Any

REVOKED = "Token has been expired or revoked."


class TokenError(Exception):
    """A JSON error of the token endpoint (and of /revoke and /tokeninfo)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


def invalid_grant(description: str = "Bad Request") -> TokenError:
    return TokenError("invalid_grant", description)


def invalid_request(description: str) -> TokenError:
    return TokenError("invalid_request", description)


class PageError(Exception):
    """An error Google shows on its own page: "Error <status>: <code>" plus an explanation."""

    def __init__(self, status: int, code: str, title: str, message: str,
                 developer_hint: str = "") -> None:
        super().__init__(f"Error {status}: {code}")
        self.status = status
        self.code = code
        self.title = title
        self.message = message
        self.developer_hint = developer_hint


def invalid_request_page(message: str) -> PageError:
    return PageError(400, "invalid_request", "Access blocked: This app's request is invalid",
                     message, "You can't sign in because this app sent an invalid request. You "
                     "can try again later, or contact the developer about this issue.")


def unknown_client_page() -> PageError:
    return PageError(401, "invalid_client", "Access blocked: Authorization Error",
                     "The OAuth client was not found.",
                     "If you are a developer of this app, check the client ID in your request.")


def redirect_mismatch_page() -> PageError:
    return PageError(
        400, "redirect_uri_mismatch", "Access blocked: This app's request is invalid",
        "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 "
        "policy.", "If you're the app developer, register the redirect URI in the Google Cloud "
        "Console.")


def org_internal_page(app_name: str) -> PageError:
    return PageError(403, "org_internal", "Access blocked: Authorization Error",
                     f"{app_name} can only be used within its organization. This client is "
                     "restricted to users within its organization.")


def admin_policy_message(domain: str) -> str:
    return ("Access to your account data is restricted by policies within your organization. "
            f"Please contact the administrator for {domain} for more information.")


def admin_policy_page(domain: str) -> PageError:
    return PageError(400, "admin_policy_enforced", "Access blocked: Authorization Error",
                     admin_policy_message(domain))


def not_a_tester_page(app_name: str, developer: str) -> PageError:
    return PageError(
        403, "access_denied",
        f"Access blocked: {app_name} has not completed the Google verification process",
        f"{app_name} has not completed the Google verification process. The app is currently "
        "being tested, and can only be accessed by developer-approved testers. If you think "
        f"you should have access, contact the developer ({developer}).")
