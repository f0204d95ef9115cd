"""The one Azure app registration: stored with its secret encrypted, or preset in the config file."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable

from sqlalchemy.orm import Session

from .config import Settings
from .crypto import DecryptionError, Vault
from .identity.microsoft import GENERIC_TENANTS, MicrosoftIdentity, Registration
from .models import AppRegistration, utcnow

NOT_REGISTERED = "The Microsoft 365 app is not registered: an admin must register it first."
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
DOMAIN_RE = re.compile(r"^(?=.{3,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


class RegistrationInputError(ValueError):
    """A field that cannot be right; the message names it and the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class RegistrationView:
    """What the admin page may show: never the secret."""
    client_id: str
    tenant: str
    secret_set: bool
    secret_set_at: object
    secret_expires_on: date | None
    verified_at: object
    from_config: bool


def validate(client_id: str, tenant: str) -> tuple[str, str]:
    client_id = (client_id or "").strip()
    tenant = (tenant or "").strip()
    if not GUID_RE.match(client_id):
        raise RegistrationInputError("client_id", "The Client ID is the Application (client) ID from the app's "
                                     "Overview page in Azure: a GUID like 11111111-2222-3333-4444-555555555555.")
    lowered = tenant.lower()
    if lowered == "consumers":
        raise RegistrationInputError("tenant", "\"consumers\" (personal Microsoft accounts only) cannot read work "
                                     "mailboxes over IMAP: use the Directory (tenant) ID, \"organizations\" or "
                                     "\"common\".")
    if not (GUID_RE.match(tenant) or lowered in GENERIC_TENANTS or DOMAIN_RE.match(lowered)):
        raise RegistrationInputError("tenant", "The Tenant ID is the Directory (tenant) ID GUID from the app's "
                                     "Overview page, a verified domain such as contoso.com, \"organizations\" "
                                     "or \"common\".")
    return client_id, lowered if not GUID_RE.match(tenant) else tenant


def stored(session: Session) -> AppRegistration | None:
    return session.get(AppRegistration, 1)


def view(session: Session, settings: Settings) -> RegistrationView | None:
    row = stored(session)
    if row is not None:
        return RegistrationView(row.client_id, row.tenant, row.client_secret_enc is not None, row.secret_set_at,
                                row.secret_expires_on, row.verified_at, False)
    ms = settings.microsoft
    if ms.client_id and ms.tenant:
        return RegistrationView(ms.client_id, ms.tenant, bool(ms.client_secret), None, None, None, True)
    return None


def load(session: Session, settings: Settings, vault: Vault) -> Registration | None:
    """The registration in use: the admin page's, else the config preset, else None."""
    row = stored(session)
    if row is not None and row.client_secret_enc is not None:
        return Registration(row.client_id, row.tenant, vault.decrypt_text(row.client_secret_enc))
    ms = settings.microsoft
    if row is None and ms.client_id and ms.tenant and ms.client_secret:
        return Registration(ms.client_id, ms.tenant, ms.client_secret)
    return None


def identity(session: Session, settings: Settings, vault: Vault) -> MicrosoftIdentity | None:
    registration = load(session, settings, vault)
    if registration is None:
        return None
    return MicrosoftIdentity(registration, settings.microsoft.authority_host, settings.ca_bundle,
                             settings.callback_url)


def secret_to_use(pasted: str | None, current: Callable[[], Any], *, missing: str) -> str:
    """The pasted secret, or else the stored one, so an admin can fix another field without pasting it again.

    `current` loads the stored app (anything with `client_secret`, or None). Raises RegistrationInputError
    when there is none, or when it cannot be decrypted because the encryption key changed.
    """
    secret = (pasted or "").strip()
    if secret:
        return secret
    try:
        stored_app = current()
    except DecryptionError:
        raise RegistrationInputError("client_secret", "The stored client secret cannot be decrypted with the "
                                     "configured encryption key (it changed): paste the client secret again."
                                     ) from None
    if stored_app is None:
        raise RegistrationInputError("client_secret", missing)
    return stored_app.client_secret


def save(session: Session, settings: Settings, vault: Vault, *, client_id: str, tenant: str,
         client_secret: str | None, secret_expires_on: date | None, by: str) -> AppRegistration:
    """Validate, check against the authority, then store. Raises RegistrationInputError or IdentityError.

    An empty secret keeps the stored one, so an admin can fix the tenant without re-pasting it.
    """
    client_id, tenant = validate(client_id, tenant)
    row = stored(session)
    secret = secret_to_use(client_secret, lambda: load(session, settings, vault),
                           missing="Paste the client secret's Value from Certificates & secrets in Azure.")
    MicrosoftIdentity(Registration(client_id, tenant, secret), settings.microsoft.authority_host,
                      settings.ca_bundle, settings.callback_url).check_registration()
    if row is None:
        row = AppRegistration(id=1)
        session.add(row)
    secret_changed = row.client_secret_enc is None or (client_secret or "").strip() != ""
    row.client_id, row.tenant = client_id, tenant
    if secret_changed:
        row.client_secret_enc = vault.encrypt(secret)
        row.secret_set_at = utcnow()
        row.secret_expires_on = secret_expires_on
    elif secret_expires_on is not None:
        row.secret_expires_on = secret_expires_on
    row.verified_at = utcnow()
    row.updated_by = by
    session.flush()
    return row
