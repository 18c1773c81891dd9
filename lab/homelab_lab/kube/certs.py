"""The stand-in's PKI, laid out as K3s lays it out under ``<data-dir>/server/tls``.

server-ca.crt/.key          signs the serving certificate (the kubeconfig's certificate-authority-data)
client-ca.crt/.key          signs client certificates (the kubeconfig's admin credential)
serving-kube-apiserver.crt/.key   the API's certificate: IP SANs for the addresses, DNS SANs for the names
client-admin.crt/.key       CN=system:admin, O=system:masters
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def ensure_ca(folder: Path, name: str, common_name: str) -> tuple[Key, x509.Certificate]:
    """A CA (``<name>.crt``/``.key`` in folder): loaded, or made when missing or about to expire."""
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    now = datetime.datetime.now(datetime.UTC)
    if cert_file.exists() and key_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if isinstance(key, Key) and cert.not_valid_after_utc > now + datetime.timedelta(days=1):
            return key, cert
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}@{int(now.timestamp())}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_file, _key_pem(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _leaf(
    ca: tuple[Key, x509.Certificate],
    subject: x509.Name,
    usage: ExtendedKeyUsageOID | object,
    sans: list[x509.GeneralName],
) -> tuple[Key, x509.Certificate]:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)  # type: ignore[list-item]
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _save(folder: Path, name: str, key: Key, cert: x509.Certificate, ca: x509.Certificate) -> None:
    _write_private(folder / f"{name}.key", _key_pem(key))
    pem = cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    (folder / f"{name}.crt").write_bytes(pem)


def _sans(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _current_sans(path: Path) -> set[str]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def ensure(folder: Path, sans: list[str]) -> None:
    """The whole PKI under folder; the serving certificate is re-issued when its SANs change."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    server_ca = ensure_ca(folder, "server-ca", "k3s-server-ca")
    client_ca = ensure_ca(folder, "client-ca", "k3s-client-ca")
    serving = folder / "serving-kube-apiserver.crt"
    wanted = [
        *sans,
        "127.0.0.1",
        "::1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    if _current_sans(serving) != {str(ipaddress.ip_address(s)) if _is_ip(s) else s for s in wanted}:
        key, cert = _leaf(
            server_ca,
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            ExtendedKeyUsageOID.SERVER_AUTH,
            _sans(wanted),
        )
        _save(folder, "serving-kube-apiserver", key, cert, server_ca[1])
    if not (folder / "client-admin.crt").exists():
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "system:admin"),
            ]
        )
        key, cert = _leaf(client_ca, subject, ExtendedKeyUsageOID.CLIENT_AUTH, [])
        _save(folder, "client-admin", key, cert, client_ca[1])


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
