"""Throwaway TLS and SuperNode-authentication material for one local federation.

The local launcher makes a fresh CA, a SuperLink certificate (127.0.0.1/localhost) and one EC
key pair per hospital for every federation it starts; nothing outlives the run's work folder.
On a cluster the same material comes from Secrets (docs/kubernetes.md). Keys are P-256 in the
formats Flower reads: PEM for TLS, OpenSSH for SuperNode authentication.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["NodeKey", "TlsFiles", "write_node_key", "write_tls"]


@dataclass(frozen=True)
class TlsFiles:
    """A SuperLink's TLS material: the CA certificate, its own certificate and key (PEM paths)."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair (OpenSSH format) and its public fingerprint."""

    private: Path
    public: Path
    fingerprint: str


def _private_file(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)


def write_tls(folder: Path, *, valid_for: dt.timedelta = dt.timedelta(days=1)) -> TlsFiles:
    """A new CA and a SuperLink certificate it signed, for 127.0.0.1 and localhost."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privfed-run-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privfed-superlink")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + valid_for)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca_cert=folder / "ca.crt", cert=folder / "tls.crt", key=folder / "tls.key")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _private_file(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return files


def write_node_key(folder: Path, name: str) -> NodeKey:
    """A SuperNode key pair ``<name>`` / ``<name>.pub`` in OpenSSH format (what Flower reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    pair = NodeKey(
        private=folder / name,
        public=folder / f"{name}.pub",
        fingerprint="SHA256:" + hashlib.sha256(public).hexdigest()[:32],
    )
    _private_file(
        pair.private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    pair.public.write_bytes(public + b"\n")
    return pair
