"""Small shared helpers for the emulator tests (test_nsm.py, test_kms_front.py).

``moto_process`` runs ``python -m emulator.kms.moto_process`` the way ``Emulator._start_moto`` does
(port on stdout, exit when stdin closes) and always stops it; ``rsa_recipient`` makes the enclave's
ephemeral RSA key; ``join_new_threads`` waits for threads a fixture started (server handler
threads) so none outlive it.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator.kms.moto_process import MotoProcess

__all__ = ["ACCOUNT_ID", "REGION", "join_new_threads", "moto_process", "recipient", "rsa_recipient", "spki_der"]

ACCOUNT_ID = "123456789012"  # moto's default account, as the emulator uses
REGION = "us-east-1"


@contextmanager
def moto_process(log_dir: Path) -> Iterator[str]:
    """Start moto's KMS in its own process; yield its endpoint URL; stop it however the block ends."""
    with MotoProcess(log_dir / "moto.log") as moto:
        yield moto.endpoint_url


def rsa_recipient() -> rsa.RSAPrivateKey:
    """The enclave's ephemeral key: RSA-2048, as KMS's RSAES_OAEP_SHA_256 recipient expects."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def spki_der(private_key: rsa.RSAPrivateKey) -> bytes:
    """The DER SubjectPublicKeyInfo that goes into the attestation document's ``public_key``."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def recipient(document: bytes, algorithm: str = "RSAES_OAEP_SHA_256") -> dict[str, str]:
    """The ``Recipient`` structure of a JSON Decrypt request (document base64, as on the wire)."""
    return {"AttestationDocument": base64.b64encode(document).decode(), "KeyEncryptionAlgorithm": algorithm}


def join_new_threads(before: set[threading.Thread], name_contains: str = "", timeout: float = 10) -> list[threading.Thread]:
    """Join threads started since ``before`` (whose name contains ``name_contains``); return any still alive."""
    alive = []
    for thread in threading.enumerate():
        if thread in before or thread is threading.current_thread() or name_contains not in thread.name:
            continue
        thread.join(timeout)
        if thread.is_alive():
            alive.append(thread)
    return alive
