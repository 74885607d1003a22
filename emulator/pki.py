"""The emulator's certificate authorities.

:class:`AttestationPki` stands in for the AWS Nitro PKI: a P-384 root, then regional, zonal and
instance CAs, then a short-lived leaf per enclave that signs its attestation documents. Each level
has the profile of the real chains in ``tests/data/attestation`` (documents of 2024 and 2025):
the same extensions in the same order and criticality, the same key usages (the instance CA may
only sign certificates; the leaf, not critically, digitalSignature and contentCommitment), CRL
distribution points on the regional and zonal CAs, the same validity periods, the same subject
attribute order, and no Authority Key Identifier on the leaf. Names say ``zc-emu`` where AWS's say
``aws``, and CRLs point into ``.invalid`` (RFC 2606), so nothing emulated passes for AWS's.
``docs/fidelity.md`` lists the differences; ``tests/test_fidelity.py`` compares level by level.

:class:`TlsAuthority` stands in for the public web PKI: it issues the certificate the emulated KMS
serves for ``kms.<region>.amazonaws.com`` (and 127.0.0.1, which the host's clients dial).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["AttestationPki", "IssuedCertificate", "Leaf", "TlsAuthority", "LEAF_LIFETIME", "new_instance_id", "new_module_id"]

Clock = Callable[[], dt.datetime]

_C, _ST, _L, _O, _OU, _CN = (
    NameOID.COUNTRY_NAME,
    NameOID.STATE_OR_PROVINCE_NAME,
    NameOID.LOCALITY_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.COMMON_NAME,
)
_ORGANIZATION = "ZeroCopy Emulator"  # AWS: "Amazon"
_UNIT = "Nitro emulation"  # AWS: "AWS"


def _usage(*, digital_signature: bool = False, content_commitment: bool = False, key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=content_commitment, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )


@dataclass(frozen=True)
class _Profile:
    """One level of the Nitro chain, as the real certificates show it."""

    lifetime: dt.timedelta
    backdate: dt.timedelta  # AWS issues CAs ahead of use: at any moment they have run a while
    path_length: int | None
    ca: bool
    key_usage: x509.KeyUsage
    key_usage_critical: bool
    extensions: tuple[str, ...]  # in the order the real certificates carry them
    name_order: tuple[x509.ObjectIdentifier, ...]
    state: str  # the subject's stateOrProvinceName, where it has one
    serial_bits: int  # AWS's serials: 128 bits, 160 for the instance CA (cryptography allows 159)


_CA_USAGE = _usage(digital_signature=True, key_cert_sign=True, crl_sign=True)
_ROOT = _Profile(
    dt.timedelta(days=10958, hours=1), dt.timedelta(days=60), None, True, _CA_USAGE, True,
    ("basic_constraints", "subject_key_id", "key_usage"), (_C, _O, _OU, _CN), "", 128,
)
_REGIONAL = _Profile(
    dt.timedelta(days=20, hours=1), dt.timedelta(days=3), 2, True, _CA_USAGE, True,
    ("basic_constraints", "authority_key_id", "subject_key_id", "key_usage", "crl_distribution_points"),
    (_C, _O, _OU, _CN), "", 128,
)
_ZONAL = _Profile(
    dt.timedelta(days=6, hours=1), dt.timedelta(hours=7), 1, True, _CA_USAGE, True,
    ("basic_constraints", "authority_key_id", "subject_key_id", "key_usage", "crl_distribution_points"),
    (_CN, _OU, _O, _C, _ST, _L), "WA", 128,
)
_INSTANCE = _Profile(
    dt.timedelta(days=1), dt.timedelta(minutes=1), 0, True, _usage(key_cert_sign=True), True,
    ("basic_constraints", "key_usage", "subject_key_id", "authority_key_id"), (_C, _ST, _L, _O, _OU, _CN), "Washington", 159,
)
_LEAF = _Profile(
    dt.timedelta(hours=3, seconds=3), dt.timedelta(0), None, False, _usage(digital_signature=True, content_commitment=True), False,
    ("basic_constraints", "key_usage"), (_C, _ST, _L, _O, _OU, _CN), "Washington", 121,
)
LEAF_LIFETIME = _LEAF.lifetime


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_instance_id() -> str:
    """An EC2 instance id as AWS writes them: ``i-`` and 17 hex digits."""
    return "i-0" + os.urandom(8).hex()


def new_module_id(instance_id: str, launched: dt.datetime | None = None) -> str:
    """``<instance id>-enc<16 hex>``: the enclave's launch time in milliseconds (12 hex digits), then 4 random."""
    millis = int((launched or _utc_now()).timestamp() * 1000)
    return f"{instance_id}-enc{millis:012x}{os.urandom(2).hex()}"


def _name(profile: _Profile, common_name: str) -> x509.Name:
    values = {_C: "US", _ST: profile.state, _L: "Seattle", _O: _ORGANIZATION, _OU: _UNIT, _CN: common_name}
    return x509.Name([x509.NameAttribute(oid, values[oid]) for oid in profile.name_order])


def _serial(bits: int) -> int:
    """A random serial of exactly ``bits`` bits, so its DER length is the real one's."""
    random_bits = int.from_bytes(os.urandom((bits + 7) // 8), "big") & ((1 << bits) - 1)
    return random_bits | (1 << (bits - 1))


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


@dataclass(frozen=True)
class Leaf(IssuedCertificate):
    """A leaf with the ``cabundle`` (root first) it was issued under: documents carry both."""

    cabundle: tuple[bytes, ...] = ()


def _issue(profile: _Profile, common_name: str, issuer: IssuedCertificate | None, now: dt.datetime, *, crl_url: str = "") -> IssuedCertificate:
    key = ec.generate_private_key(ec.SECP384R1())
    start = now.replace(microsecond=0) - profile.backdate
    subject = _name(profile, common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(_serial(profile.serial_bits))
        .not_valid_before(start)
        .not_valid_after(start + profile.lifetime)
    )
    extensions = {
        "basic_constraints": lambda: (x509.BasicConstraints(ca=profile.ca, path_length=profile.path_length), True),
        "key_usage": lambda: (profile.key_usage, profile.key_usage_critical),
        "subject_key_id": lambda: (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        "authority_key_id": lambda: (x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False),
        "crl_distribution_points": lambda: (x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)]), False),
    }
    for name in profile.extensions:
        value, critical = extensions[name]()
        builder = builder.add_extension(value, critical=critical)
    return IssuedCertificate(key, builder.sign(issuer.key if issuer else key, hashes.SHA384()))


class AttestationPki:
    """Root → regional → zonal → instance CA → per-enclave leaf, all P-384 / ECDSA-SHA384.

    Like AWS's, the CAs below the root are short-lived (20 days, 6 days, 1 day). Before it issues a
    leaf, the PKI renews every CA that would expire during the leaf's three hours, so an emulator
    left running for days keeps signing valid documents and no leaf outlives its issuer (as in the
    real chains). ``clock`` gives the current time (tests pass their own to move it).
    """

    def __init__(self, region: str = "us-east-1", *, clock: Clock = _utc_now) -> None:
        self.region = region
        self.clock = clock
        self.instance_id = new_instance_id()
        now = clock()
        self.root = _issue(_ROOT, "zc-emu.nitro-enclaves", None, now)
        self._chain: list[IssuedCertificate] = []
        self._renew(now, from_level=0)

    @property
    def root_pem(self) -> bytes:
        return self.root.pem

    @property
    def cabundle(self) -> tuple[bytes, ...]:
        """Root, regional, zonal and instance CA as DER, root first, as documents carry them."""
        return (self.root.der, *(issued.der for issued in self._chain))

    def issue_leaf(self, module_id: str) -> Leaf:
        """A leaf for one enclave; like Nitro's, it lives three hours and has no AKI or SKI."""
        now = self.clock()
        expiring = [i for i, issued in enumerate(self._chain) if issued.certificate.not_valid_after_utc < now + _LEAF.lifetime]
        if expiring:
            self._renew(now, from_level=expiring[0])
        leaf = _issue(_LEAF, f"{module_id}.{self.region}.zc-emu", self._chain[-1], now)
        return Leaf(leaf.key, leaf.certificate, self.cabundle)

    def _renew(self, now: dt.datetime, *, from_level: int) -> None:
        """Issue the CAs from ``from_level`` (0 = regional) down to the instance CA afresh."""
        region = self.region
        chain = self._chain[:from_level]
        issuer = chain[-1] if chain else self.root
        levels = [
            (_REGIONAL, f"{os.urandom(8).hex()}.{region}.zc-emu.nitro-enclaves", f"http://zc-emu-nitro-enclaves-crl.invalid/crl/{uuid.uuid4()}.crl"),
            (_ZONAL, f"{os.urandom(8).hex()}.zonal.{region}.zc-emu.nitro-enclaves", f"http://crl-{region}-zc-emu-nitro-enclaves.invalid/crl/{uuid.uuid4()}.crl"),
            (_INSTANCE, f"{self.instance_id}.{region}.zc-emu.nitro-enclaves", ""),
        ]
        for profile, common_name, crl_url in levels[from_level:]:
            issuer = _issue(profile, common_name, issuer, now, crl_url=crl_url)
            chain.append(issuer)
        self._chain = chain


class TlsAuthority:
    """A private CA for the emulated KMS endpoint's TLS certificate."""

    def __init__(self) -> None:
        self.root = self._issue(x509.Name([x509.NameAttribute(_CN, "ZeroCopy Emulator TLS CA")]), None, dt.timedelta(days=30))

    @property
    def root_pem(self) -> bytes:
        return self.root.pem

    def server_certificate(self, hostname: str) -> IssuedCertificate:
        return self._issue(
            x509.Name([x509.NameAttribute(_CN, hostname)]),
            self.root,
            dt.timedelta(days=7),
            san=[x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )

    @staticmethod
    def _issue(subject: x509.Name, issuer: IssuedCertificate | None, lifetime: dt.timedelta, *, san: list[x509.GeneralName] | None = None) -> IssuedCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        start = _utc_now().replace(microsecond=0) - dt.timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.certificate.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.BasicConstraints(ca=san is None, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if issuer is not None:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
        if san is None:
            builder = builder.add_extension(_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
        else:
            builder = builder.add_extension(_usage(digital_signature=True), critical=True)
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return IssuedCertificate(key, builder.sign(issuer.key if issuer else key, hashes.SHA256()))

    @staticmethod
    def key_pem(issued: IssuedCertificate) -> bytes:
        return issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
