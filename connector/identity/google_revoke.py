"""Ending a mailbox's grant at Google when it is disconnected (best effort: the page says when it failed)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import requests

from .errors import Explained
from .google_discovery import HTTP_TIMEOUT, unreachable
from .google_errors import explain_google
from .google_signin import GoogleTokens
from .microsoft import IdentityError, http_session

if TYPE_CHECKING:
    from .google import GoogleIdentity


def revoke(identity: "GoogleIdentity", token_json: str) -> None:
    """End the grant at Google (the refresh token, and with it every access token of it).

    Raises IdentityError when Google cannot be reached or refuses; a token Google no longer knows
    (`invalid_token`) counts as revoked.
    """
    try:
        tokens = GoogleTokens.from_json(token_json)
    except (ValueError, TypeError):
        return
    endpoint = identity.metadata().get("revocation_endpoint")
    if not endpoint:
        raise IdentityError(Explained(f"{identity.authority} names no revocation endpoint."))
    http = http_session(identity.ca_bundle)
    try:
        response = http.post(endpoint, data={"token": tokens.refresh_token}, timeout=HTTP_TIMEOUT)
    except requests.exceptions.RequestException as exc:
        raise unreachable(identity.authority, exc) from None
    finally:
        http.close()
    if response.status_code == 200:
        return
    try:
        error = response.json().get("error", "")
    except (ValueError, AttributeError):
        error = ""
    if error in {"invalid_token", "invalid_grant"}:
        return
    raise IdentityError(explain_google(error or f"HTTP {response.status_code}", None, identity.context()))
