"""The keys loaded into this enclave, by name. Lives only in enclave memory."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .protocol.policy import PolicyState
from .schemes import SigningKey

__all__ = ["LoadedKey", "Keyring", "KeyConflict", "KeyringFull", "MAX_KEYS"]

#: Keys one enclave holds at most. Each key's policy state is bounded (remembered verdicts, the
#: notional window), so this bounds what the host can make the enclave keep by provisioning.
MAX_KEYS = 64


class KeyConflict(ValueError):
    """A different key of the same name is already loaded."""


class KeyringFull(ValueError):
    """The enclave already holds as many keys as it will (:data:`MAX_KEYS`)."""


@dataclass(frozen=True, eq=False)
class LoadedKey:
    name: str
    scheme: str
    api_key: str
    policy_sha256: str
    sealed_by: str  # ARN of the KMS key that sealed it, as KMS reported it: how the operator tells whose key this is
    policy_state: PolicyState
    signing_key: SigningKey = field(repr=False)
    fingerprint: str = field(repr=False)  # SHA-256 over the bundle's fields and secret: same bundle, same key
    sealed_policy: dict | None = field(default=None, repr=False)  # the policy document as sealed (its digest is policy_sha256)
    # Kept only while the key waits for its API key id, to re-seal it once BIND gives one.
    unbound_secret: bytes | None = field(default=None, repr=False)
    # Request shapes this key has signed, judged and signed since by their values alone (the
    # service's; this key's policy and signing key only: a replaced key starts without).
    shapes: dict = field(default_factory=dict, repr=False, compare=False)

    def describe(self) -> dict:
        info: dict = {"name": self.name, "scheme": self.scheme, "api_key": self.api_key, "policy_sha256": self.policy_sha256, "sealed_by": self.sealed_by}
        public_key = self.signing_key.public_key_pem()
        if public_key is not None:
            info["public_key"] = public_key.decode()
        return info


class Keyring:
    def __init__(self, capacity: int = MAX_KEYS) -> None:
        self.capacity = capacity
        self._keys: dict[str, LoadedKey] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedKey | None:
        return self._keys.get(name)

    def check_room(self, name: str) -> None:
        """Raise :class:`KeyringFull` if a key named ``name`` could not be added (checked before KMS is asked)."""
        keys = self._keys
        if name not in keys and len(keys) >= self.capacity:
            raise KeyringFull(f"the enclave already holds {self.capacity} keys, its limit; restart it to load others")

    def add(self, key: LoadedKey) -> bool:
        """Load ``key``; ``False`` if the very same key was already loaded."""
        with self._lock:
            existing = self._keys.get(key.name)
            if existing is not None:
                if existing.fingerprint == key.fingerprint:
                    return False
                raise KeyConflict(f"a different key named {key.name!r} is already loaded")
            self.check_room(key.name)
            self._keys = {**self._keys, key.name: key}
            return True

    def remove(self, key: LoadedKey) -> bool:
        """Unload ``key``; ``False`` if it is no longer the key loaded under its name. (Whether it
        may be removed is the caller's question: its policy says.)"""
        with self._lock:
            if self._keys.get(key.name) is not key:
                return False
            self._keys = {name: other for name, other in self._keys.items() if other is not key}
            return True

    def replace(self, old: LoadedKey, new: LoadedKey, before_published: Callable[[], None] = lambda: None) -> None:
        """Put ``new`` in the place of ``old``, unless ``old`` is no longer the key loaded under its
        name (so of two binds racing, one wins and the other is refused). ``before_published`` runs
        once the swap is sure to happen and before any other thread can see ``new`` (its receipt)."""
        with self._lock:
            if self._keys.get(old.name) is not old or new.name != old.name:
                raise KeyConflict(f"the key named {old.name!r} changed meanwhile")
            before_published()
            self._keys = {**self._keys, new.name: new}

    def keys(self) -> list[LoadedKey]:
        return sorted(self._keys.values(), key=lambda key: key.name)
