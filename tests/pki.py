"""A throw-away test PKI built with `cryptography`: CAs and certificates written as PEM files.

The TLS tests of the server and of the Python client share it instead of each keeping a copy.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class Issued(NamedTuple):
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    """A CA with server and client certificates, plus a client signed by another CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _issue(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: Issued | None,
    usage: x509.ObjectIdentifier | None,
    san: list[x509.GeneralName] | None = None,
) -> Issued:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(name: str) -> Issued:
    """A self-signed CA certificate."""
    return _issue(name, _new_key(), None, None)


def make_server_cert(ca: Issued) -> Issued:
    """A server certificate for localhost and 127.0.0.1, signed by `ca`."""
    san: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    return _issue("localhost", _new_key(), ca, ExtendedKeyUsageOID.SERVER_AUTH, san)


def make_client_cert(ca: Issued, name: str) -> Issued:
    """A client certificate named `name`, signed by `ca`."""
    return _issue(name, _new_key(), ca, ExtendedKeyUsageOID.CLIENT_AUTH)


def write_pem(directory: Path, name: str, cert: x509.Certificate) -> Path:
    """Write `name.pem` in `directory` and return its path."""
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def write_pem_pair(directory: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    """Write `name.pem` and an unencrypted PKCS#8 `name.key`; return both paths."""
    key = directory / f"{name}.key"
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return write_pem(directory, name, issued.cert), key


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1, a client certificate and a stranger's."""
    ca = make_ca("tierroute test CA")
    server_cert, server_key = write_pem_pair(directory, "server", make_server_cert(ca))
    client_cert, client_key = write_pem_pair(directory, "client", make_client_cert(ca, "client"))
    stranger = make_client_cert(make_ca("another CA"), "stranger")
    stranger_cert, stranger_key = write_pem_pair(directory, "stranger", stranger)
    return Pki(
        ca=write_pem(directory, "ca", ca.cert),
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
        stranger_cert=stranger_cert,
        stranger_key=stranger_key,
    )
