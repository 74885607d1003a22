"""Signing policy: what the enclave agrees to sign with a key.

The policy is sealed with the secret (its digest is part of the KMS encryption context), so the
host cannot swap or loosen it. A bundle without a policy gets its scheme's safe default: raw
payload signing is allowed for raw schemes and refused for exchange keys.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PolicyError", "Refusal", "Policy"]


class PolicyError(ValueError):
    """A policy document that does not parse; the message names the field."""


class Refusal(Exception):
    """A request the policy does not allow. ``rule`` names the rule."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


_KNOWN = {"raw_signing"}


@dataclass(frozen=True)
class Policy:
    raw_signing: bool

    @classmethod
    def from_document(cls, document: dict | None, *, exchange: str | None) -> "Policy":
        if document is None:
            return cls(raw_signing=exchange is None)
        unknown = sorted(set(document) - _KNOWN)
        if unknown:
            raise PolicyError(f"unknown policy field {unknown[0]!r}")
        raw = document.get("raw_signing", exchange is None)
        if not isinstance(raw, bool):
            raise PolicyError("raw_signing must be true or false")
        return cls(raw_signing=raw)

    def authorize_raw(self) -> None:
        if not self.raw_signing:
            raise Refusal("raw_signing", "raw payload signing is off for this key; use sign_request")
