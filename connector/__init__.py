"""connector: Microsoft 365 mailboxes to helpdesk tickets over IMAP/SMTP with OAuth 2.0."""
from __future__ import annotations

from typing import Any, Mapping


def create_app(config: Mapping[str, Any] | None = None):
    """The Flask app factory. `config` overrides settings by section, e.g. {"app": {"base_url": ...}}."""
    from .web.app import build_app

    return build_app(config)
