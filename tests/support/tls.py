"""A throwaway certificate authority for the test servers (identity provider, Dovecot, SMTP).

The app trusts it only through configuration (`[tls] ca_bundle`), exactly as an operator would
trust a corporate CA, so no test turns certificate verification off.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class ServerCert:
    cert_path: Path  # leaf + chain, PEM
    key_path: Path  # private key, PEM


class TestCA:
    """A trustme CA that writes its files into `directory`."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA(organization_name="connector test CA")
        self.ca_path = self.directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))

    def issue(self, name: str, hostnames: tuple[str, ...] = ("127.0.0.1", "localhost")) -> ServerCert:
        leaf = self._ca.issue_cert(*hostnames)
        cert_path = self.directory / f"{name}.crt"
        key_path = self.directory / f"{name}.key"
        leaf.private_key_pem.write_to_path(str(key_path))
        with open(cert_path, "wb") as out:
            for blob in leaf.cert_chain_pems:
                out.write(blob.bytes())
        key_path.chmod(0o600)
        return ServerCert(cert_path, key_path)

    def server_context(self, name: str) -> ssl.SSLContext:
        cert = self.issue(name)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))
