"""The emulator's host credentials are the host role SECURITY.md describes, not the account root.

SECURITY.md ("Outside ZeroCopy") gives the parent instance's role only ``kms:Decrypt`` (gated by
the key policy on attestation) and ``kms:GenerateDataKey`` (for ``zerocopy generate``). The
emulator creates that role in moto's IAM, hands out sessions of it as ``Emulator.credentials``
and measures its ARN into PCR3, so every test that provisions through the emulator is authorized
as the host would be on AWS; key administration stays with ``Emulator.kms`` (the account root).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from emulator_helpers import REGION, moto_process, signed_headers

from emulator import ACCOUNT_ID, HOST_ROLE_ARN
from emulator.account import HOST_ROLE_ACTIONS, HOST_ROLE_NAME, HostRole
from emulator.kms.models import AttestingKms
from emulator.kms.responses import dispatch
from emulator.pki import AttestationPki

ROOT = Path(__file__).resolve().parent.parent


def test_the_host_role_has_exactly_what_security_md_gives_it():
    section = (ROOT / "SECURITY.md").read_text().split("## Outside ZeroCopy", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(kms:\w+)`", section))
    assert named == set(HOST_ROLE_ACTIONS) == {"kms:Decrypt", "kms:GenerateDataKey"}, named


@pytest.mark.zerocopy
def test_the_emulator_s_role_in_iam_is_the_host_role(zerocopy_emulator):
    iam = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=REGION).client("iam", endpoint_url=zerocopy_emulator.moto_endpoint_url)
    try:
        role = iam.get_role(RoleName=HOST_ROLE_NAME)["Role"]
        inline = iam.list_role_policies(RoleName=HOST_ROLE_NAME)["PolicyNames"]
        documents = [iam.get_role_policy(RoleName=HOST_ROLE_NAME, PolicyName=name)["PolicyDocument"] for name in inline]
        attached = iam.list_attached_role_policies(RoleName=HOST_ROLE_NAME)["AttachedPolicies"]
    finally:
        iam.close()
    assert role["Arn"] == HOST_ROLE_ARN == f"arn:aws:iam::{ACCOUNT_ID}:role/zerocopy-emulator"
    assert attached == [] and len(documents) == 1
    statements = documents[0]["Statement"]
    assert [(s["Effect"], sorted(s["Action"]), s["Resource"]) for s in statements] == [("Allow", sorted(HOST_ROLE_ACTIONS), "*")]


@pytest.mark.zerocopy
def test_the_host_credentials_are_a_session_of_the_measured_role_and_cannot_administer_keys(zerocopy_emulator):
    credentials = zerocopy_emulator.credentials
    assert set(credentials) == {"access_key_id", "secret_access_key", "session_token"}
    # PCR3 is the role the parent instance runs as: the same role.
    assert zerocopy_emulator.pcrs[3] == hashlib.sha384(bytes(48) + HOST_ROLE_ARN.encode()).digest()
    host = zerocopy_emulator.host_kms()
    try:
        for call in (host.list_keys, host.create_key):
            with pytest.raises(ClientError) as info:
                call()
            message = info.value.response["Error"]["Message"]
            assert message.startswith(f"User: arn:aws:sts::{ACCOUNT_ID}:assumed-role/{HOST_ROLE_NAME}/i-"), message
            assert message.endswith("because no identity-based policy allows the kms:" + call.__name__.title().replace("_", "") + " action"), message
    finally:
        host.close()
    assert "Keys" in zerocopy_emulator.kms.list_keys()  # the operator's client: the account root


def test_host_sessions_are_refreshed_before_they_expire(tmp_path):
    """botocore refreshes 15 minutes before expiry: with AWS's shortest session (900 s) every read is a new one."""
    with moto_process(tmp_path) as endpoint:
        model = AttestingKms(endpoint, attestation_roots=[AttestationPki(REGION).root_pem], account_id=ACCOUNT_ID, region=REGION)
        role = HostRole(endpoint, region=REGION, session_name="i-0123456789abcdef0", session_seconds=900).create()
        try:
            first, second = role.credentials, role.credentials
            assert first["access_key_id"] != second["access_key_id"]
            for credentials in (first, second):  # both valid sessions of the host role: refused by IAM, not unrecognized
                headers = signed_headers("TrentService.ListKeys", b"{}", credentials["access_key_id"], credentials["secret_access_key"], credentials["session_token"])
                answer = json.loads(dispatch(model, headers, b"{}").body)
                assert answer["__type"] == "AccessDeniedException" and f"assumed-role/{HOST_ROLE_NAME}/i-0123456789abcdef0 " in answer["Message"]
        finally:
            role.close()
            model.close()


@pytest.mark.zerocopy
def test_a_running_emulator_s_exports_create_keys_as_the_operator_and_provision_as_the_host(zerocopy_emulator, monkeypatch):
    """What `zerocopy emulator up` prints, as `pytest --zerocopy-enclave` reads it."""
    from pytest_zerocopy.factories import RunningEnclave

    host = zerocopy_emulator.credentials
    exports = {
        "ZEROCOPY_KMS_ENDPOINT": zerocopy_emulator.kms_endpoint_url, "ZEROCOPY_KMS_CA": str(zerocopy_emulator.tls_ca_path),
        "AWS_REGION": zerocopy_emulator.region, "AWS_ACCESS_KEY_ID": host["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": host["secret_access_key"], "AWS_SESSION_TOKEN": host["session_token"],
        "ZEROCOPY_KMS_OPERATOR_ACCESS_KEY_ID": zerocopy_emulator.operator_credentials["access_key_id"],
        "ZEROCOPY_KMS_OPERATOR_SECRET_ACCESS_KEY": zerocopy_emulator.operator_credentials["secret_access_key"],
    }  # fmt: skip
    for name, value in exports.items():
        monkeypatch.setenv(name, value)
    running = RunningEnclave(zerocopy_emulator.address)
    assert running.credentials == host
    kms = running.kms
    try:
        assert kms.create_key(Description="created by the operator")["KeyMetadata"]["KeyState"] == "Enabled"
    finally:
        kms.close()
