"""Who a TensorFleet process is: an EC key, a self-signed certificate, and ids derived from them.

The node id is derived from the public key, so it is stable across restarts and cannot be claimed by
another machine; the certificate's sha256 fingerprint is what peers pin (trust on first use).
Files are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

KEY_FILE = "node.key"
CERT_FILE = "node.crt"


@dataclass(frozen=True)
class Identity:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    node_id: str
    fingerprint: str

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_key(directory: Path) -> ec.EllipticCurvePrivateKey:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} does not hold an EC private key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    _write_private(
        path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return key


def node_id_of(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:20]


def fingerprint_of(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def node_id_of_cert(cert_pem: bytes) -> tuple[str, str]:
    """(node id, fingerprint) of a PEM certificate; raises ValueError for anything else."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ValueError("certificate does not hold an EC key")
    return node_id_of(public), fingerprint_of(cert)


def verify_signature(cert_pem: bytes, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    public = x509.load_pem_x509_certificate(cert_pem).public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    try:
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def load_or_create_identity(directory: Path, role: str = "agent") -> Identity:
    """The key and a self-signed certificate naming the node id (CN and DNS SAN, for TLS name checks)."""
    key = load_or_create_key(directory)
    node_id = node_id_of(key)
    path = directory / CERT_FILE
    cert = None
    if path.exists():
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        if node_id_of_cert(path.read_bytes())[0] != node_id:
            cert = None  # a key was replaced by hand: issue a matching certificate
    if cert is None:
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"TensorFleet {role}"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        _write_private(path, cert.public_bytes(serialization.Encoding.PEM))
    return Identity(key, cert, node_id, fingerprint_of(cert))
