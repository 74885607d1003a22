"""boto3 clients for the emulator's own calls (to moto and to its KMS front), from one session.

A new ``boto3.session.Session`` reads and parses a service's JSON model again for its first client:
50–150 ms a client on these machines, and an emulator makes five. One session per process parses
each model once; every client still gets its own credentials (``Session.client(aws_access_key_id=...)``
leaves the session's own unset), so sharing the session shares nothing but the parsed models.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["client", "preload", "service_model"]

_lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are
_session: Any = None


def _shared() -> Any:
    global _session
    if _session is None:
        import boto3

        _session = boto3.session.Session()
    return _session


def client(service: str, *, endpoint_url: str, region: str, credentials: Mapping[str, str], **options: Any) -> Any:
    """A boto3 client of ``service`` at ``endpoint_url`` with ``credentials`` (``access_key_id``,
    ``secret_access_key``, optionally ``session_token``); ``options`` go to ``Session.client``."""
    with _lock:
        return _shared().client(
            service, endpoint_url=endpoint_url, region_name=region, aws_access_key_id=credentials["access_key_id"],
            aws_secret_access_key=credentials["secret_access_key"], aws_session_token=credentials.get("session_token"), **options,
        )  # fmt: skip


def service_model(service: str) -> Any:
    """botocore's model of ``service``, parsed once per process."""
    with _lock:
        return _shared()._session.get_service_model(service)


def preload(services: tuple[str, ...] = ("kms", "iam", "sts")) -> None:
    """Parse the models (and endpoint data) the emulator's clients need, before they are needed:
    the emulator does it while moto starts in its own process."""
    for service in services:
        client(service, endpoint_url="http://127.0.0.1:9", region="us-east-1", credentials={"access_key_id": "-", "secret_access_key": "-"}).close()
