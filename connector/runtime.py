"""What every entry point needs: settings, the database and the vault, built once from the config."""
from __future__ import annotations

import base64
import logging
import re
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Mapping

from sqlalchemy.orm import Session

from .config import Settings, load_settings
from .crypto import Vault
from .db import Database
from .identity.microsoft import MicrosoftIdentity


def _base64_fragments(text: str) -> tuple[str, ...]:
    """How `text` looks inside any base64 string, at each of the three byte alignments: the characters
    made only of its own bits (the first ones mix in the bytes before it, the last one those after)."""
    fragments = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + text.encode()).decode().rstrip("=")
        fragments.append(encoded[-(-8 * shift // 6):-1])
    return tuple(fragments)


# Values under these keys are secrets wherever a library dumps a request or response (msal's token cache
# logs its events at DEBUG with the authorization code and PKCE verifier in clear, msal 1.39).
SECRET_KEYS = ("access_token", "refresh_token", "id_token", "client_secret", "code", "code_verifier", "password",
               "assertion", "client_assertion")
_SECRET_JSON_VALUE = re.compile(r'("(?:%s)"\s*:\s*)"[^"*][^"]*"' % "|".join(SECRET_KEYS))


def mask_secret_values(text: str) -> str:
    """`"code": "abc"` -> `"code": "********"` for every key in SECRET_KEYS."""
    return _SECRET_JSON_VALUE.sub(r'\1"********"', text)


class _MaskLibrarySecrets(logging.Filter):
    """On the loggers of libraries that log secrets themselves: masks them before any handler sees the
    record, so the log keeps its use (which grant, which endpoint) without the secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record must not break logging
            return True
        masked = mask_secret_values(text)
        if masked != text:
            record.msg, record.args = masked, ()
        return True


LIBRARY_LOGGERS_WITH_SECRETS = ("msal.token_cache",)


class _RedactSecrets(logging.Filter):
    """Last line of defence, on our handler: a record that looks like it carries a token is withheld whole.

    It looks for the forms a token travels in: a JWT (or its typical header), `Bearer <token>`, the SASL
    XOAUTH2 string raw or base64 (`user=` and `auth=Bearer` at any base64 alignment), an authorization
    code in a URL, and named secret fields; in the message and in an attached traceback."""

    MARKERS = ("auth=Bearer", "\x01auth=", "access_token", "refresh_token", "client_secret", "code_verifier",
               "eyJ0eX", "eyJhbGci", "dXNlcj", *_base64_fragments("auth=Bearer "))  # dXNlcj: base64 "user="
    PATTERNS = re.compile(
        r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"          # a JWT: header.payload
        r"|\bBearer\s+[A-Za-z0-9._~+/=-]{16,}"               # an Authorization header value
        r"|[?&#](?:code|id_token|access_token)=[^&\s\"']{8,}"  # a code or token in a redirect URL
        r'|"(?:code|password|assertion)"\s*:\s*"[^"*]')

    WITHHELD = "[a log line that contained a secret was withheld]"

    def _secret_in(self, text: str) -> bool:
        return any(marker in text for marker in self.MARKERS) or self.PATTERNS.search(text) is not None

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record must not break logging
            return True
        if self._secret_in(text):
            record.msg, record.args = self.WITHHELD, ()
        if record.exc_info or record.exc_text:
            trace = record.exc_text or "".join(traceback.format_exception(*record.exc_info))
            if self._secret_in(trace):
                kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "an error"
                record.msg = f"{record.msg} ({kind}; its details were withheld: they contained a secret)"
                record.exc_info, record.exc_text = None, None
        return True


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _RedactSecrets) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_RedactSecrets())
        root.addHandler(handler)
    for name in LIBRARY_LOGGERS_WITH_SECRETS:
        library = logging.getLogger(name)
        if not any(isinstance(f, _MaskLibrarySecrets) for f in library.filters):
            library.addFilter(_MaskLibrarySecrets())
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
    # the mail servers (transport/__init__.py): the one seam where the network is swapped; tests put a fake here
    servers: Any = None

    def __post_init__(self) -> None:
        if self.servers is None:
            from .transport import MailServers

            self.servers = MailServers(self)

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
