"""Throwaway TLS material for tests: a CA, a server certificate for 127.0.0.1, client certs."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    server: bool,
    validity: datetime.timedelta,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls(
    folder: Path,
    client_cn: str = "device-1",
    *,
    validity: datetime.timedelta = datetime.timedelta(days=2),
) -> TlsFiles:
    """Write a CA, a server certificate for 127.0.0.1/localhost and a client certificate,
    each valid from five minutes ago for `validity`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(
        "test CA", ca_key, _name("test CA"), ca_key, ca=True, server=False, validity=validity
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue(
        "127.0.0.1", ca_key, ca_cert.subject, server_key, ca=False, server=True, validity=validity
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue(
        client_cn, ca_key, ca_cert.subject, client_key, ca=False, server=False, validity=validity
    )
    files = TlsFiles(
        folder / "ca.pem",
        folder / "ca.key",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )
    for cert, path in (
        (ca_cert, files.ca_cert),
        (server_cert, files.server_cert),
        (client_cert, files.client_cert),
    ):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, files.ca_key)
    _write_key(server_key, files.server_key)
    _write_key(client_key, files.client_key)
    return files
