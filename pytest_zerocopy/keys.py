"""Test keys: sealed through the emulated KMS and provisioned into the enclave under test.

A test key's secret is in the test's hands (to check signatures on its own) but never in its
reports: :class:`TestKey` is no dataclass (hypothesis prints a dataclass's fields, whatever their
``repr=False``), its ``secret`` is :class:`SecretBytes` and its ``passphrase`` :class:`SecretText`,
which show only their length in ``repr``, pytest's assertion explanations (see the plugin's
``pytest_assertrepr_compare``), hypothesis's pretty printer and ``--showlocals``, and refuse to be
pickled.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any, Callable, NoReturn

__all__ = ["TestKey", "SecretBytes", "SecretText", "make_secret", "KeyMaker", "TEST_RATE"]

#: The rate test keys get when a test gives no policy: enough for any hypothesis run (the
#: enclave's default, 10 orders a second, is a production guard).
TEST_RATE = {"per_second": "10000", "burst": 100000}


def _refuse_pickle(what: str) -> NoReturn:
    raise TypeError(f"{what} is not picklable: a pickle would copy the test key's secret wherever it goes")


class SecretBytes(bytes):
    """A secret as ``bytes`` (``hmac.new(key.secret, ...)`` works as ever) that shows only its length."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<secret: {len(self)} bytes>"

    __str__ = __repr__  # bytes' own str() would print the content

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's and IPython's pretty printers
        printer.text(repr(self))

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        _refuse_pickle("a test key's secret")

    def __copy__(self) -> "SecretBytes":
        return self

    def __deepcopy__(self, memo: Any) -> "SecretBytes":
        return self


class SecretText(str):
    """A passphrase as ``str`` whose ``repr`` shows only its length (``str()`` and f-strings give the
    text: it goes into request headers)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<secret: {len(self)} characters>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        _refuse_pickle("a test key's passphrase")

    def __copy__(self) -> "SecretText":
        return self

    def __deepcopy__(self, memo: Any) -> "SecretText":
        return self


_SHOWN = ("name", "scheme", "api_key", "policy_sha256")


class TestKey:
    """A key loaded into the enclave for a test. ``secret`` is what was sealed: the HMAC secret
    (bytes) or, for asymmetric schemes, the private key (PEM, or Coinbase's base64 Ed25519 form),
    and ``public_key`` its public half as PEM — so tests can check signatures on their own.
    Immutable; the secret and passphrase never show in a repr, a report or a pickle."""

    __test__ = False  # not a test class, whatever pytest thinks of the name
    __slots__ = ("name", "scheme", "_secret", "public_key", "api_key", "_passphrase", "policy_sha256")

    def __init__(
        self,
        name: str,
        scheme: str,
        secret: bytes,
        public_key: bytes | None = None,
        api_key: str = "",
        passphrase: str | None = None,
        policy_sha256: str = "",
    ) -> None:
        values = {
            "name": name, "scheme": scheme, "_secret": SecretBytes(secret), "public_key": public_key, "api_key": api_key,
            "_passphrase": None if passphrase is None else SecretText(passphrase), "policy_sha256": policy_sha256,
        }  # fmt: skip
        for slot, value in values.items():
            object.__setattr__(self, slot, value)

    @property
    def secret(self) -> SecretBytes:
        return self._secret

    @property
    def passphrase(self) -> SecretText | None:
        return self._passphrase

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: a TestKey is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise FrozenInstanceError(f"cannot delete field {name!r}: a TestKey is immutable")

    def _identity(self) -> tuple:
        return (self.name, self.scheme, bytes(self._secret), self.public_key, self.api_key, self._passphrase, self.policy_sha256)

    def __eq__(self, other: object) -> bool:
        return other.__class__ is self.__class__ and self._identity() == other._identity()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        return "TestKey(" + ", ".join(f"{slot}={getattr(self, slot)!r}" for slot in _SHOWN) + ")"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        _refuse_pickle("a TestKey")

    def __copy__(self) -> "TestKey":
        return self

    def __deepcopy__(self, memo: Any) -> "TestKey":
        return self


def make_secret(scheme: str, *, passphrase: str | None = None, key_kind: str | None = None) -> SecretBytes:
    """A random secret in the form the scheme's exchange hands out (as its signer says).
    ``key_kind`` picks the key type where the scheme takes several (``coinbase-jwt``: ``"p256"``,
    the default, or ``"ed25519"``, in the base64 form Coinbase's portal shows)."""
    signer = _signer(scheme)
    if key_kind is None:
        return SecretBytes(signer.fresh_secret(passphrase=passphrase))
    kinds = getattr(signer, "key_kinds", ())
    if key_kind not in kinds:
        raise ValueError(f"key_kind {key_kind!r} is not one {scheme} offers ({', '.join(kinds) or 'it has one key type'})")
    return SecretBytes(signer.fresh_secret(passphrase=passphrase, key_kind=key_kind))


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


def _text_argument(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"zerocopy_key: {name} must be a str, not {type(value).__name__}")


def _secret_argument(secret: Any) -> SecretBytes | None:
    if secret is None:
        return None
    if isinstance(secret, str):
        return SecretBytes(secret.encode())
    if isinstance(secret, (bytes, bytearray)):
        return SecretBytes(secret)
    raise TypeError(f"zerocopy_key: secret must be bytes or str (the key as the exchange gives it), not {type(secret).__name__}")


def _digest(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()


class KeyMaker:
    """Seals and provisions test keys; one per session, bound to one enclave and one KMS key.

    A key asked for again with the same arguments is the same key: with ``name=``, anywhere in the
    session; without, within one test (each example of a hypothesis test asks again). Keys it
    loaded are removed by :meth:`remove_loaded` (the fixture calls it when its scope ends)."""

    def __init__(
        self,
        *,
        kms: Any,
        kms_key_id: str,
        signer: Any,
        credentials: Callable[[], dict[str, str]],
        region: str,
        current_test: Callable[[], str | None] | None = None,
    ) -> None:
        self.kms = kms
        self.kms_key_id = kms_key_id
        self.signer = signer
        # Read at each provisioning: the host's session credentials expire (and are refreshed)
        # during a long test session, as an instance's do.
        self.credentials = credentials
        self.region = region
        self.current_test = current_test or (lambda: None)
        self._counter = itertools.count(1)
        self._session = os.urandom(3).hex()
        self._named: dict[str, tuple[str, TestKey]] = {}
        self._unnamed: dict[str, TestKey] = {}  # this test's keys, by request digest
        self._unnamed_test: str | None = None
        self.loaded: list[str] = []

    def __repr__(self) -> str:
        return f"<zerocopy_key factory: {len(self.loaded)} test keys loaded>"

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
        for argument, value in (("scheme", scheme), ("name", name), ("api_key", api_key), ("passphrase", passphrase)):
            _text_argument(argument, value)
        if scheme is None:
            raise TypeError("zerocopy_key: scheme must be a str, not None")
        secret = _secret_argument(secret)
        policy_document = _policy_document(policy)
        request = _request_digest(scheme, secret, api_key, passphrase, policy_document)
        known = self._known(name, request)
        if known is not None:
            return known
        key = self._make(scheme, secret, name, api_key, passphrase, policy_document)
        self._remember(name, request, key)
        return key

    def _known(self, name: str | None, request: str) -> TestKey | None:
        if name is None:
            test = self.current_test()
            if test is None:
                return None
            if test != self._unnamed_test:
                self._unnamed_test, self._unnamed = test, {}
            return self._unnamed.get(request)
        if name not in self._named:
            return None
        made_with, key = self._named[name]
        if made_with != request:
            raise ValueError(
                f"zerocopy_key: a key named {name!r} was made earlier in this session with other arguments; "
                "pass the same arguments to get that key again, or give this one another name"
            )
        return key

    def _remember(self, name: str | None, request: str, key: TestKey) -> None:
        if name is not None:
            self._named[name] = (request, key)
        elif self.current_test() is not None:
            self._unnamed[request] = key
        self.loaded.append(key.name)

    def _make(self, scheme: str, secret: SecretBytes | None, name: str | None, api_key: str | None, passphrase: str | None, policy: dict | None) -> TestKey:
        from zerocopy.errors import ProvisioningError
        from zerocopy.sealing import seal

        signer = _signer(scheme)
        if secret is None:
            secret = SecretBytes(signer.fresh_secret(passphrase=passphrase))
        elif passphrase is not None:
            secret = SecretBytes(signer.with_passphrase(secret, passphrase))
        if passphrase is None:
            passphrase = signer.passphrase_of(secret)
        name = name or f"test-{scheme}-{self._session}-{next(self._counter)}"
        api_key = api_key if api_key is not None else "test-api-key-" + secrets.token_hex(8)
        bundle = seal(self.kms, key_id=self.kms_key_id, name=name, scheme=scheme, secret=secret, api_key=api_key, policy=_test_policy(policy))
        (result,) = self.signer.provision([bundle.to_json()], credentials=self.credentials(), region=self.region)
        if not result.loaded:
            raise ProvisioningError(result.error or "the enclave did not load the test key")
        return TestKey(
            name=name,
            scheme=scheme,
            secret=secret,
            public_key=_public_key_pem(signer, secret, api_key) if signer.asymmetric else None,
            api_key=api_key,
            passphrase=passphrase,
            policy_sha256=bundle.policy_sha256,
        )

    def remove_loaded(self) -> list[str]:
        """Remove from the enclave every key this factory loaded (a key already gone is no
        failure); returns what could not be removed, one line each."""
        from zerocopy.errors import UnknownKey, ZeroCopyError

        failures = []
        for name in self.loaded:
            try:
                self.signer.remove(name)
            except UnknownKey:
                pass
            except ZeroCopyError as exc:
                failures.append(f"{name}: {exc}")
        self.loaded, self._named, self._unnamed = [], {}, {}
        return failures


def _request_digest(scheme: str, secret: bytes | None, api_key: str | None, passphrase: str | None, policy: dict | None) -> str:
    """What identifies a request for a key, without holding its secret."""
    from enclave.protocol.bundle import canonical_json

    fields = {"scheme": scheme, "secret": _digest(secret), "api_key": api_key, "passphrase": _digest(passphrase), "policy": policy}
    return hashlib.sha256(canonical_json(fields)).hexdigest()


def _test_policy(document: dict | None) -> dict:
    """What a test key is sealed with: the test's policy, else the scheme's safe default with a
    rate for hypothesis runs; removable either way (unless the policy says otherwise), so the
    session can unload it when it ends."""
    from zerocopy.policy import load_policy

    return load_policy({"removable": True, **(document if document is not None else {"rate": TEST_RATE})})


def _looks_like_a_path(text: str) -> bool:
    stripped = text.strip()
    return "\n" not in stripped and stripped.lower().endswith((".toml", ".json"))


def _policy_document(policy: Any) -> dict | None:
    """A ``Path`` to a TOML/JSON file, TOML text or the equivalent dict, normalized as ``zerocopy
    seal --policy`` does; ``None`` for the default."""
    from zerocopy.policy import PolicyError, load_policy

    if isinstance(policy, os.PathLike):
        return load_policy(Path(policy))
    if isinstance(policy, str) and _looks_like_a_path(policy):
        raise PolicyError(f"policy={policy[:80]!r} looks like a file name: pass pathlib.Path({policy[:80]!r}) to read the file (a str is TOML text)")
    if policy is not None and not isinstance(policy, (str, dict)):
        raise TypeError(f"zerocopy_key: policy must be a pathlib.Path, TOML text or a dict (or None for the scheme's safe default), not {type(policy).__name__}")
    return load_policy(policy)
