"""Test keys: sealed through the emulated KMS and provisioned into the enclave under test."""

from __future__ import annotations

import itertools
import os
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["TestKey", "make_secret", "KeyMaker"]


@dataclass(frozen=True)
class TestKey:
    """A key loaded into the enclave for a test. ``secret`` is what was sealed: the HMAC secret
    (bytes) or, for asymmetric schemes, the private key (PEM, or Coinbase's base64 Ed25519 form),
    and ``public_key`` its public half as PEM — so tests can check signatures on their own. The
    secret never shows in the repr."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    name: str
    scheme: str
    secret: bytes = field(repr=False)
    public_key: bytes | None = field(default=None, repr=False)
    api_key: str = ""
    passphrase: str | None = field(default=None, repr=False)
    policy_sha256: str = ""


def make_secret(scheme: str, *, passphrase: str | None = None, key_kind: str | None = None) -> bytes:
    """A random secret in the form the scheme's exchange hands out (as its signer says).
    ``key_kind`` picks the key type where the scheme takes several (``coinbase-jwt``: ``"p256"``,
    the default, or ``"ed25519"``, in the base64 form Coinbase's portal shows)."""
    signer = _signer(scheme)
    if key_kind is None:
        return signer.fresh_secret(passphrase=passphrase)
    kinds = getattr(signer, "key_kinds", ())
    if key_kind not in kinds:
        raise ValueError(f"key_kind {key_kind!r} is not one {scheme} offers ({', '.join(kinds) or 'it has one key type'})")
    return signer.fresh_secret(passphrase=passphrase, key_kind=key_kind)


def _signer(scheme: str) -> Any:
    """The scheme's signer class; for a name no module claims, the base (an HMAC-style secret), so
    sealing gets to refuse the name."""
    from enclave.protocol.exchanges import SCHEMES
    from enclave.protocol.signing import SigningKey

    return SCHEMES.get(scheme, SigningKey)


def _public_key_pem(signer: Any, secret: bytes, api_key: str) -> bytes:
    """Read by the scheme's own signer: it knows every form its secrets take (PEM or Coinbase's
    base64 Ed25519 keys)."""
    return signer(secret, api_key).public_key_pem()


class KeyMaker:
    """Seals and provisions test keys; one per session, bound to one enclave and one KMS key."""

    def __init__(self, *, kms: Any, kms_key_id: str, signer: Any, credentials: Callable[[], dict[str, str]], region: str) -> None:
        self.kms = kms
        self.kms_key_id = kms_key_id
        self.signer = signer
        # Read at each provisioning: the host's session credentials expire (and are refreshed)
        # during a long test session, as an instance's do.
        self.credentials = credentials
        self.region = region
        self._counter = itertools.count(1)
        self._session = os.urandom(3).hex()

    def __call__(
        self,
        scheme: str,
        *,
        secret: bytes | str | None = None,
        name: str | None = None,
        api_key: str | None = None,
        passphrase: str | None = None,
        policy: Any = None,
    ) -> TestKey:
        from zerocopy.errors import ProvisioningError
        from zerocopy.sealing import seal

        signer = _signer(scheme)
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is None:
            secret = signer.fresh_secret(passphrase=passphrase)
        elif passphrase is not None:
            secret = signer.with_passphrase(secret, passphrase)
        if passphrase is None:
            passphrase = signer.passphrase_of(secret)
        name = name or f"test-{scheme}-{self._session}-{next(self._counter)}"
        api_key = api_key if api_key is not None else "test-api-key-" + secrets.token_hex(8)
        policy_document = _policy_document(policy)
        bundle = seal(self.kms, key_id=self.kms_key_id, name=name, scheme=scheme, secret=secret, api_key=api_key, policy=policy_document)
        (result,) = self.signer.provision([bundle.to_json()], credentials=self.credentials(), region=self.region)
        if not result.loaded:
            raise ProvisioningError(result.error or "the enclave did not load the test key")
        asymmetric = signer.asymmetric
        return TestKey(
            name=name,
            scheme=scheme,
            secret=secret,
            public_key=_public_key_pem(signer, secret, api_key) if asymmetric else None,
            api_key=api_key,
            passphrase=passphrase,
            policy_sha256=bundle.policy_sha256,
        )


def _policy_document(policy: Any) -> dict | None:
    """TOML text or the equivalent dict, normalized as ``zerocopy seal --policy`` does."""
    from zerocopy.policy import load_policy

    if policy is not None and not isinstance(policy, (str, dict)):
        raise TypeError("policy must be TOML text or a dict (or None for the scheme's safe default)")
    return load_policy(policy)
