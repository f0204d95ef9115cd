"""Change-notification subscriptions for Outlook messages: the resource, the rules, the handshake.

https://learn.microsoft.com/graph/api/resources/subscription,
https://learn.microsoft.com/graph/change-notifications-delivery-webhooks,
https://learn.microsoft.com/graph/outlook-change-notifications-overview:
- resource: me/messages, users/{id}/messages, me/mailFolders('{id}')/messages,
  users/{id}/mailFolders('{id}')/messages (slash or parenthesis key syntax).
- expirationDateTime: at most 10,080 minutes (under 7 days) ahead for Outlook messages without
  resource data (the subscription lifetime table; older revisions said 4,230); a value less than
  45 minutes ahead is raised to 45 minutes.
- notificationUrl and lifecycleNotificationUrl must be HTTPS; on create Graph POSTs
  `?validationToken=...` (text/plain) to each and needs 200 OK, text/plain, the URL-decoded token
  as the body, within 10 seconds; otherwise 400 and no subscription.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from . import errors
from .clock import iso7

MAX_MINUTES = 10_080
MIN_MINUTES = 45
CHANGE_TYPES = ("created", "updated", "deleted")
_RESOURCE = re.compile(
    r"^/?(?:me|users(?:/(?P<user>[^/()]+)|\('(?P<user2>[^']+)'\)))/"
    r"(?:messages|mailfolders(?:/(?P<folder>[^/()]+)|\('(?P<folder2>[^']+)'\))/messages)/?$",
    re.IGNORECASE)


@dataclass(eq=False)
class Subscription:
    sub_id: str
    resource: str
    address: str
    folder_id: str | None  # None: the whole mailbox
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    app_id: str
    creator_id: str
    tenant_id: str
    immutable_ids: bool
    token_exp: float
    latest_tls: str = "v1_2"
    needs_reauthorization: bool = False
    paused: bool = False  # change notifications held back until reauthorized
    reauth_sent: set[float] = field(default_factory=set)

    def json(self, base_url: str) -> dict[str, Any]:
        return {
            "@odata.context": f"{base_url}/$metadata#subscriptions/$entity",
            "id": self.sub_id, "resource": self.resource, "applicationId": self.app_id,
            "changeType": ",".join(t for t in CHANGE_TYPES if t in self.change_types),
            "clientState": self.client_state, "notificationUrl": self.notification_url,
            "notificationQueryOptions": None, "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": iso7(self.expiration), "creatorId": self.creator_id,
            "includeResourceData": False, "latestSupportedTlsVersion": self.latest_tls,
            "encryptionCertificate": None, "encryptionCertificateId": None,
            "notificationUrlAppId": None, "notificationContentType": None,
        }


def parse_resource(resource: str) -> tuple[str | None, str | None]:
    """(user id or None for me, folder ref or None for all messages); 400 if not supported."""
    match = _RESOURCE.match(resource.strip().split("?")[0])
    if match is None:
        raise errors.bad_request(f"Resource '{resource}' is not supported for subscriptions; "
                                 "use me/messages or me/mailFolders('{id}')/messages.",
                                 "InvalidRequest")
    return (match.group("user") or match.group("user2"),
            match.group("folder") or match.group("folder2"))


def parse_change_types(value: Any) -> frozenset[str]:
    types = frozenset(t.strip().lower() for t in str(value or "").split(",") if t.strip())
    if not types or not types <= set(CHANGE_TYPES):
        raise errors.bad_request(f"Invalid changeType '{value}'. Use created, updated, deleted.",
                                 "InvalidRequest")
    return types


def check_url(url: Any, name: str, allow_http: bool) -> str:
    parts = urlsplit(str(url or ""))
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise errors.bad_request(f"Invalid {name} '{url}'.", "InvalidRequest")
    if parts.scheme != "https" and not allow_http:
        raise errors.bad_request(f"The {name} must use https.", "InvalidRequest")
    return str(url)


def validation_token() -> str:
    """Shaped like Graph's: text with spaces and colons, so the endpoint must URL-decode it."""
    return ("Validation: Testing client application reachability for subscription Request-Id: "
            + str(uuid.uuid4()))


def validate_endpoint(url: str, ca_path: str, timeout: float) -> tuple[str, str | None]:
    """The handshake. Returns (token, None) on success or (token, why it failed)."""
    token = validation_token()
    target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token, safe='')}"
    try:
        with requests.Session() as http:
            http.trust_env = False
            answer = http.post(target, data=b"", timeout=timeout, verify=ca_path,
                               headers={"Content-Type": "text/plain; charset=utf-8"})
    except requests.Timeout:
        return token, "Subscription validation request timed out."
    except requests.RequestException as exc:
        return token, f"Subscription validation request failed. {type(exc).__name__}."
    if answer.status_code != 200:
        try:
            name = HTTPStatus(answer.status_code).phrase.replace(" ", "")
        except ValueError:
            name = str(answer.status_code)
        return token, f"Subscription validation request failed. HTTP status code is '{name}'."
    if not answer.headers.get("Content-Type", "").lower().startswith("text/plain"):
        return token, ("Subscription validation request failed. Response must be text/plain "
                       "with the validation token.")
    if answer.text != token:
        return token, ("Subscription validation request failed. Response must exactly match "
                       "validationToken query parameter.")
    return token, None


def change_payload(sub: Subscription, change: str, object_id: str, message_id: str,
                   etag: str) -> dict[str, Any]:
    """A changeNotificationCollection with one basic notification (no resource data)."""
    path = f"Users/{object_id}/Messages/{message_id}"
    return {"value": [{
        "id": uuid.uuid4().hex[:16], "subscriptionId": sub.sub_id,
        "subscriptionExpirationDateTime": iso7(sub.expiration), "changeType": change,
        "resource": path, "clientState": sub.client_state, "tenantId": sub.tenant_id,
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": path,
                         "@odata.etag": etag, "id": message_id},
    }]}


def lifecycle_payload(sub: Subscription, event: str) -> dict[str, Any]:
    return {"value": [{
        "subscriptionId": sub.sub_id, "subscriptionExpirationDateTime": iso7(sub.expiration),
        "tenantId": sub.tenant_id, "clientState": sub.client_state, "lifecycleEvent": event,
    }]}
