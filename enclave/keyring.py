"""The keys loaded into this enclave, by name. Lives only in enclave memory."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .protocol.policy import PolicyState
from .schemes import SigningKey

__all__ = ["LoadedKey", "Keyring", "KeyConflict"]


class KeyConflict(ValueError):
    """A different key of the same name is already loaded."""


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

    def describe(self) -> dict:
        info: dict = {"name": self.name, "scheme": self.scheme, "api_key": self.api_key, "policy_sha256": self.policy_sha256, "sealed_by": self.sealed_by}
        public_key = self.signing_key.public_key_pem()
        if public_key is not None:
            info["public_key"] = public_key.decode()
        return info


class Keyring:
    def __init__(self) -> None:
        self._keys: dict[str, LoadedKey] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedKey | None:
        return self._keys.get(name)

    def add(self, key: LoadedKey) -> bool:
        """Load ``key``; ``False`` if the very same key was already loaded."""
        with self._lock:
            existing = self._keys.get(key.name)
            if existing is not None:
                if existing.fingerprint == key.fingerprint:
                    return False
                raise KeyConflict(f"a different key named {key.name!r} is already loaded")
            self._keys = {**self._keys, key.name: key}
            return True

    def keys(self) -> list[LoadedKey]:
        return sorted(self._keys.values(), key=lambda key: key.name)
