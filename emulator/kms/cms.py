"""Build ``CiphertextForRecipient`` the way real KMS encodes it.

The emulated KMS answers ``Decrypt`` (and friends) with ``Recipient`` by sealing the plaintext to
the RSA key from the attestation document: a CMS ContentInfo/EnvelopedData v2 in BER, with the
byte layout of the real KMS samples in ``tests/data/kms/``: ContentInfo, its ``[0]``,
EnvelopedData and EncryptedContentInfo in indefinite length (``0x80`` ... ``00 00``); the
RecipientInfos SET (one KeyTransRecipientInfo v2, RSAES-OAEP SHA-256/MGF1-SHA-256 without the
default pSourceAlgorithm) and the AES-256-CBC AlgorithmIdentifier in DER; the encrypted content as
a primitive ``[0]`` or as a constructed ``[0]`` of OCTET STRING chunks. So the enclave's parser
meets the real BER in every emulator run, not a DER shortcut.

The subjectKeyIdentifier is SHA-256 of the recipient's DER SubjectPublicKeyInfo
(:func:`recipient_key_identifier`): the emulator's convention, since real KMS's is
not documented. See
https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html#KMS-Decrypt-response-CiphertextForRecipient
"""

from __future__ import annotations

import hashlib
import os

from asn1crypto import algos, cms, core
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from enclave.cms import CONTENT_KEY_SIZE, IV_SIZE

__all__ = ["build_ciphertext_for_recipient", "recipient_key_identifier", "MIN_RSA_KEY_SIZE"]

MIN_RSA_KEY_SIZE = 2048

_INDEFINITE_SEQUENCE = b"\x30\x80"
_INDEFINITE_EXPLICIT_0 = b"\xa0\x80"  # [0] EXPLICIT of ContentInfo, and constructed [0] content
_END_OF_CONTENTS = b"\x00\x00"

_OAEP = asym_padding.OAEP(mgf=asym_padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_OAEP_SHA256 = {
    "algorithm": "rsaes_oaep",
    "parameters": {
        # NULL hash parameters and no pSourceAlgorithm (the default), as in the real samples.
        "hash_algorithm": {"algorithm": "sha256", "parameters": core.Null()},
        "mask_gen_algorithm": {
            "algorithm": "mgf1",
            "parameters": {"algorithm": "sha256", "parameters": core.Null()},
        },
    },
}


def recipient_key_identifier(public_key: rsa.RSAPublicKey) -> bytes:
    """SHA-256 of ``public_key``'s DER SubjectPublicKeyInfo: the emulator's subjectKeyIdentifier."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def _load_recipient_key(der: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_der_public_key(der)
    except Exception as exc:
        raise ValueError("recipient_public_key_der is not a DER SubjectPublicKeyInfo") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"recipient key must be RSA, not {type(key).__name__}")
    if key.key_size < MIN_RSA_KEY_SIZE:
        raise ValueError(
            f"recipient RSA key is {key.key_size} bits, need at least {MIN_RSA_KEY_SIZE}"
        )
    return key


def _encrypted_content(ciphertext: bytes, chunk_size: int | None) -> bytes:
    if chunk_size is None:
        return core.OctetString(ciphertext, implicit=0).dump()  # 80 <len> ...
    chunks = b"".join(
        core.OctetString(ciphertext[i : i + chunk_size]).dump()
        for i in range(0, len(ciphertext), chunk_size)
    )
    return _INDEFINITE_EXPLICIT_0 + chunks + _END_OF_CONTENTS


def build_ciphertext_for_recipient(
    plaintext: bytes, recipient_public_key_der: bytes, *, chunk_size: int | None = None
) -> bytes:
    """Seal ``plaintext`` to an RSA public key as KMS's ``CiphertextForRecipient`` (BER bytes).

    ``recipient_public_key_der`` is the DER SubjectPublicKeyInfo from the attestation document's
    ``public_key``; it must be RSA of at least 2048 bits (``ValueError`` otherwise).
    ``plaintext`` must be 1 byte or more, as KMS plaintexts are. ``chunk_size=None`` carries the
    content as a primitive ``[0]``; an integer splits it into OCTET STRING chunks of that size.
    """
    _check_arguments(plaintext, recipient_public_key_der, chunk_size)
    key = _load_recipient_key(bytes(recipient_public_key_der))
    content_key, iv = os.urandom(CONTENT_KEY_SIZE), os.urandom(IV_SIZE)
    encrypted_key = key.encrypt(content_key, _OAEP)
    return _content_info(
        recipient_infos=_recipient_infos(recipient_key_identifier(key), encrypted_key),
        iv=iv,
        encrypted_content=_encrypted_content(_aes_cbc(content_key, iv, bytes(plaintext)), chunk_size),
    )


def _check_arguments(plaintext: object, recipient_public_key_der: object, chunk_size: object) -> None:
    if not isinstance(plaintext, (bytes, bytearray, memoryview)):
        raise TypeError(f"plaintext must be bytes, not {type(plaintext).__name__}")
    if not isinstance(recipient_public_key_der, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"recipient_public_key_der must be bytes, not {type(recipient_public_key_der).__name__}"
        )
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)):
        raise TypeError(f"chunk_size must be an int or None, not {type(chunk_size).__name__}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if not bytes(plaintext):
        raise ValueError("plaintext must not be empty (KMS plaintexts are 1 byte or more)")


def _aes_cbc(content_key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def _recipient_infos(key_identifier: bytes, encrypted_key: bytes) -> bytes:
    """The RecipientInfos SET in DER: one KeyTransRecipientInfo v2, as in the real samples."""
    recipient = cms.KeyTransRecipientInfo(
        {
            "version": "v2",
            "rid": cms.RecipientIdentifier(name="subject_key_identifier", value=key_identifier),
            "key_encryption_algorithm": _OAEP_SHA256,
            "encrypted_key": encrypted_key,
        }
    )
    return cms.RecipientInfos([cms.RecipientInfo(name="ktri", value=recipient)]).dump()


def _indefinite(*parts: bytes) -> bytes:
    return _INDEFINITE_SEQUENCE + b"".join(parts) + _END_OF_CONTENTS


def _content_info(*, recipient_infos: bytes, iv: bytes, encrypted_content: bytes) -> bytes:
    """ContentInfo, its ``[0]``, EnvelopedData and EncryptedContentInfo in indefinite length."""
    content_algorithm = algos.EncryptionAlgorithm({"algorithm": "aes256_cbc", "parameters": iv})
    encrypted_content_info = _indefinite(cms.ContentType("data").dump(), content_algorithm.dump(), encrypted_content)
    enveloped_data = _indefinite(cms.CMSVersion("v2").dump(), recipient_infos, encrypted_content_info)
    explicit_content = _INDEFINITE_EXPLICIT_0 + enveloped_data + _END_OF_CONTENTS
    return _indefinite(cms.ContentType("enveloped_data").dump(), explicit_content)
