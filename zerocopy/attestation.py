"""Verify AWS Nitro Enclaves attestation documents.

A document is a COSE_Sign1 (ES384) whose payload names the enclave's measurements (PCRs), the keys
and data it bound into the document, and the certificate that signed it. :func:`verify` accepts a
document only if all of this holds, checked in this order:

1. the bytes are strict CBOR of exactly the shape AWS specifies (no extra fields, sizes in range),
   in any valid encoding — AWS has emitted definite and indefinite-length payloads;
2. the leaf certificate's P-384 key signs ``["Signature1", protected, h'', payload]``;
3. every certificate is valid at ``now`` (real leaves live about three hours, so old documents are
   checked *as of* a time);
4. leaf → reversed ``cabundle`` → a trusted root is exactly the chain, and the root is one of
   ``roots`` (by default the pinned AWS Nitro Enclaves Root-G1) — the root inside the document is
   never trusted on its own;
5. debug-mode documents (PCR0–2 all zero) are refused unless asked for, then ``expected_pcrs`` and
   ``nonce`` are compared in constant time.

Only after 1–4 is anything in the payload believed; policy checks (5) run on authenticated data.
Every malformed input raises :class:`MalformedDocument`; each failure has its own
:class:`AttestationError` subclass so callers and the CLI can say exactly what went wrong.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import hmac
import importlib.resources
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification

from enclave.protocol import cbor

from .errors import AttestationError, CertificateChainInvalid, CertificateExpired, DebugModeRefused, MalformedDocument, NonceMismatch, PCRMismatch, PinnedRootInvalid, SignatureInvalid

__all__ = [
    "AWS_NITRO_ROOT_G1_SHA256",
    "AttestationDocument",
    "AttestationError",
    "CertificateChainInvalid",
    "CertificateExpired",
    "DebugModeRefused",
    "MalformedDocument",
    "NonceMismatch",
    "PCRMismatch",
    "PinnedRootInvalid",
    "SignatureInvalid",
    "aws_nitro_root",
    "describe",
    "document_time",
    "verify",
]

#: SHA-256 over the DER of AWS_NitroEnclaves_Root-G1, as published by AWS.
AWS_NITRO_ROOT_G1_SHA256 = "641A0321A3E244EFE456463195D606317ED7CDCC3C1756E09893F3C68F79BB5B"

# Anchored at the data folder (a namespace package), which resolves under wheels and editable
# installs alike; anchoring at "zerocopy" fails when an editable install maps it as a namespace.
_PINNED_ROOT_RESOURCE = ("zerocopy.data", "aws-nitro-root-g1.pem")

# Limits from the AWS attestation document specification (NSM API, "Attestation document").
PCR_COUNT = 32
PCR_LENGTH = 48  # SHA-384
MAX_OPTIONAL_FIELD = 1024  # public_key, user_data, nonce
MAX_CERTIFICATE_DER = 1024
MAX_CABUNDLE = 8  # root plus intermediates; real documents carry 4
MAX_DOCUMENT = 64 * 1024  # well above the largest legal document
_MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last datetime can express

_ES384_PROTECTED = {1: -35}  # COSE header "alg" (1) = ES384 (-35)
_DEBUG_PCRS = (0, 1, 2)
_ZERO_PCR = bytes(PCR_LENGTH)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)

_REQUIRED_FIELDS = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
_OPTIONAL_FIELDS = ("public_key", "user_data", "nonce")


@dataclass(frozen=True, eq=False, slots=True)
class AttestationDocument:
    """A verified attestation document. Immutable; equal when the raw bytes are equal."""

    module_id: str
    digest: str
    timestamp: _dt.datetime
    pcrs: Mapping[int, bytes]
    certificate: x509.Certificate
    cabundle: tuple[x509.Certificate, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    debug: bool
    raw: bytes = field(repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttestationDocument):
            return NotImplemented
        return self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return (
            f"AttestationDocument(module_id={self.module_id!r}, "
            f"timestamp={self.timestamp.isoformat()}, debug={self.debug})"
        )


def verify(
    document: bytes,
    *,
    roots: Iterable[bytes | x509.Certificate] | None = None,
    now: _dt.datetime | None = None,
    expected_pcrs: Mapping[int, bytes] | None = None,
    nonce: bytes | None = None,
    allow_debug: bool = False,
) -> AttestationDocument:
    """Verify a Nitro attestation document and return its decoded contents.

    ``document`` is the raw COSE_Sign1 CBOR (untagged or with tag 18). ``roots`` are the trusted
    roots as PEM bytes or certificates (default: the pinned AWS Nitro Enclaves Root-G1). ``now`` is
    the aware time to check certificates at (default: the current time). ``expected_pcrs`` maps PCR
    indexes to the exact 48-byte values required; ``nonce`` is the value the document must carry.
    Debug-mode documents are refused unless ``allow_debug`` is true.

    Raises a subclass of :class:`AttestationError` naming the failed check; ``TypeError`` or
    ``ValueError`` for misused arguments.
    """
    raw = _check_document_argument(document)
    trusted = _trusted_roots(roots)
    at = _check_now(now)
    wanted_pcrs = _check_expected_pcrs(expected_pcrs)
    wanted_nonce = _check_nonce_argument(nonce)

    protected, payload, signature = _decode_cose(raw)
    fields = _decode_payload(payload)
    leaf, cabundle = _load_certificates(fields)
    _verify_signature(leaf, protected, payload, signature)
    _check_validity(leaf, cabundle, at)
    _verify_chain(leaf, cabundle, trusted, at)

    debug = _check_debug(fields["pcrs"], allow_debug)
    _check_pcrs(fields["pcrs"], wanted_pcrs)
    _check_nonce(fields["nonce"], wanted_nonce)
    return _document(fields, leaf, cabundle, debug, raw)


def _check_debug(pcrs: Mapping[int, bytes], allow_debug: bool) -> bool:
    """Whether the document is a debug enclave's (PCR0-2 all zero); refused unless allowed."""
    debug = all(pcrs.get(index) == _ZERO_PCR for index in _DEBUG_PCRS)
    if debug and not allow_debug:
        raise DebugModeRefused("enclave runs in debug mode (PCR0-2 are zero)")
    return debug


def _check_pcrs(pcrs: Mapping[int, bytes], wanted: Mapping[int, bytes]) -> None:
    for index, value in wanted.items():
        if index not in pcrs:
            raise PCRMismatch(f"PCR{index} is not in the document", index=index)
        if not hmac.compare_digest(pcrs[index], value):
            raise PCRMismatch(f"PCR{index} does not match the expected value: expected {value.hex()}, the document has {pcrs[index].hex()}", index=index)


def _check_nonce(carried: bytes | None, wanted: bytes | None) -> None:
    if wanted is None:
        return
    if carried is None:
        raise NonceMismatch("document carries no nonce")
    if not hmac.compare_digest(carried, wanted):
        raise NonceMismatch("document nonce does not match")


def _document(fields: dict, leaf: x509.Certificate, cabundle: list, debug: bool, raw: bytes) -> AttestationDocument:
    return AttestationDocument(
        module_id=fields["module_id"],
        digest=fields["digest"],
        timestamp=_EPOCH + _dt.timedelta(milliseconds=fields["timestamp"]),
        pcrs=types.MappingProxyType(dict(sorted(fields["pcrs"].items()))),
        certificate=leaf,
        cabundle=tuple(cabundle),
        public_key=fields["public_key"],
        user_data=fields["user_data"],
        nonce=fields["nonce"],
        debug=debug,
        raw=raw,
    )


def document_time(document: bytes) -> _dt.datetime:
    """The time a document claims to have been made, read WITHOUT verifying anything.

    For verifying an old document as of its own time (``verify(doc, now=document_time(doc))``):
    the signature and chain are still checked, only the clock is the document's.
    """
    raw = _check_document_argument(document)
    _, payload, _ = _decode_cose(raw)
    return _dt.datetime.fromtimestamp(_decode_payload(payload)["timestamp"] / 1000, tz=_dt.timezone.utc)


def describe(doc: AttestationDocument) -> dict[str, Any]:
    """A JSON-ready summary of a verified document, for people and ``zerocopy attest verify``."""

    def hex_or_none(value: bytes | None) -> str | None:
        return None if value is None else value.hex()

    return {
        "module_id": doc.module_id,
        "digest": doc.digest,
        "timestamp": doc.timestamp.isoformat(timespec="milliseconds"),
        "debug": doc.debug,
        "pcrs": {str(index): value.hex() for index, value in doc.pcrs.items()},
        "public_key": hex_or_none(doc.public_key),
        "user_data": hex_or_none(doc.user_data),
        "nonce": hex_or_none(doc.nonce),
        "certificate": _describe_certificate(doc.certificate),
        "cabundle": [_describe_certificate(cert) for cert in doc.cabundle],
    }


@functools.lru_cache(maxsize=1)  # a failed load raises and is not cached
def aws_nitro_root() -> x509.Certificate:
    """The AWS Nitro Enclaves Root-G1 shipped with ZeroCopy, checked against its fingerprint."""
    package, name = _PINNED_ROOT_RESOURCE
    return _root_from_pinned_pem(importlib.resources.files(package).joinpath(name).read_bytes())


def _root_from_pinned_pem(pem: bytes) -> x509.Certificate:
    try:
        root = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise PinnedRootInvalid("the shipped AWS Nitro root is not a PEM certificate") from None
    fingerprint = root.fingerprint(hashes.SHA256()).hex().upper()
    if not hmac.compare_digest(fingerprint, AWS_NITRO_ROOT_G1_SHA256):
        raise PinnedRootInvalid(
            f"the shipped AWS Nitro root has SHA-256 {fingerprint}, "
            f"expected {AWS_NITRO_ROOT_G1_SHA256}; the installation is corrupt"
        )
    return root


# --- arguments (caller errors: TypeError / ValueError naming the argument) -------------------


def _check_document_argument(document: object) -> bytes:
    if not isinstance(document, (bytes, bytearray, memoryview)):
        raise TypeError(f"document must be bytes, not {type(document).__name__}")
    return bytes(document)


def _trusted_roots(
    roots: Iterable[bytes | x509.Certificate] | None,
) -> tuple[x509.Certificate, ...]:
    if roots is None:
        return (aws_nitro_root(),)
    if isinstance(roots, (bytes, bytearray, str, x509.Certificate)):
        raise TypeError("roots must be a list of PEM bytes or certificates, not a single one")
    loaded: list[x509.Certificate] = []
    for entry in roots:
        if isinstance(entry, x509.Certificate):
            loaded.append(entry)
        elif isinstance(entry, (bytes, bytearray)):
            try:
                loaded.extend(x509.load_pem_x509_certificates(bytes(entry)))
            except ValueError:
                raise ValueError("roots contains bytes that are not PEM certificates") from None
        else:
            raise TypeError(
                f"roots entries must be PEM bytes or x509.Certificate, not {type(entry).__name__}"
            )
    if not loaded:
        raise ValueError("roots must not be empty")
    return tuple(loaded)


def _check_now(now: _dt.datetime | None) -> _dt.datetime:
    if now is None:
        return _dt.datetime.now(_dt.timezone.utc)
    if not isinstance(now, _dt.datetime):
        raise TypeError(f"now must be a datetime, not {type(now).__name__}")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(_dt.timezone.utc)


def _check_expected_pcrs(expected: Mapping[int, bytes] | None) -> dict[int, bytes]:
    if expected is None:
        return {}
    if not isinstance(expected, Mapping):
        raise TypeError(f"expected_pcrs must be a mapping, not {type(expected).__name__}")
    checked: dict[int, bytes] = {}
    for index, value in expected.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < PCR_COUNT:
            raise ValueError(f"expected_pcrs keys must be PCR indexes 0..{PCR_COUNT - 1}")
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected_pcrs[{index}] must be bytes, not {type(value).__name__}")
        if len(value) != PCR_LENGTH:
            raise ValueError(f"expected_pcrs[{index}] must be {PCR_LENGTH} bytes (SHA-384)")
        checked[index] = bytes(value)
    return checked


def _check_nonce_argument(nonce: bytes | None) -> bytes | None:
    if nonce is None:
        return None
    if not isinstance(nonce, (bytes, bytearray, memoryview)):
        raise TypeError(f"nonce must be bytes, not {type(nonce).__name__}")
    return bytes(nonce)


# --- structure (MalformedDocument) ------------------------------------------------------------


def _decode_cose(raw: bytes) -> tuple[bytes, bytes, bytes]:
    if len(raw) > MAX_DOCUMENT:
        raise MalformedDocument(f"document is {len(raw)} bytes; at most {MAX_DOCUMENT}")
    outer = _loads(raw, "COSE_Sign1", top_level_tags=frozenset({18}))  # 18 = COSE_Sign1 tag
    if not isinstance(outer, list) or len(outer) != 4:
        raise MalformedDocument("COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = outer
    if not isinstance(protected, bytes):
        raise MalformedDocument("COSE protected header must be a byte string")
    if _loads(protected, "COSE protected header") != _ES384_PROTECTED:
        raise MalformedDocument("COSE protected header must be {1: -35} (ES384)")
    if unprotected != {}:
        raise MalformedDocument("COSE unprotected header must be an empty map")
    if not isinstance(payload, bytes):
        raise MalformedDocument("COSE payload must be a byte string")
    if not isinstance(signature, bytes) or len(signature) != 96:
        raise MalformedDocument("COSE signature must be 96 bytes (ES384 r||s)")
    return protected, payload, signature


def _decode_payload(payload: bytes) -> dict[str, Any]:
    fields = _loads(payload, "payload")
    if not isinstance(fields, dict):
        raise MalformedDocument("payload must be a map")
    for key in fields:
        if key not in _REQUIRED_FIELDS and key not in _OPTIONAL_FIELDS:
            raise MalformedDocument(f"payload has unknown field {_short_repr(key)}")
    for key in _REQUIRED_FIELDS:
        if key not in fields:
            raise MalformedDocument(f"payload is missing required field {key!r}")

    module_id = fields["module_id"]
    if not isinstance(module_id, str) or not module_id:
        raise MalformedDocument("module_id must be a non-empty text string")
    if fields["digest"] != "SHA384":
        raise MalformedDocument("digest must be 'SHA384'")
    timestamp = fields["timestamp"]
    if not _is_int(timestamp) or not 0 <= timestamp <= _MAX_TIMESTAMP_MS:
        raise MalformedDocument("timestamp must be milliseconds since the epoch")

    pcrs = fields["pcrs"]
    if not isinstance(pcrs, dict) or not 1 <= len(pcrs) <= PCR_COUNT:
        raise MalformedDocument(f"pcrs must be a map of 1..{PCR_COUNT} entries")
    for index, value in pcrs.items():
        if not _is_int(index) or not 0 <= index < PCR_COUNT:
            raise MalformedDocument(f"pcrs keys must be indexes 0..{PCR_COUNT - 1}")
        if not isinstance(value, bytes) or len(value) != PCR_LENGTH:
            raise MalformedDocument(f"PCR{index} must be {PCR_LENGTH} bytes")

    if not _is_der_blob(fields["certificate"]):
        raise MalformedDocument(f"certificate must be 1..{MAX_CERTIFICATE_DER} bytes of DER")
    cabundle = fields["cabundle"]
    if not isinstance(cabundle, list) or not 1 <= len(cabundle) <= MAX_CABUNDLE:
        raise MalformedDocument(f"cabundle must be an array of 1..{MAX_CABUNDLE} certificates")
    if not all(_is_der_blob(entry) for entry in cabundle):
        raise MalformedDocument(f"cabundle entries must be 1..{MAX_CERTIFICATE_DER} bytes of DER")

    for key in _OPTIONAL_FIELDS:
        value = fields.get(key)
        if value is not None and (not isinstance(value, bytes) or len(value) > MAX_OPTIONAL_FIELD):
            raise MalformedDocument(f"{key} must be null or at most {MAX_OPTIONAL_FIELD} bytes")
        fields[key] = value
    return fields


def _load_certificates(fields: dict[str, Any]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    leaf = _load_der(fields["certificate"], "certificate")
    cabundle = [_load_der(der, f"cabundle[{i}]") for i, der in enumerate(fields["cabundle"])]
    return leaf, cabundle


def _load_der(der: bytes, where: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
        # Touch the lazily parsed parts now, so bad DER fails here and not deep in a check.
        cert.subject  # noqa: B018
        cert.extensions  # noqa: B018
        cert.not_valid_before_utc  # noqa: B018
        cert.not_valid_after_utc  # noqa: B018
    except Exception:  # ValueError, but also x509.DuplicateExtension and friends (not ValueErrors)
        raise MalformedDocument(f"{where} is not a valid DER certificate") from None
    return cert


# --- authenticity -----------------------------------------------------------------------------


def _verify_signature(
    leaf: x509.Certificate, protected: bytes, payload: bytes, signature: bytes
) -> None:
    try:
        key = leaf.public_key()
    except Exception:  # unsupported or malformed key algorithms raise several types
        raise SignatureInvalid("leaf certificate key cannot be loaded") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise SignatureInvalid("leaf certificate key is not an EC P-384 key (ES384)")
    sig_structure = cbor.dumps(["Signature1", protected, b"", payload])
    der_signature = encode_dss_signature(
        int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    )
    try:
        key.verify(der_signature, sig_structure, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise SignatureInvalid("COSE signature does not verify under the leaf key") from None


def _check_validity(
    leaf: x509.Certificate, cabundle: list[x509.Certificate], at: _dt.datetime
) -> None:
    # Checked here, before chain building, so the error names the certificate and the window.
    named = [("leaf certificate", leaf)]
    named += [(f"cabundle[{i}]", cert) for i, cert in enumerate(cabundle)]
    for where, cert in named:
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if not start <= at <= end:
            state = "expired" if at > end else "not yet valid"
            raise CertificateExpired(
                f"{where} ({_common_name(cert)}) is {state} at {at.isoformat()}: "
                f"valid {start.isoformat()} to {end.isoformat()}"
            )


def _verify_chain(
    leaf: x509.Certificate,
    cabundle: list[x509.Certificate],
    trusted: tuple[x509.Certificate, ...],
    at: _dt.datetime,
) -> None:
    root = cabundle[0]
    root_der = root.public_bytes(Encoding.DER)
    if not any(hmac.compare_digest(root_der, t.public_bytes(Encoding.DER)) for t in trusted):
        trusting = ", ".join(_common_name(t) for t in trusted)
        raise CertificateChainInvalid(
            f"cabundle root ({_common_name(root)}) is not a trusted root (trusted: {trusting}); another root is "
            "trusted only when named: roots=[...] or --root, or ZEROCOPY_ATTESTATION_ROOT for Signer.from_env() and the CLI"
        )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([root]))
        .time(at)
        .max_chain_depth(MAX_CABUNDLE)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_LEAF_POLICY)
        .build_client_verifier()
    )
    try:
        chain = verifier.verify(leaf, cabundle[1:]).chain
    except verification.VerificationError as exc:
        raise CertificateChainInvalid(f"certificate chain does not verify: {_short(exc)}") from None
    except Exception:  # anything else the Rust verifier raises on odd certificates
        raise CertificateChainInvalid("certificate chain cannot be processed") from None
    # The path builder may find some path; AWS specifies this one, so accept no other.
    if chain != [leaf, *reversed(cabundle)]:
        raise CertificateChainInvalid("cabundle is not the chain from the leaf to the root")


def _leaf_basic_constraints(
    policy: verification.Policy, cert: x509.Certificate, ext: x509.BasicConstraints
) -> None:
    if ext.ca:
        raise ValueError("leaf certificate must not be a CA")


def _leaf_key_usage(
    policy: verification.Policy, cert: x509.Certificate, ext: x509.KeyUsage | None
) -> None:
    if ext is not None and not ext.digital_signature:
        raise ValueError("leaf key usage must allow digitalSignature")


# CAs follow the CA/B Forum (webpki) profile, which the AWS chain meets. The leaf does not: it has
# no Authority Key Identifier, SAN or EKU, so it gets its own policy — not a CA, may sign.
_CA_POLICY = verification.ExtensionPolicy.webpki_defaults_ca()
_LEAF_POLICY = (
    verification.ExtensionPolicy.permit_all()
    .require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, _leaf_basic_constraints
    )
    .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _leaf_key_usage)
)


# --- helpers ----------------------------------------------------------------------------------


def _loads(data: bytes, what: str, *, top_level_tags: frozenset[int] = frozenset()) -> Any:
    # AWS emits indefinite-length payload maps since about September 2025, definite ones before.
    try:
        return cbor.loads(data, top_level_tags=top_level_tags, any_encoding=True)
    except cbor.CborError as exc:
        raise MalformedDocument(f"{what}: {_short(exc)}") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_der_blob(value: object) -> bool:
    return isinstance(value, bytes) and 1 <= len(value) <= MAX_CERTIFICATE_DER


def _common_name(cert: x509.Certificate) -> str:
    try:
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        value = names[0].value if names else ""
    except (ValueError, IndexError):
        value = ""
    text = value if isinstance(value, str) and value else "no CN"
    return _short(text, 80)


def _describe_certificate(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_valid_before": cert.not_valid_before_utc.isoformat(),
        "not_valid_after": cert.not_valid_after_utc.isoformat(),
        "sha256": hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
    }


def _short(value: object, limit: int = 200) -> str:
    text = str(value).strip() or type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_repr(value: object) -> str:
    return _short(repr(value), 40)
