"""KMS ``CiphertextForRecipient``: strict parsing and decryption inside the enclave.

KMS ``Decrypt`` (and ``GenerateDataKey``, ``GenerateRandom``) with ``Recipient`` returns the
plaintext only inside a CMS ContentInfo/EnvelopedData v2, encoded in BER with indefinite lengths:
one KeyTransRecipientInfo v2 (32-byte subjectKeyIdentifier, RSAES-OAEP SHA-256/MGF1-SHA-256) and
AES-256-CBC content with a 16-byte IV, carried as a primitive ``[0]`` or as a constructed ``[0]``
of OCTET STRING chunks. ``cryptography``'s PKCS#7 loader rejects that BER, so it is parsed here
with asn1crypto, field by field, against exactly that shape.

Parsing failures say which part is wrong (the structure is not secret). Decryption failures are
one opaque error, like Fernet's ``InvalidToken``: CBC carries no MAC, so telling a bad RSA block
from bad padding would hand out an oracle.

The subjectKeyIdentifier is not checked: how real KMS derives it is not documented (the emulator
uses SHA-256 of the recipient's DER SubjectPublicKeyInfo).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asn1crypto import cms, core, parser
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "RecipientCiphertextError",
    "parse_ciphertext_for_recipient",
    "decrypt_ciphertext_for_recipient",
    "KEY_IDENTIFIER_SIZE",
    "CONTENT_KEY_SIZE",
    "IV_SIZE",
]

KEY_IDENTIFIER_SIZE = 32
CONTENT_KEY_SIZE = 32  # AES-256
IV_SIZE = 16
_BLOCK = 16

_DECRYPT_FAILED = "could not decrypt CiphertextForRecipient"


class RecipientCiphertextError(ValueError):
    """A ``CiphertextForRecipient`` that is malformed or does not decrypt."""


@contextmanager
def _part(name: str) -> Iterator[None]:
    # asn1crypto parses lazily: any field access may raise ValueError, TypeError, KeyError,
    # OverflowError, RecursionError... Name the part, keep nothing else untyped.
    try:
        yield
    except RecipientCiphertextError:
        raise
    except Exception as exc:
        raise RecipientCiphertextError(
            f"CiphertextForRecipient: malformed {name} ({type(exc).__name__})"
        ) from exc


def _fail(message: str) -> RecipientCiphertextError:
    return RecipientCiphertextError(f"CiphertextForRecipient: {message}")


def _absent(value: object) -> bool:
    return isinstance(value, core.Void)


def _check_sha256(algorithm: Any, what: str) -> None:
    """A DigestAlgorithm that is SHA-256 with absent or NULL parameters."""
    name = algorithm["algorithm"].native
    if name != "sha256":
        raise _fail(f"{what} hash is {name}, expected sha256")
    params = algorithm["parameters"]
    if not (_absent(params) or params.native is None):
        raise _fail(f"{what} hash parameters must be absent or NULL")


def _check_outer(blob: bytes) -> None:
    # One complete BER element and nothing after it; asn1crypto's strict=True would say the
    # same, but this way truncation and trailing bytes get their own messages.
    try:
        _cls, _method, _tag, header, contents, trailer = parser.parse(blob)
    except Exception as exc:
        raise _fail(f"truncated or malformed outer encoding ({type(exc).__name__})") from exc
    used = len(header) + len(contents) + len(trailer)
    if used != len(blob):
        raise _fail(f"{len(blob) - used} trailing bytes after the ContentInfo")


def parse_ciphertext_for_recipient(blob: bytes) -> tuple[bytes, bytes, bytes]:
    """Parse a KMS ``CiphertextForRecipient`` into ``(encrypted_key, iv, ciphertext)``.

    Accepts BER (as KMS sends it, indefinite lengths, primitive or chunked content) and DER.
    Anything outside the shape KMS produces raises :class:`RecipientCiphertextError` naming the
    offending part. ``ciphertext`` is the concatenated encrypted content.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"blob must be bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    if not blob:
        raise _fail("empty input")
    _check_outer(blob)
    info, enveloped = _enveloped_data(blob)
    ktri = _key_transport_recipient(enveloped)
    encrypted_key = _encrypted_key(ktri)
    _check_key_encryption(ktri)
    iv, ciphertext = _encrypted_content(enveloped)
    with _part("ContentInfo"):
        # Walk whatever is left so nothing malformed hides in a part not read above.
        info.native  # noqa: B018
    return encrypted_key, iv, ciphertext


def _enveloped_data(blob: bytes) -> tuple[Any, Any]:
    """The ContentInfo and its EnvelopedData v2, without originator or unprotected attributes."""
    with _part("ContentInfo"):
        info = cms.ContentInfo.load(blob, strict=True)
        content_type = info["content_type"].native
        if content_type != "enveloped_data":
            raise _fail(f"content type is {content_type}, expected enveloped_data")
        enveloped = info["content"]
    with _part("EnvelopedData"):
        version = enveloped["version"].native
        if version != "v2":
            raise _fail(f"EnvelopedData version is {version}, expected v2")
        if not _absent(enveloped["originator_info"]):
            raise _fail("originatorInfo must be absent")
        if not _absent(enveloped["unprotected_attrs"]):
            raise _fail("unprotectedAttrs must be absent")
    return info, enveloped


def _key_transport_recipient(enveloped: Any) -> Any:
    """The one recipient: a KeyTransRecipientInfo v2 named by a subjectKeyIdentifier of KMS's size."""
    with _part("EnvelopedData"):
        recipients = enveloped["recipient_infos"]
        if len(recipients) != 1:
            raise _fail(f"{len(recipients)} recipients, expected exactly one")
        recipient = recipients[0]
        if recipient.name != "ktri":
            raise _fail(f"recipient is {recipient.name}, expected ktri (KeyTransRecipientInfo)")
    with _part("KeyTransRecipientInfo"):
        ktri = recipient.chosen
        version = ktri["version"].native
        if version != "v2":
            raise _fail(f"KeyTransRecipientInfo version is {version}, expected v2")
        rid = ktri["rid"]
        if rid.name != "subject_key_identifier":
            raise _fail(f"recipient identifier is {rid.name}, expected subject_key_identifier")
        key_id = rid.chosen.native
        if len(key_id) != KEY_IDENTIFIER_SIZE:
            raise _fail(f"subjectKeyIdentifier is {len(key_id)} bytes, expected {KEY_IDENTIFIER_SIZE}")
    return ktri


def _encrypted_key(ktri: Any) -> bytes:
    with _part("KeyTransRecipientInfo"):
        encrypted_key = ktri["encrypted_key"].native
        if not isinstance(encrypted_key, bytes) or not encrypted_key:
            raise _fail("encrypted key is empty")
    return encrypted_key


def _check_key_encryption(ktri: Any) -> None:
    """RSAES-OAEP with SHA-256, MGF1-SHA-256 and an empty label: nothing else KMS uses."""
    with _part("key encryption algorithm"):
        kea = ktri["key_encryption_algorithm"]
        name = kea["algorithm"].native
        if name != "rsaes_oaep":
            raise _fail(f"key encryption algorithm is {name}, expected rsaes_oaep")
        oaep = kea["parameters"]
        if _absent(oaep):
            # RFC 4055: absent parameters mean the SHA-1 defaults.
            raise _fail("key encryption OAEP parameters absent (SHA-1 defaults), expected sha256")
        _check_sha256(oaep["hash_algorithm"], "key encryption OAEP")
        mgf = oaep["mask_gen_algorithm"]
        mgf_name = mgf["algorithm"].native
        if mgf_name != "mgf1":
            raise _fail(f"key encryption mask generation is {mgf_name}, expected mgf1")
        _check_sha256(mgf["parameters"], "key encryption MGF1")
        label = oaep["p_source_algorithm"]
        if label["algorithm"].native != "p_specified" or label["parameters"].native != b"":
            raise _fail("key encryption OAEP label must be empty")


def _encrypted_content(enveloped: Any) -> tuple[bytes, bytes]:
    """``(iv, ciphertext)`` of AES-256-CBC data content, its chunks merged."""
    with _part("EncryptedContentInfo"):
        eci = enveloped["encrypted_content_info"]
        content_type = eci["content_type"].native
        if content_type != "data":
            raise _fail(f"encrypted content type is {content_type}, expected data")
        iv = _content_iv(eci["content_encryption_algorithm"])
        content = eci["encrypted_content"]
        if _absent(content):
            raise _fail("encrypted content absent")
        ciphertext = content.native  # merges constructed chunks
        if not isinstance(ciphertext, bytes) or not ciphertext:
            raise _fail("encrypted content is empty")
        if len(ciphertext) % _BLOCK:
            raise _fail(f"encrypted content is {len(ciphertext)} bytes, not a multiple of {_BLOCK}")
    return iv, ciphertext


def _content_iv(algorithm: Any) -> bytes:
    name = algorithm["algorithm"].native
    if name != "aes256_cbc":
        raise _fail(f"content encryption algorithm is {name}, expected aes256_cbc")
    iv = algorithm["parameters"].native
    if not isinstance(iv, bytes):
        raise _fail("content encryption IV is not an OCTET STRING")
    if len(iv) != IV_SIZE:
        raise _fail(f"content encryption IV is {len(iv)} bytes, expected {IV_SIZE}")
    return iv


def decrypt_ciphertext_for_recipient(blob: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    """Parse ``blob`` and return the plaintext KMS sealed to ``private_key``.

    Structure errors raise :class:`RecipientCiphertextError` naming the part; every failure of the
    cryptography (RSA-OAEP, content-key size, AES-CBC, PKCS#7 padding) raises the same opaque
    ``RecipientCiphertextError("could not decrypt CiphertextForRecipient")``.
    """
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise TypeError(f"private_key must be an RSA private key, not {type(private_key).__name__}")
    encrypted_key, iv, ciphertext = parse_ciphertext_for_recipient(blob)
    try:
        content_key = private_key.decrypt(
            encrypted_key,
            asym_padding.OAEP(
                mgf=asym_padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
            ),
        )
        if len(content_key) != CONTENT_KEY_SIZE:
            raise ValueError("content key size")
        decryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except Exception:
        # Deliberately no cause and no detail: one error for every failure (no padding oracle).
        raise RecipientCiphertextError(_DECRYPT_FAILED) from None
