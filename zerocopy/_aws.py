"""The host's AWS session: region and the credentials it hands the enclave for KMS."""

from __future__ import annotations

import os
from typing import Any

from .errors import ZeroCopyError

__all__ = ["aws_session", "host_credentials"]


def aws_session(region: str | None = None) -> Any:
    import boto3

    # botocore reads AWS_DEFAULT_REGION; AWS_REGION is what most tools (and `emulator up`) set.
    return boto3.session.Session(region_name=region or os.environ.get("AWS_REGION") or None)


def host_credentials(session: Any) -> dict[str, str]:
    """This host's AWS credentials, in the shape PROVISION and GENERATE take.

    The enclave uses them only to call KMS; the key policy, not these credentials, decides
    whether KMS releases anything.
    """
    found = session.get_credentials()
    if found is None:
        raise ZeroCopyError("no AWS credentials found for the enclave to call KMS with")
    frozen = found.get_frozen_credentials()
    credentials = {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key}
    if frozen.token:
        credentials["session_token"] = frozen.token
    return credentials
