"""Sealed bundles: a secret encrypted for one enclave image, with its scheme, API key and policy.

A bundle is envelope-encrypted: KMS ``GenerateDataKey`` gives a 256-bit data key (and its
KMS ciphertext); the secret is sealed with AES-256-GCM under that key. The *encryption context*
and the AEAD associated data are both derived from the bundle's own fields — format version, name,
scheme, API key id and the SHA-256 of the canonical policy — by :func:`encryption_context`, on the
operator's side when sealing and again inside the enclave when unsealing. The enclave never takes a
context from the bundle or the host, so relabelling the scheme, editing the policy or renaming the
key changes the context and KMS refuses the data key.

The JSON file carries the context too, for people reading it; nothing reads it back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import ZeroCopyError

__all__ = [
    "FORMAT",
    "MAX_BUNDLE_SIZE",
    "BundleError",
    "SealedBundle",
    "canonical_json",
    "policy_digest",
    "encryption_context",
    "associated_data",
    "check_name",
]

FORMAT = "zerocopy-sealed-v1"
FORMAT_VERSION = "1"
MAX_BUNDLE_SIZE = 256 * 1024
MAX_POLICY_SIZE = 64 * 1024
DEFAULT_POLICY = "default"  # the policy digest recorded when a bundle carries no policy
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SCHEME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_API_KEY = re.compile(r"[\x21-\x7e]{0,256}")
_KMS_KEY = re.compile(r"[A-Za-z0-9:/_+=.,@-]{1,2048}")
_FIELDS = {
    "format": str,
    "name": str,
    "scheme": str,
    "api_key": str,
    "policy": (dict, type(None)),
    "kms_key_id": str,
    "encrypted_data_key": str,
    "nonce": str,
    "ciphertext": str,
    "encryption_context": dict,
}


class BundleError(ZeroCopyError, ValueError):
    """A sealed bundle that is malformed; the message names the field."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant white space, UTF-8; floats refused (decimals go as strings)."""
    _refuse_floats(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate, as JSON's "\ud800" escape decodes to
        raise BundleError("policy strings must be valid Unicode (no lone surrogates)") from None


def _refuse_floats(value: Any, depth: int = 0) -> None:
    if depth > 32:
        raise BundleError("policy is nested too deeply")
    if isinstance(value, float):
        raise BundleError("policy numbers with a fraction must be written as strings (\"0.5\"), not floats")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BundleError("policy keys must be strings")
            _refuse_floats(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _refuse_floats(item, depth + 1)
    elif not isinstance(value, (str, int, bool, type(None))):
        raise BundleError(f"policy values of type {type(value).__name__} are not allowed")


def policy_digest(policy: dict | None) -> str:
    """SHA-256 (hex) of the canonical policy, or ``"default"`` for a bundle without one."""
    if policy is None:
        return DEFAULT_POLICY
    return hashlib.sha256(canonical_json(policy)).hexdigest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BundleError("key name must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def encryption_context(name: str, scheme: str, api_key: str, policy: dict | None) -> dict[str, str]:
    """The KMS encryption context for a bundle, derived from its fields only."""
    return {
        "zerocopy:format": FORMAT_VERSION,
        "zerocopy:name": name,
        "zerocopy:scheme": scheme,
        "zerocopy:api-key": api_key,
        "zerocopy:policy-sha256": policy_digest(policy),
    }


def associated_data(context: dict[str, str]) -> bytes:
    """AES-GCM associated data: the canonical JSON of the encryption context."""
    return canonical_json(context)


def _b64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise BundleError(f"bundle field {field!r} is not valid base64") from None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise BundleError(f"duplicate JSON key {key[:64]!r} in bundle")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise BundleError(f"bundle contains the non-JSON number {name}")


@dataclass(frozen=True)
class SealedBundle:
    name: str
    scheme: str
    api_key: str
    policy: dict | None
    kms_key_id: str
    encrypted_data_key: bytes
    nonce: bytes
    ciphertext: bytes

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.scheme, str) or not _SCHEME.fullmatch(self.scheme):
            raise BundleError("scheme must be a lower-case scheme name such as 'binance-hmac'")
        if not isinstance(self.api_key, str) or not _API_KEY.fullmatch(self.api_key):
            raise BundleError("api_key must be at most 256 printable ASCII characters")
        if self.policy is not None:
            if not isinstance(self.policy, dict):
                raise BundleError("policy must be a JSON object or null")
            if len(canonical_json(self.policy)) > MAX_POLICY_SIZE:
                raise BundleError(f"policy is larger than {MAX_POLICY_SIZE} bytes")
        if not isinstance(self.kms_key_id, str) or not _KMS_KEY.fullmatch(self.kms_key_id):
            raise BundleError("kms_key_id must be a KMS key id, ARN or alias")
        if not 1 <= len(self.encrypted_data_key) <= 4096:
            raise BundleError("encrypted_data_key must be 1-4096 bytes")
        if len(self.nonce) != 12:
            raise BundleError("nonce must be 12 bytes (AES-GCM)")
        if not 16 < len(self.ciphertext) <= 64 * 1024:
            raise BundleError("ciphertext must hold a secret of 1 byte to 64 KiB plus its 16-byte tag")

    @property
    def policy_sha256(self) -> str:
        return policy_digest(self.policy)

    def encryption_context(self) -> dict[str, str]:
        return encryption_context(self.name, self.scheme, self.api_key, self.policy)

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT,
            "name": self.name,
            "scheme": self.scheme,
            "api_key": self.api_key,
            "policy": self.policy,
            "kms_key_id": self.kms_key_id,
            "encrypted_data_key": base64.b64encode(self.encrypted_data_key).decode(),
            "nonce": base64.b64encode(self.nonce).decode(),
            "ciphertext": base64.b64encode(self.ciphertext).decode(),
            "encryption_context": self.encryption_context(),
        }
        return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes | str) -> "SealedBundle":
        """Parse a bundle strictly: unknown, missing, duplicate or mistyped fields are errors."""
        if isinstance(data, str):
            try:
                data = data.encode()
            except UnicodeEncodeError:
                raise BundleError("bundle text is not valid Unicode (lone surrogate)") from None
        if not isinstance(data, (bytes, bytearray)):
            raise BundleError("bundle must be bytes")
        if len(data) > MAX_BUNDLE_SIZE:
            raise BundleError(f"bundle is larger than {MAX_BUNDLE_SIZE} bytes")
        try:
            document = json.loads(
                bytes(data).decode("utf-8"),
                object_pairs_hook=_reject_duplicates,
                parse_constant=_reject_constant,
            )
        except BundleError:
            raise
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise BundleError(f"bundle is not valid JSON: {type(exc).__name__}") from None
        if not isinstance(document, dict):
            raise BundleError("bundle must be a JSON object")
        unknown = sorted(set(document) - set(_FIELDS))
        if unknown:
            raise BundleError(f"unknown bundle field {unknown[0][:64]!r}")
        missing = [field for field in _FIELDS if field not in document]
        if missing:
            raise BundleError(f"bundle field {missing[0]!r} is missing")
        for field, kind in _FIELDS.items():
            if not isinstance(document[field], kind) or isinstance(document[field], bool):
                raise BundleError(f"bundle field {field!r} has the wrong type")
        if document["format"] != FORMAT:
            raise BundleError(f"bundle format {document['format'][:40]!r} is not {FORMAT!r}")
        try:
            return cls(
                name=document["name"],
                scheme=document["scheme"],
                api_key=document["api_key"],
                policy=document["policy"],
                kms_key_id=document["kms_key_id"],
                encrypted_data_key=_b64(document["encrypted_data_key"], "encrypted_data_key"),
                nonce=_b64(document["nonce"], "nonce"),
                ciphertext=_b64(document["ciphertext"], "ciphertext"),
            )
        except RecursionError:
            raise BundleError("policy is nested too deeply") from None
