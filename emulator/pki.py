"""The emulator's certificate authorities.

:class:`AttestationPki` stands in for the AWS Nitro PKI: a P-384 root, then regional, zonal and
instance CAs, then a short-lived leaf per enclave that signs its attestation documents — the same
depth, lifetimes and extensions as real documents (the root and intermediates go into
``cabundle``; leaves have no Authority Key Identifier, as on Nitro).

:class:`TlsAuthority` stands in for the public web PKI: it issues the certificate the emulated KMS
serves for ``kms.<region>.amazonaws.com`` (and 127.0.0.1, which the host's clients dial).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["AttestationPki", "IssuedCertificate", "TlsAuthority"]

LEAF_LIFETIME = dt.timedelta(hours=3)
_BACKDATE = dt.timedelta(minutes=5)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _name(common_name: str, *, locality: bool = False) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ZeroCopy Emulator"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Nitro emulation"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if locality:
        attributes.insert(1, x509.NameAttribute(NameOID.LOCALITY_NAME, "Localhost"))
    return x509.Name(attributes)


_CA_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
)
_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=True, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
)


@dataclass(frozen=True)
class IssuedCertificate:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _issue(
    subject: x509.Name,
    issuer: IssuedCertificate | None,
    *,
    lifetime: dt.timedelta,
    path_length: int | None,
    curve: ec.EllipticCurve = ec.SECP384R1(),
    authority_key_id: bool = True,
    not_before: dt.datetime | None = None,
    san: list[x509.GeneralName] | None = None,
) -> IssuedCertificate:
    key = ec.generate_private_key(curve)
    start = (not_before or _now()) - _BACKDATE
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
    )
    is_ca = path_length is not None or issuer is None
    builder = builder.add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
    builder = builder.add_extension(_CA_USAGE if is_ca else _LEAF_USAGE, critical=is_ca)
    if is_ca:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if issuer is not None and authority_key_id:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    digest = hashes.SHA384() if isinstance(signer_key.curve, ec.SECP384R1) else hashes.SHA256()
    return IssuedCertificate(key, builder.sign(signer_key, digest))


class AttestationPki:
    """Root → regional → zonal → instance CA → per-enclave leaf, all P-384 / ECDSA-SHA384."""

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region
        self.instance_id = "i-" + os.urandom(8).hex()[:17]
        self.root = _issue(_name("zc-emu.nitro-enclaves"), None, lifetime=dt.timedelta(days=365 * 30), path_length=None)
        regional = _issue(_name(f"{os.urandom(8).hex()}.{region}.zc-emu.nitro-enclaves"), self.root, lifetime=dt.timedelta(days=20), path_length=2)
        zonal = _issue(_name(f"{os.urandom(8).hex()}.zonal.{region}.zc-emu.nitro-enclaves", locality=True), regional, lifetime=dt.timedelta(days=6), path_length=1)
        self.instance = _issue(_name(f"{self.instance_id}.{region}.zc-emu.nitro-enclaves", locality=True), zonal, lifetime=dt.timedelta(days=1), path_length=0)
        self.cabundle: tuple[bytes, ...] = (self.root.der, regional.der, zonal.der, self.instance.der)

    @property
    def root_pem(self) -> bytes:
        return self.root.pem

    def issue_leaf(self, module_id: str) -> IssuedCertificate:
        """A leaf for one enclave; like Nitro's, it lives three hours and has no AKI."""
        return _issue(
            _name(f"{module_id}.{self.region}.zc-emu", locality=True),
            self.instance,
            lifetime=LEAF_LIFETIME,
            path_length=None,
            authority_key_id=False,
        )


class TlsAuthority:
    """A private CA for the emulated KMS endpoint's TLS certificate."""

    def __init__(self) -> None:
        self.root = _issue(_name("ZeroCopy Emulator TLS CA"), None, lifetime=dt.timedelta(days=30), path_length=None, curve=ec.SECP256R1())

    @property
    def root_pem(self) -> bytes:
        return self.root.pem

    def server_certificate(self, hostname: str) -> IssuedCertificate:
        return _issue(
            _name(hostname),
            self.root,
            lifetime=dt.timedelta(days=7),
            path_length=None,
            curve=ec.SECP256R1(),
            san=[x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )

    @staticmethod
    def key_pem(issued: IssuedCertificate) -> bytes:
        return issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
