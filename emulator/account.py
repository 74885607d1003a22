"""The emulated AWS account: its id, and the parent instance's IAM role as SECURITY.md gives it.

On AWS the parent instance calls KMS (through the enclave) with session credentials of its
instance role, and SECURITY.md ("Outside ZeroCopy") says what that role may do: ``kms:Decrypt``
and, for ``zerocopy generate``, ``kms:GenerateDataKey`` — both of which ``zerocopy kms-policy``'s
key policy denies unless the request carries the pinned enclave's attestation, so the role can use
them only through the enclave (which unseals and seals with ``Recipient``), never on its own.
The emulator creates exactly that role in moto's IAM when it starts (:class:`HostRole`), and
``Emulator.credentials`` are sessions of it, so every test that provisions through the emulator
is authorized as the host would be on AWS: by the key policy *and* the role's IAM policy. The
same role ARN is measured into PCR3 of every enclave the emulator launches, as Nitro measures
the parent instance's role.

Sessions expire as on AWS (after :data:`SESSION_SECONDS`, the longest a role may allow); the
credentials :attr:`HostRole.credentials` returns are refreshed before that, as an instance's
credential provider refreshes them.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["ACCOUNT_ID", "HOST_ROLE_ACTIONS", "HOST_ROLE_ARN", "HOST_ROLE_NAME", "SESSION_SECONDS", "HostRole"]

ACCOUNT_ID = "123456789012"  # moto's default account
HOST_ROLE_NAME = "zerocopy-emulator"
HOST_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/{HOST_ROLE_NAME}"
#: SECURITY.md, "Outside ZeroCopy": the host role's only KMS permissions (usable only with attestation).
HOST_ROLE_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
#: The longest session IAM allows a role (MaxSessionDuration 43200 s), so `zerocopy emulator up`'s
#: exported credentials last a working day.
SESSION_SECONDS = 43200
_TRUST_EC2 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
_HOST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "ZeroCopyHost", "Effect": "Allow", "Action": list(HOST_ROLE_ACTIONS), "Resource": "*"}],
}


class HostRole:
    """The host's role in one moto process, and refreshed session credentials of it.

    ``session_name`` is what EC2 names an instance profile's sessions: the instance id.
    """

    def __init__(self, moto_endpoint: str, *, region: str, session_name: str, session_seconds: int = SESSION_SECONDS) -> None:
        from botocore.config import Config

        from . import _boto

        # moto does not check the signature of IAM and STS calls; these keys name no one.
        keys, config = {"access_key_id": "emulator", "secret_access_key": "emulator"}, Config(retries={"max_attempts": 1})
        self._iam = _boto.client("iam", endpoint_url=moto_endpoint, region=region, credentials=keys, config=config)
        self._sts = _boto.client("sts", endpoint_url=moto_endpoint, region=region, credentials=keys, config=config)
        self.session_name = session_name
        self.session_seconds = session_seconds
        self._credentials: Any = None
        self._expiration: Any = None

    def create(self) -> "HostRole":
        """Create the role with its one inline policy, and open its first session."""
        from botocore.credentials import RefreshableCredentials

        self._iam.create_role(
            RoleName=HOST_ROLE_NAME, AssumeRolePolicyDocument=json.dumps(_TRUST_EC2), MaxSessionDuration=SESSION_SECONDS,
            Description="The parent instance's role, as ZeroCopy's SECURITY.md gives it",
        )  # fmt: skip
        self._iam.put_role_policy(RoleName=HOST_ROLE_NAME, PolicyName="zerocopy-host", PolicyDocument=json.dumps(_HOST_POLICY))
        self._credentials = RefreshableCredentials.create_from_metadata(self._assume(), self._assume, "zerocopy-emulator-host-role")
        return self

    @property
    def credentials(self) -> dict[str, str]:
        """Session credentials of the role, in the shape ``Signer.provision`` takes; fresh ones near expiry."""
        if self._credentials is None:
            raise RuntimeError("the host role has not been created")
        frozen = self._credentials.get_frozen_credentials()  # botocore refreshes 15 minutes before expiry
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key, "session_token": frozen.token}

    @property
    def expiration(self) -> Any:
        """When the session :attr:`credentials` last returned expires (an aware datetime)."""
        return self._expiration

    def close(self) -> None:
        self._iam.close()
        self._sts.close()

    def _assume(self) -> dict[str, str]:
        answer = self._sts.assume_role(RoleArn=HOST_ROLE_ARN, RoleSessionName=self.session_name, DurationSeconds=self.session_seconds)
        found = answer["Credentials"]
        self._expiration = found["Expiration"]
        return {
            "access_key": found["AccessKeyId"],
            "secret_key": found["SecretAccessKey"],
            "token": found["SessionToken"],
            "expiry_time": found["Expiration"].isoformat(),
        }
