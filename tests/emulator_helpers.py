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


# --- added for the KMS fidelity tests (test_kms_fidelity.py) -----------------------------------

EMULATOR_ACCESS_KEY = "zerocopy-emulator"  # the account root's key, as Emulator.kms (the operator) signs with it
EMULATOR_SECRET_KEY = "zerocopy-emulator-secret"


def signed_headers(
    target: str | None,
    body: bytes,
    access_key: str = EMULATOR_ACCESS_KEY,
    secret_key: str = EMULATOR_SECRET_KEY,
    token: str | None = None,
    *,
    host: str = f"kms.{REGION}.amazonaws.com",
) -> dict[str, str]:
    """The headers botocore sends to KMS for ``body``, SigV4-signed with these credentials."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=f"https://{host}/", data=body, headers=headers)
    SigV4Auth(Credentials(access_key, secret_key, token), "kms", REGION).add_auth(request)
    signed = dict(request.headers.items())
    signed["Host"] = host  # signed: sent as is, whichever address the request goes to
    return signed


def http_post(endpoint: str, headers: dict[str, str], body: bytes, *, ca_file: str | None = None, method: str = "POST") -> tuple[int, str, bytes]:
    """One raw request to ``endpoint`` (http or https with ``ca_file``): (status, content type, body)."""
    import http.client
    import ssl
    from urllib.parse import urlsplit

    target = urlsplit(endpoint)
    if target.scheme == "https":
        context = ssl.create_default_context(cafile=ca_file)
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(target.hostname, target.port, context=context, timeout=30)
    else:
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
    try:
        connection.request(method, "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


# --- AWS's words, from the recorded answers in tests/data/kms/ (see tests/data/PROVENANCE.md) ---

_KMS_DATA = Path(__file__).parent / "data" / "kms"


def localstack_error(test: str, match: str, **placeholders: str) -> tuple[str, str]:
    """(code, message) of a real KMS answer LocalStack recorded: ``test`` is the snapshot's test
    name (``test_error_messaging_for_invalid_keys``), ``match`` the recorded answer's name;
    ``placeholders`` fill LocalStack's markers, e.g. ``key_arn=...`` for ``<key-arn>``."""
    import json

    snapshots = json.loads((_KMS_DATA / "localstack-kms-snapshot-excerpts.json").read_text())["snapshots"]
    (recorded,) = [value for name, value in snapshots.items() if name.rsplit("::", 1)[1] == test]
    error = recorded["recorded-content"][match]["Error"]
    message = error["Message"]
    for name, value in placeholders.items():
        message = message.replace(f"<{name.replace('_', '-')}>", value)
    return error["Code"], message


def aws_words(name: str, **fill: str) -> tuple[str, str]:
    """(code, message) of a real AWS answer quoted in a public issue (tests/data/kms/aws-error-words.json)."""
    import json

    entry = json.loads((_KMS_DATA / "aws-error-words.json").read_text())["words"][name]
    return entry["code"], entry["message"].format(**fill)
