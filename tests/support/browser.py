"""Chromium (Debian's /usr/bin/chromium) driven by Playwright, trusting exactly the test IdP's certificate.

How the browser trusts the test identity provider, and why this way:
Chromium does not read our CA file, and `playwright install` cannot download a browser here. The
options were (a) `ignore_https_errors=True` on the context, which turns certificate checking off
for every origin the test visits; (b) importing the test CA into an NSS database (needs
`certutil`, which Debian's chromium does not bring); (c) `--ignore-certificate-errors-spki-list`,
which accepts a certificate only if its public key is one we name. We use (c): at launch we
connect to the IdP, verify its certificate against the test CA with Python's `ssl` (so we only
ever pin a certificate our CA really issued), and pass the SHA-256 hash of its public key. Every
other origin keeps full certificate checking, and contexts use `ignore_https_errors=False`.
"""
from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CHROMIUM = Path("/usr/bin/chromium")
BASE_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_available() -> bool:
    return CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK)


def served_certificate(url: str, ca_path: str | os.PathLike) -> bytes:
    """The DER certificate an HTTPS server presents, verified against `ca_path` first."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=str(ca_path))
    with socket.create_connection((parts.hostname, parts.port or 443), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
            return tls.getpeercert(binary_form=True)


def spki_hash(der_certificate: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): the form --ignore-certificate-errors-spki-list takes."""
    cert = x509.load_der_x509_certificate(der_certificate)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def launch_args(trusted_https_urls: list[str], ca_path: str | os.PathLike) -> list[str]:
    pins = [spki_hash(served_certificate(url, ca_path)) for url in trusted_https_urls]
    return BASE_ARGS + ([f"--ignore-certificate-errors-spki-list={','.join(pins)}"] if pins else [])


def launch(playwright, trusted_https_urls: list[str], ca_path: str | os.PathLike):
    return playwright.chromium.launch(executable_path=str(CHROMIUM),
                                      args=launch_args(trusted_https_urls, ca_path))
