"""Secrets at rest: Fernet encryption of token caches and the client secret; password hashing.

The encryption key comes from `CONNECTOR_ENCRYPTION_KEY` (comma-separated: the first encrypts, all
decrypt, so keys can be rotated) or is generated once into `<data_dir>/encryption.key` with 0600
permissions. Losing the key means reconnecting every mailbox, never a crash.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from werkzeug.security import check_password_hash, generate_password_hash

KEY_FILE = "encryption.key"
SECRET_KEY_FILE = "secret_key"


class DecryptionError(Exception):
    """Stored ciphertext cannot be read with the configured keys."""


def _write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)


def _read_or_create(path: Path, make: callable) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    try:
        _write_private(path, make())
    except FileExistsError:  # another process won the race; use its key
        pass
    return path.read_bytes().strip()


class Vault:
    """Encrypts and decrypts small secrets with the configured Fernet keys."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    @classmethod
    def from_environment(cls, data_dir: Path, env: dict | None = None) -> "Vault":
        env = os.environ if env is None else env
        configured = env.get("CONNECTOR_ENCRYPTION_KEY", "").strip()
        if configured:
            return cls([k.strip().encode() for k in configured.split(",") if k.strip()])
        return cls([_read_or_create(Path(data_dir) / KEY_FILE, Fernet.generate_key)])

    def encrypt(self, plaintext: bytes | str) -> bytes:
        if isinstance(plaintext, str):
            plaintext = plaintext.encode("utf-8")
        return self._fernet.encrypt(plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        try:
            return self._fernet.decrypt(ciphertext)
        except InvalidToken:
            raise DecryptionError(
                "stored secret cannot be decrypted with the configured encryption key; "
                "restore the old key (CONNECTOR_ENCRYPTION_KEY or encryption.key in the data folder) "
                "or reconnect the mailbox"
            ) from None

    def decrypt_text(self, ciphertext: bytes) -> str:
        return self.decrypt(ciphertext).decode("utf-8")


def flask_secret_key(data_dir: Path, configured: str) -> str:
    """The session-signing key: configured, or generated once into the data folder."""
    if configured:
        return configured
    return _read_or_create(Path(data_dir) / SECRET_KEY_FILE,
                           lambda: secrets.token_urlsafe(48).encode()).decode()


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def verify_password(password_hash: str, password: str) -> bool:
    return check_password_hash(password_hash, password)


def new_api_token() -> tuple[str, str]:
    """A fresh API token and the hash we store (only the hash is kept)."""
    token = "ctr_" + secrets.token_urlsafe(32)
    return token, hash_api_token(token)


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
