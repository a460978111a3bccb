"""The lab's TLS material: a CA, a server certificate for 127.0.0.1 and a client certificate,
valid long enough for a device whose clock runs ahead (`clock.py`).

`tests/helpers/certs.py` issues certificates valid for two days, which is right for the rest
of the tests but not here: the device checks the server certificate with its own (shifted)
clock, and a freeze test moves that clock weeks ahead. An expired lab certificate would make
every such run fail with a TLS error before TUF even sees the metadata, so these are valid
for `VALIDITY` (starting a few minutes back, as there).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers.certs import TlsFiles

VALIDITY = timedelta(days=365)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if usage is None:  # the CA
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
        ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
    return builder.sign(issuer_key, hashes.SHA256())


def make_lab_tls(folder: Path, client_cn: str = "device-1") -> TlsFiles:
    """Write the lab's CA, server and client certificates and keys into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _issue("red team lab CA", _name("red team lab CA"), ca_key, ca_key, usage=None)
    server = _issue(
        "127.0.0.1", ca.subject, ca_key, server_key, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client = _issue(
        client_cn, ca.subject, ca_key, client_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
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
        (ca, files.ca_cert),
        (server, files.server_cert),
        (client, files.client_cert),
    ):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for key, path in (
        (ca_key, files.ca_key),
        (server_key, files.server_key),
        (client_key, files.client_key),
    ):
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
    return files
