"""The one Google OAuth client: stored with its secret encrypted, or preset in the config file ([google])."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from .config import Settings
from .crypto import Vault
from .identity.google import GoogleApp, GoogleIdentity
from .models import GoogleAppRegistration, utcnow
from .registration import RegistrationInputError, secret_to_use

CALLBACK_PATH = "/auth/google/callback"
NOT_REGISTERED = "The Google app is not registered: an admin must save it first (Admin > Google app)."
CLIENT_ID_RE = re.compile(r"^[0-9]+-[0-9a-z]+\.apps\.googleusercontent\.com$")


@dataclass(frozen=True)
class GoogleRegistrationView:
    """What the admin page may show: never the secret."""
    client_id: str
    secret_set: bool
    secret_set_at: datetime | None
    verified_at: datetime | None
    from_config: bool


def callback_url(settings: Settings) -> str:
    return settings.app.base_url.rstrip("/") + CALLBACK_PATH


def callback_problem(settings: Settings) -> str | None:
    """Why Google would refuse the callback URL as a redirect URI, or None."""
    parts = urlsplit(callback_url(settings))
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in {"localhost", "127.0.0.1", "::1"}):
        return None
    return ("Google accepts http:// redirect URIs only for localhost: set [app] base_url to this server's https:// "
            "address (behind a reverse proxy that terminates TLS), then register the callback URL shown here.")


def validate(client_id: str, client_secret: str | None) -> str:
    client_id = (client_id or "").strip()
    if not CLIENT_ID_RE.match(client_id):
        raise RegistrationInputError("client_id", "The Client ID is the OAuth client's ID from Google Cloud console > "
                                     "Credentials > OAuth 2.0 Client IDs, like "
                                     "123456789012-abc123def456.apps.googleusercontent.com.")
    secret = (client_secret or "").strip()
    if secret and CLIENT_ID_RE.match(secret):
        raise RegistrationInputError("client_secret", "This is a Client ID, not a secret: paste the Client secret "
                                     "(it starts with GOCSPX- for clients made since 2021).")
    return client_id


def stored(session: Session) -> GoogleAppRegistration | None:
    return session.get(GoogleAppRegistration, 1)


def view(session: Session, settings: Settings) -> GoogleRegistrationView | None:
    row = stored(session)
    if row is not None:
        return GoogleRegistrationView(row.client_id, row.client_secret_enc is not None, row.secret_set_at,
                                      row.verified_at, False)
    preset = settings.google
    if preset.client_id:
        return GoogleRegistrationView(preset.client_id, bool(preset.client_secret), None, None, True)
    return None


def load(session: Session, settings: Settings, vault: Vault) -> GoogleApp | None:
    """The client in use: the admin page's, else the config preset, else None. Raises DecryptionError."""
    row = stored(session)
    if row is not None and row.client_secret_enc is not None:
        return GoogleApp(row.client_id, vault.decrypt_text(row.client_secret_enc))
    preset = settings.google
    if row is None and preset.client_id and preset.client_secret:
        return GoogleApp(preset.client_id, preset.client_secret)
    return None


def identity_for(app: GoogleApp, settings: Settings) -> GoogleIdentity:
    return GoogleIdentity(app, settings.google.authority, settings.ca_bundle, callback_url(settings))


def identity(session: Session, settings: Settings, vault: Vault) -> GoogleIdentity | None:
    """The Google identity for connect flows and the worker's tokens, or None without a client."""
    app = load(session, settings, vault)
    return identity_for(app, settings) if app is not None else None


def save(session: Session, settings: Settings, vault: Vault, *, client_id: str, client_secret: str | None,
         by: str) -> GoogleAppRegistration:
    """Validate, check against Google, then store. Raises RegistrationInputError or IdentityError.

    An empty secret keeps the stored one (or the preset's), so a Client ID can be corrected without
    pasting the secret again; the check runs with the secret that will be used.
    """
    client_id = validate(client_id, client_secret)
    secret = secret_to_use(client_secret, lambda: load(session, settings, vault),
                           missing="Paste the Client secret of the OAuth client (Google Cloud console > Credentials).")
    session.commit()  # no transaction (SQLite's write lock) is held while Google is asked
    identity_for(GoogleApp(client_id, secret), settings).check_registration()
    row = stored(session)
    if row is None:
        row = GoogleAppRegistration(id=1)
        session.add(row)
    if row.client_secret_enc is None or (client_secret or "").strip():
        row.client_secret_enc = vault.encrypt(secret)
        row.secret_set_at = utcnow()
    row.client_id = client_id
    row.verified_at = utcnow()
    row.updated_by = by
    session.flush()
    return row
