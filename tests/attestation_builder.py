"""Helpers for attestation tests: the real vectors, and documents built from a chain we control.

``load_vector`` reads files under ``tests/data`` (see ``tests/data/PROVENANCE.md``).
``make_chain`` issues a P-384 root → intermediates → leaf chain shaped like AWS's (CAs carry
SKI/AKI and critical basicConstraints/keyUsage; the leaf has no AKI, as real Nitro leaves do), and
``build_document`` signs a COSE_Sign1 attestation document with the leaf key as the NSM does.
Fields can be added, replaced or omitted to build malformed documents that are still validly signed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

__all__ = [
    "DATA_DIR",
    "Chain",
    "build_document",
    "document_timestamp",
    "issue_certificate",
    "load_vector",
    "make_chain",
    "sample_pcrs",
    "timestamp_ms",
]

DATA_DIR = Path(__file__).parent / "data"

ES384_PROTECTED = cbor2.dumps({1: -35})


def load_vector(name: str) -> bytes:
    """Bytes of ``tests/data/<name>``; ``.b64`` files are base64-decoded."""
    data = (DATA_DIR / name).read_bytes()
    if name.endswith(".b64"):
        return base64.b64decode(data, validate=False)
    return data


def document_timestamp(document: bytes) -> dt.datetime:
    """The ``timestamp`` field of a (well-formed) document as an aware UTC datetime."""
    outer = cbor2.loads(document)
    if isinstance(outer, cbor2.CBORTag):
        outer = outer.value
    millis = cbor2.loads(outer[2])["timestamp"]
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=millis)


def sample_pcrs(seed: bytes = b"zerocopy", *, debug: bool = False) -> dict[int, bytes]:
    """PCR0–15 as an NSM reports them: 0–2 and 4 measured (0–2 zero in debug mode)."""
    pcrs = {index: bytes(48) for index in range(16)}
    for index in (0, 1, 2, 4):
        if debug and index in (0, 1, 2):
            continue
        pcrs[index] = hashlib.sha384(seed + bytes([index])).digest()
    return pcrs


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ZeroCopy Tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue_certificate(
    *,
    common_name: str,
    public_key: Any,
    issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    ca: bool,
    path_length: int | None = None,
    authority_key_id: bool = True,
) -> x509.Certificate:
    """Issue one certificate; ``issuer_cert=None`` makes it self-signed by ``issuer_key``."""
    subject = _name(common_name)
    issuer = subject if issuer_cert is None else issuer_cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
    if authority_key_id and issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA384())


@dataclass(frozen=True)
class Chain:
    """Root → intermediates → leaf; ``intermediates`` in cabundle order (root side first)."""

    root_key: ec.EllipticCurvePrivateKey
    root_cert: x509.Certificate
    intermediate_keys: tuple[ec.EllipticCurvePrivateKey, ...]
    intermediates: tuple[x509.Certificate, ...]
    leaf_key: ec.EllipticCurvePrivateKey
    leaf_cert: x509.Certificate

    @property
    def cabundle(self) -> list[x509.Certificate]:
        return [self.root_cert, *self.intermediates]

    def document(self, **fields: Any) -> bytes:
        """``build_document`` with this chain; ``pcrs`` defaults to :func:`sample_pcrs`."""
        fields.setdefault("pcrs", sample_pcrs())
        return build_document(
            root_key=self.root_key,
            root_cert=self.root_cert,
            intermediates=list(self.intermediates),
            leaf_key=self.leaf_key,
            leaf_cert=self.leaf_cert,
            **fields,
        )

    def document_with_new_leaf(
        self,
        at: dt.datetime,
        *,
        common_name: str,
        leaf_key: Any = None,
        ca: bool = False,
        path_length: int | None = None,
    ) -> bytes:
        """A document at ``at`` signed by a new leaf (valid 1 h before to 2 h after) under the last
        intermediate; ``leaf_key`` defaults to a fresh P-384 key."""
        leaf_key = leaf_key or ec.generate_private_key(ec.SECP384R1())
        leaf_cert = issue_certificate(
            common_name=common_name,
            public_key=leaf_key.public_key(),
            issuer_cert=self.intermediates[-1],
            issuer_key=self.intermediate_keys[-1],
            not_before=at - dt.timedelta(hours=1),
            not_after=at + dt.timedelta(hours=2),
            ca=ca,
            path_length=path_length,
            authority_key_id=ca,  # like Nitro leaves, an end-entity leaf has no AKI
        )
        return build_document(
            root_key=self.root_key,
            root_cert=self.root_cert,
            intermediates=list(self.intermediates),
            leaf_key=leaf_key,
            leaf_cert=leaf_cert,
            pcrs=sample_pcrs(),
            timestamp_ms=timestamp_ms(at),
        )


def make_chain(
    now: dt.datetime,
    *,
    intermediates: int = 1,
    leaf_lifetime: dt.timedelta = dt.timedelta(hours=3),
    name: str = "zerocopy-test",
) -> Chain:
    """A fresh P-384 chain valid at ``now``: root 10 years, intermediates 30 days, leaf ~3 h."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    root_cert = issue_certificate(
        common_name=f"{name} root",
        public_key=root_key.public_key(),
        issuer_cert=None,
        issuer_key=root_key,
        not_before=now - dt.timedelta(days=365),
        not_after=now + dt.timedelta(days=3650),
        ca=True,
    )
    issuer_key, issuer_cert = root_key, root_cert
    keys, certs = [], []
    for depth in range(intermediates):
        key = ec.generate_private_key(ec.SECP384R1())
        cert = issue_certificate(
            common_name=f"{name} intermediate {depth}",
            public_key=key.public_key(),
            issuer_cert=issuer_cert,
            issuer_key=issuer_key,
            not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=30),
            ca=True,
            path_length=intermediates - depth - 1,
        )
        keys.append(key)
        certs.append(cert)
        issuer_key, issuer_cert = key, cert
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    leaf_cert = issue_certificate(
        common_name=f"{name} enclave",
        public_key=leaf_key.public_key(),
        issuer_cert=issuer_cert,
        issuer_key=issuer_key,
        not_before=now - dt.timedelta(minutes=5),
        not_after=now - dt.timedelta(minutes=5) + leaf_lifetime,
        ca=False,
        authority_key_id=False,  # like real Nitro leaves
    )
    return Chain(root_key, root_cert, tuple(keys), tuple(certs), leaf_key, leaf_cert)


def build_document(
    *,
    root_key: ec.EllipticCurvePrivateKey,
    root_cert: x509.Certificate,
    intermediates: Iterable[x509.Certificate],
    leaf_key: ec.EllipticCurvePrivateKey,
    leaf_cert: x509.Certificate,
    pcrs: Mapping[int, bytes],
    timestamp_ms: int,
    module_id: str = "i-0123456789abcdef0-enc0123456789abcdef",
    public_key: bytes | None = None,
    user_data: bytes | None = None,
    nonce: bytes | None = None,
    extra_fields: Mapping[str, Any] | None = None,
    omit_fields: Iterable[str] = (),
    signing_key: ec.EllipticCurvePrivateKey | None = None,
    tagged: bool = False,
) -> bytes:
    """A COSE_Sign1 attestation document signed ES384 by ``signing_key`` (default ``leaf_key``).

    ``root_key`` is only checked against ``root_cert`` (the NSM never holds it). ``extra_fields``
    adds or replaces payload fields verbatim (any CBOR value), ``omit_fields`` removes them, so
    malformed documents still carry a valid signature.
    """
    if root_key.public_key() != root_cert.public_key():
        raise ValueError("root_key does not belong to root_cert")
    payload_fields: dict[Any, Any] = {
        "module_id": module_id,
        "digest": "SHA384",
        "timestamp": timestamp_ms,
        "pcrs": dict(pcrs),
        "certificate": leaf_cert.public_bytes(Encoding.DER),
        "cabundle": [cert.public_bytes(Encoding.DER) for cert in [root_cert, *intermediates]],
        "public_key": public_key,
        "user_data": user_data,
        "nonce": nonce,
    }
    payload_fields.update(extra_fields or {})
    for key in omit_fields:
        payload_fields.pop(key, None)
    payload = cbor2.dumps(payload_fields)
    sig_structure = cbor2.dumps(["Signature1", ES384_PROTECTED, b"", payload])
    der = (signing_key or leaf_key).sign(sig_structure, ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    document = [ES384_PROTECTED, {}, payload, signature]
    if tagged:
        return cbor2.dumps(cbor2.CBORTag(18, document))
    return cbor2.dumps(document)


def timestamp_ms(when: dt.datetime) -> int:
    """Milliseconds since the epoch, as the ``timestamp`` field carries them."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (when - epoch) // dt.timedelta(milliseconds=1)
