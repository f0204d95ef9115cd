"""Typed settings, read once from TOML and `CONNECTOR_*` environment variables.

Every entry point (web app, CLI, worker) builds the same `Settings`, so a key means the same thing
everywhere. Environment variables win over the file: `CONNECTOR_<SECTION>_<KEY>`, for example
`CONNECTOR_DATABASE_URL` or `CONNECTOR_MICROSOFT_AUTHORITY_HOST`.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ConfigError(Exception):
    """A configuration value is wrong; the message says which and how to fix it."""


@dataclass
class AppSettings:
    base_url: str = "http://localhost:5000"
    secret_key: str = ""
    data_dir: str = "instance"
    max_login_failures: int = 5
    trusted_proxies: int = 0  # reverse proxies in front whose X-Forwarded-For / -Proto / -Host are believed
    session_idle_minutes: int = 480  # a sign-in session unused this long is over


@dataclass
class DatabaseSettings:
    url: str = "sqlite:///instance/connector.db"


@dataclass
class MicrosoftSettings:
    client_id: str = ""
    tenant: str = ""
    client_secret: str = ""
    authority_host: str = "https://login.microsoftonline.com"
    imap_host: str = "outlook.office365.com"
    imap_port: int = 993
    smtp_host: str = "smtp.office365.com"
    smtp_port: int = 587
    graph_host: str = "https://graph.microsoft.com"


@dataclass
class GoogleSettings:
    client_id: str = ""
    client_secret: str = ""
    authority: str = "https://accounts.google.com"
    imap_host: str = "imap.gmail.com"
    imap_port: int = 993
    smtp_host: str = "smtp.gmail.com"
    smtp_port: int = 587


@dataclass
class TlsSettings:
    ca_bundle: str = ""


@dataclass
class WorkerSettings:
    poll_interval_seconds: int = 60
    idle: bool = True
    idle_timeout_seconds: int = 1500  # re-issue IDLE well before the 30 min server timeout
    lease_seconds: int = 120
    sending_lease_seconds: int = 300  # a reply a crashed worker left "sending" is looked up in the sent folder after this
    sync_threads: int = 8  # mailboxes synced at once by one worker; the others wait in IDLE, watched by one thread


@dataclass
class MailSettings:
    max_message_bytes: int = 36 * 1024 * 1024
    fetch_batch_size: int = 200
    parse_timeout_seconds: int = 10  # one mail's parse; a mail over it is quarantined and the mailbox moves on


@dataclass
class Settings:
    app: AppSettings = field(default_factory=AppSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    microsoft: MicrosoftSettings = field(default_factory=MicrosoftSettings)
    google: GoogleSettings = field(default_factory=GoogleSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    source: str = "defaults"

    @property
    def data_path(self) -> Path:
        return Path(self.app.data_dir)

    @property
    def callback_url(self) -> str:
        return self.app.base_url.rstrip("/") + "/auth/microsoft/callback"

    @property
    def ca_bundle(self) -> str | None:
        return self.tls.ca_bundle or None


def _coerce(value: Any, target: Any, where: str) -> Any:
    if isinstance(target, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if isinstance(target, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a whole number, not {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {value!r}")
    return value


def _apply(settings: Settings, data: Mapping[str, Any], origin: str) -> None:
    for section_name, values in data.items():
        section = getattr(settings, section_name, None)
        if section is None or not dataclasses.is_dataclass(section) or not isinstance(values, Mapping):
            raise ConfigError(f"unknown section [{section_name}] in {origin}; see config.example.toml")
        for key, value in values.items():
            if not hasattr(section, key):
                raise ConfigError(f"unknown key {section_name}.{key} in {origin}; see config.example.toml")
            setattr(section, key, _coerce(value, getattr(section, key), f"{section_name}.{key}"))


def load_settings(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Settings:
    """Defaults, then the TOML file, then `CONNECTOR_*` variables, then explicit overrides."""
    env = os.environ if env is None else env
    settings = Settings()
    explicit = path is not None or "CONNECTOR_CONFIG" in env
    config_path = Path(path if path is not None else env.get("CONNECTOR_CONFIG", "config.toml"))
    if config_path.exists():
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path} is not valid TOML: {exc}") from None
        _apply(settings, data, str(config_path))
        settings.source = str(config_path)
    elif explicit:
        raise ConfigError(f"configuration file {config_path} does not exist; copy config.example.toml there")
    for section in dataclasses.fields(settings):
        if section.name == "source":
            continue
        obj = getattr(settings, section.name)
        for key in dataclasses.fields(obj):
            name = f"CONNECTOR_{section.name}_{key.name}".upper()
            if name in env:
                setattr(obj, key.name, _coerce(env[name], getattr(obj, key.name), name))
    if overrides:
        _apply(settings, overrides, "overrides")
    return settings
