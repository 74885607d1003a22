"""KMS from inside the enclave: ``Decrypt`` with an attested ``Recipient``.

For each provisioning the enclave makes an ephemeral RSA-2048 key, asks the NSM for an attestation
document carrying its public half, and calls KMS ``Decrypt`` with
``Recipient={AttestationDocument, KeyEncryptionAlgorithm: RSAES_OAEP_SHA_256}``. KMS checks the
document against the key policy and returns the plaintext only as ``CiphertextForRecipient``,
encrypted to that ephemeral key (see :mod:`enclave.cms`); the host relays only TLS records.

The KMS endpoint, CA bundle and proxy are launch options (:class:`KmsSettings`), part of the
measured image; botocore gets them explicitly so environment or config-file overrides cannot
redirect it. So are the *seal keys*: the only KMS keys the enclave seals to (keys it generates
itself), so the host can never name a key of its own and then decrypt what was sealed to it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .cms import RecipientCiphertextError, decrypt_ciphertext_for_recipient, parse_ciphertext_for_recipient
from .forwarder import ConnectForwarder
from .nsm import Nsm
from .protocol.address import Address

__all__ = [
    "KmsSettings",
    "KmsError",
    "SealKeyError",
    "check_seal_key",
    "Credentials",
    "AttestedKms",
    "RecipientCiphertextError",
    "parse_ciphertext_for_recipient",
    "decrypt_ciphertext_for_recipient",
]

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
# A key ARN, never an alias: an alias can be pointed at another key without changing the image.
# Multi-Region keys (``mrk-`` and 32 hex digits on AWS; dashed like a UUID on moto) are matched to be refused.
_KEY_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:kms:(?P<region>[a-z0-9-]+):\d{12}:key/(?:(?P<multi_region>mrk-[0-9a-f-]{32,36})|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


class SealKeyError(ValueError):
    """A ``--seal-key`` the enclave must not seal to; the enclave refuses to start with it."""


class KmsError(Exception):
    """KMS refused or could not be reached. ``code`` is the AWS error code when there is one."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class KmsSettings:
    region: str
    proxy: Address
    ca_bundle: str | None = None  # None: botocore's own bundle of public CAs
    seal_keys: tuple[str, ...] = ()  # key ARNs GENERATE may seal to; the first is the default

    def __post_init__(self) -> None:
        if not _REGION.fullmatch(self.region):
            raise ValueError(f"{self.region!r} is not an AWS region name")
        for arn in self.seal_keys:
            check_seal_key(arn, self.region)
        if len(set(self.seal_keys)) != len(self.seal_keys):
            raise SealKeyError("a seal key is named twice")

    @property
    def host(self) -> str:
        return f"kms.{self.region}.amazonaws.com"


def check_seal_key(arn: str, region: str) -> str:
    """``arn`` if it is the ARN of a single-Region KMS key in ``region``; aliases, bare key ids and
    multi-Region keys are refused (:class:`SealKeyError`)."""
    match = _KEY_ARN.fullmatch(arn) if isinstance(arn, str) else None
    if match is None:
        raise SealKeyError(f"seal key {str(arn)[:120]!r} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>; aliases can be repointed, so they are refused)")
    if match["multi_region"]:
        # A replica in another Region shares the key material but has a key policy of its own,
        # which nothing pins to this image: whoever that policy allows decrypts what is sealed here.
        raise SealKeyError(f"seal key {arn!r} is a multi-Region key (mrk-): a replica decrypts what it seals under a key policy of its own; use a single-Region key")
    if match["region"] != region:
        raise SealKeyError(f"seal key {arn!r} is in {match['region']}, but this enclave reaches KMS in {region}")
    return arn


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key=<hidden>)"

    @classmethod
    def from_fields(cls, fields: Any) -> "Credentials":
        if not isinstance(fields, dict):
            raise ValueError("credentials must be a map")
        unknown = set(fields) - {"access_key_id", "secret_access_key", "session_token"}
        if unknown:
            raise ValueError(f"unknown credentials field {sorted(unknown)[0]!r}")
        access, secret, token = fields.get("access_key_id"), fields.get("secret_access_key"), fields.get("session_token")
        if not isinstance(access, str) or not access or not isinstance(secret, str) or not secret:
            raise ValueError("credentials need access_key_id and secret_access_key")
        if token is not None and not isinstance(token, str):
            raise ValueError("session_token must be a string")
        return cls(access, secret, token)


class AttestedKms:
    """Decrypts KMS ciphertexts for this enclave only, through the forwarder and the host proxy."""

    def __init__(self, settings: KmsSettings, nsm: Nsm, *, timeout: float = 20.0) -> None:
        self.settings = settings
        self.nsm = nsm
        self.timeout = timeout
        self._forwarder: ConnectForwarder | None = None
        self._boto_session: Any = None
        self._lock = threading.Lock()

    def _proxy_url(self) -> str:
        with self._lock:
            if self._forwarder is None:
                self._forwarder = ConnectForwarder(self.settings.host, 443, self.settings.proxy).start()
            return self._forwarder.url

    def client(self, credentials: Credentials, **options: Any) -> Any:
        """A boto3 KMS client with ``credentials``. The clients share one boto3 session, which
        parses botocore's KMS model once (about 50 ms) instead of once per provisioning; each
        client has its own credentials and connections."""
        import boto3  # deferred: only provisioning needs it, and it is slow to import

        with self._lock:  # a boto3 session is not thread-safe; its clients are
            if self._boto_session is None:
                self._boto_session = boto3.session.Session(region_name=self.settings.region)
            return self._boto_session.client(
                "kms", aws_access_key_id=credentials.access_key_id, aws_secret_access_key=credentials.secret_access_key,
                aws_session_token=credentials.session_token, region_name=self.settings.region, **options,
            )  # fmt: skip

    def close(self) -> None:
        if self._forwarder is not None:
            self._forwarder.stop()

    def session(self, credentials: Credentials) -> "RecipientSession":
        return RecipientSession(self, credentials)


class RecipientSession:
    """One ephemeral recipient key and attestation document, used for a batch of Decrypt calls.

    Its calls share one keep-alive connection to KMS. Close the session when the batch is done
    (or use it as a context manager): the parent's vsock-proxy serves only a few connections at
    once (4 by default) and an idle connection left open would hold one of them until KMS drops it.
    """

    def __init__(self, kms: AttestedKms, credentials: Credentials) -> None:
        from botocore.config import Config  # deferred, as boto3 (AttestedKms.client)

        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_der = self._private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._document = kms.nsm.attestation(public_key=public_der)
        settings = kms.settings
        self._client = kms.client(
            credentials,
            endpoint_url=f"https://{settings.host}",
            verify=settings.ca_bundle if settings.ca_bundle else True,
            config=Config(
                proxies={"https": kms._proxy_url()},
                ignore_configured_endpoint_urls=True,
                connect_timeout=kms.timeout,
                read_timeout=kms.timeout,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def close(self) -> None:
        """Close the connection to KMS now, instead of whenever the client is garbage-collected."""
        self._client.close()

    def __enter__(self) -> "RecipientSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, operation: str, **params: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        params["Recipient"] = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": self._document}
        try:
            response = getattr(self._client, operation)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            name = "".join(part.title() for part in operation.split("_"))
            raise KmsError(f"KMS refused {name}: {code}: {str(error.get('Message', ''))[:300]}", code=code) from None
        except BotoCoreError as exc:
            raise KmsError(f"KMS could not be reached: {type(exc).__name__}: {str(exc)[:300]}") from None
        if response.get("Plaintext"):
            raise KmsError("KMS returned a plaintext in the clear to an attested request; refusing it")
        if not isinstance(response.get("CiphertextForRecipient"), bytes):
            raise KmsError("KMS answered without CiphertextForRecipient")
        return response

    def decrypt(self, *, key_id: str, ciphertext_blob: bytes, encryption_context: dict[str, str]) -> bytes:
        return self.decrypt_with_key_arn(key_id=key_id, ciphertext_blob=ciphertext_blob, encryption_context=encryption_context)[0]

    def decrypt_with_key_arn(self, *, key_id: str, ciphertext_blob: bytes, encryption_context: dict[str, str]) -> tuple[bytes, str]:
        """(plaintext, ARN of the KMS key that decrypted it): KMS's word, not the bundle's, on what sealed it."""
        response = self._call("decrypt", CiphertextBlob=ciphertext_blob, KeyId=key_id, EncryptionContext=encryption_context)
        plaintext = decrypt_ciphertext_for_recipient(response["CiphertextForRecipient"], self._private_key)
        return plaintext, _key_arn(response)

    def generate_data_key(self, *, key_id: str, encryption_context: dict[str, str]) -> tuple[bytes, bytes, str]:
        """A fresh 256-bit data key for sealing from inside: (plaintext, KMS ciphertext, key ARN)."""
        response = self._call("generate_data_key", KeyId=key_id, KeySpec="AES_256", EncryptionContext=encryption_context)
        plaintext = decrypt_ciphertext_for_recipient(response["CiphertextForRecipient"], self._private_key)
        if not isinstance(response.get("CiphertextBlob"), bytes):
            raise KmsError("KMS answered GenerateDataKey without CiphertextBlob")
        return plaintext, response["CiphertextBlob"], _key_arn(response)


def _key_arn(response: dict) -> str:
    arn = response.get("KeyId")
    if not isinstance(arn, str) or not arn.startswith("arn:") or len(arn) > 2048:
        raise KmsError("KMS answered without the ARN of the key it used")
    return arn
