"""What every entry point needs: settings, the database and the vault, built once from the config."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from sqlalchemy.orm import Session

from .config import Settings, load_settings
from .crypto import Vault
from .db import Database
from .identity.microsoft import MicrosoftIdentity


class _RedactSecrets(logging.Filter):
    """Last line of defence: a log record that looks like it carries a bearer token is cut."""

    MARKERS = ("auth=Bearer", "access_token", "refresh_token", "client_secret", "eyJ0eX", "eyJhbGci")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record must not break logging
            return True
        if any(marker in text for marker in self.MARKERS):
            record.msg, record.args = "[a log line that contained a secret was withheld]", ()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _RedactSecrets) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_RedactSecrets())
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "msal", "imapclient", "werkzeug", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    vault: Vault
    # set by the web app when it has new work for an in-process worker (a reply queued, a mailbox connected)
    wakeup: threading.Event = field(default_factory=threading.Event)
    worker: Any = None  # the in-process Worker, when there is one

    @classmethod
    def create(cls, overrides: Mapping[str, Mapping[str, Any]] | None = None, config_path: str | None = None) -> "Runtime":
        settings = load_settings(config_path, overrides=overrides)
        if not settings.data_path.exists():
            # keys, the database and mail live here: readable by this user only
            settings.data_path.mkdir(parents=True, mode=0o700)
        return cls(settings, Database(settings.database.url), Vault.from_environment(settings.data_path))

    def identity(self, session: Session) -> MicrosoftIdentity | None:
        from . import registration

        return registration.identity(session, self.settings, self.vault)
