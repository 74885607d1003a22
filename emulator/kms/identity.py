"""Who is calling, and what their IAM policies say: the caller of each KMS request, as AWS sees it.

AWS identifies the caller of a signed request by the access key id in the SigV4 ``Authorization``
header (``Credential=<access key id>/<date>/<region>/kms/aws4_request``). The emulator does the
same, against moto's IAM and STS:

* the emulator's own credentials (``Emulator.credentials``) are the account root,
  ``arn:aws:iam::<account>:root``;
* an access key of a moto IAM user is that user, ``arn:aws:iam::<account>:user/<name>``;
* moto STS credentials from ``AssumeRole`` are the role session,
  ``arn:aws:sts::<account>:assumed-role/<role>/<session>``;
* any other key is refused with ``UnrecognizedClientException`` ("The security token included in
  the request is invalid."), as AWS refuses a key it does not know.

The key id is resolved with STS ``GetCallerIdentity`` sent to moto *as that key* (moto, like AWS,
answers with the ARN the key belongs to; unlike AWS it does not check the signature, and for a key
it does not know it answers its placeholder ``arn:aws:sts::<account>:user/moto``). The key's secret
(and an STS session token) come from moto's IAM through an internal operation of the moto process
(:mod:`.moto_extensions`), so the front checks the SigV4 signature (:mod:`.sigv4`) as AWS does.

A caller's identity policies are read from moto's IAM: inline and attached managed policies of
the user (and of the user's groups) or of the session's role, plus a permissions boundary.
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html
"""

from __future__ import annotations

import http.client
import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from .exceptions import KMSInternalException, UnrecognizedClientException
from .moto_extensions import INTERNAL_ACCESS_KEY_SECRET, call_internal
from .policy import AuthorizationRequest, Decision, IdentityPolicy, MalformedPolicyDocument

__all__ = ["Caller", "IdentityPolicies", "Identities"]

_STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
_UNKNOWN_KEY_USER_ID = "AKIAIOSFODNN7EXAMPLE"  # moto's answer for a key it does not know
_SESSION_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:sts::([0-9]{12}):assumed-role/([^/]+)/([^/]+)")
_USER_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::([0-9]{12}):user/(?:.*/)?([^/]+)")


@dataclass(frozen=True)
class Caller:
    """The principal behind a request: the account root, an IAM user or an assumed-role session."""

    arn: str
    account_id: str
    kind: Literal["root", "user", "session"]
    name: str = ""  # the user's or the role's name

    @property
    def is_root(self) -> bool:
        return self.kind == "root"


@dataclass(frozen=True)
class IdentityPolicies:
    """What a caller's IAM policies say: their policies, a permissions boundary, or why not."""

    policies: tuple[IdentityPolicy, ...] = ()
    boundary: IdentityPolicy | None = None
    unreadable: str = ""  # set: a policy could not be evaluated, so nothing is allowed (fail closed)

    def evaluate(self, request: AuthorizationRequest) -> Decision:
        """Deny wins; else any policy's Allow allows, within the boundary if there is one."""
        if self.unreadable:
            return Decision(False, self.unreadable, denied=True)
        decisions = [policy.evaluate(request) for policy in self.policies]
        denied = next((d for d in decisions if d.denied), None)
        if denied is not None:
            return Decision(False, f"identity policy: {denied.reason}", denied=True)
        allowed = next((d for d in decisions if d.allowed), None)
        if allowed is None:
            return Decision(False, f"no identity policy allows {request.action}")
        if self.boundary is not None:
            bounded = self.boundary.evaluate(request)
            if not bounded.allowed:
                return Decision(False, f"permissions boundary: {bounded.reason}", denied=bounded.denied)
        return Decision(True, f"identity policy: {allowed.reason}")


class Identities:
    """Resolves access keys to callers and reads their IAM policies, from one moto process."""

    def __init__(self, moto_endpoint: str, *, account_id: str, region: str, root_credentials: Mapping[str, str]) -> None:
        import boto3
        from botocore.config import Config

        self.account_id = account_id
        self.region = region
        self.root = Caller(f"arn:aws:iam::{account_id}:root", account_id, "root")
        self._root_keys = dict(root_credentials)
        self._moto_endpoint = moto_endpoint
        target = urlsplit(moto_endpoint)
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 80
        self._iam = boto3.session.Session(
            aws_access_key_id="emulator", aws_secret_access_key="emulator", region_name=region
        ).client("iam", endpoint_url=moto_endpoint, config=Config(retries={"max_attempts": 1}))

    def close(self) -> None:
        self._iam.close()

    # -- who --------------------------------------------------------------------------------------
    def resolve(self, key_id: str) -> tuple[Caller, str, str | None]:
        """The caller behind ``key_id``, its secret key and its session token (``None`` for a long-term key)."""
        if key_id in self._root_keys:
            return self.root, self._root_keys[key_id], None
        caller = self.caller(key_id)
        try:
            status, answer = call_internal(self._moto_endpoint, INTERNAL_ACCESS_KEY_SECRET, {"AccessKeyId": key_id}, region=self.region)
        except (OSError, ValueError):
            raise KMSInternalException("the emulator's IAM did not answer") from None
        if status != 200 or not isinstance(answer.get("SecretAccessKey"), str):
            raise UnrecognizedClientException("The security token included in the request is invalid.")
        token = answer.get("SessionToken")
        return caller, answer["SecretAccessKey"], token if isinstance(token, str) else None

    def caller(self, key_id: str) -> Caller:
        if key_id in self._root_keys:
            return self.root
        arn, user_id = self._get_caller_identity(key_id)
        if user_id == _UNKNOWN_KEY_USER_ID and arn.endswith(":user/moto"):
            raise UnrecognizedClientException("The security token included in the request is invalid.")
        if match := _SESSION_ARN.fullmatch(arn):
            return Caller(arn, match.group(1), "session", match.group(2))
        if match := _USER_ARN.fullmatch(arn):
            return Caller(arn, match.group(1), "user", match.group(2))
        # moto answered something this emulator does not model (say a federated user): refuse.
        raise UnrecognizedClientException("The security token included in the request is invalid.")

    def _get_caller_identity(self, key_id: str) -> tuple[str, str]:
        """STS GetCallerIdentity sent to moto as ``key_id`` (moto does not check the signature)."""
        if not re.fullmatch(r"[\x21-\x7e]{1,128}", key_id) or "/" in key_id:
            raise UnrecognizedClientException("The security token included in the request is invalid.")
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/20250101/{self.region}/sts/aws4_request, SignedHeaders=host, Signature=0",
        }
        connection = http.client.HTTPConnection(self._host, self._port, timeout=30)
        try:
            connection.request("POST", "/", body="Action=GetCallerIdentity&Version=2011-06-15", headers=headers)
            response = connection.getresponse()
            body = response.read()
        except OSError as exc:
            raise KMSInternalException(f"the emulator's IAM is unreachable: {exc}") from None
        finally:
            connection.close()
        try:
            result = ElementTree.fromstring(body).find(f"{_STS_NS}GetCallerIdentityResult")
            arn = result.findtext(f"{_STS_NS}Arn") if result is not None else None
            user_id = result.findtext(f"{_STS_NS}UserId") if result is not None else None
        except ElementTree.ParseError:
            arn = user_id = None
        if response.status != 200 or not arn:
            raise KMSInternalException("the emulator's STS did not answer GetCallerIdentity")
        return arn, user_id or ""

    # -- what their policies say ------------------------------------------------------------------
    def policies(self, caller: Caller) -> IdentityPolicies:
        """The caller's identity policies (none for the root: it is not limited by IAM)."""
        if caller.is_root:
            return IdentityPolicies()
        from botocore.exceptions import ClientError

        try:
            if caller.kind == "user":
                documents, boundary = self._user_documents(caller.name)
            else:
                documents, boundary = self._role_documents(caller.name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
                return IdentityPolicies()  # a session of a role that no longer exists: nothing allowed
            raise KMSInternalException(f"the emulator's IAM refused a read: {exc}") from None
        try:
            parsed = tuple(IdentityPolicy.parse(_text(name_doc[1])) for name_doc in documents)
            bounded = IdentityPolicy.parse(_text(boundary)) if boundary is not None else None
        except MalformedPolicyDocument as exc:
            return IdentityPolicies(unreadable=f"an identity policy of {caller.arn} cannot be evaluated: {exc}")
        unknown = sorted(key for policy in (*parsed, *([bounded] if bounded else [])) for key in policy.condition_keys if not _known_condition_key(key))
        if unknown:
            return IdentityPolicies(unreadable=f"an identity policy of {caller.arn} tests {unknown[0]!r}, which the emulator cannot evaluate")
        return IdentityPolicies(parsed, bounded)

    def _user_documents(self, user: str) -> tuple[list[tuple[str, Any]], Any]:
        iam = self._iam
        documents = [(n, iam.get_user_policy(UserName=user, PolicyName=n)["PolicyDocument"]) for n in _all(iam, "list_user_policies", "PolicyNames", UserName=user)]
        documents += [self._managed(p["PolicyArn"]) for p in _all(iam, "list_attached_user_policies", "AttachedPolicies", UserName=user)]
        for group in _all(iam, "list_groups_for_user", "Groups", UserName=user):
            name = group["GroupName"]
            documents += [(n, iam.get_group_policy(GroupName=name, PolicyName=n)["PolicyDocument"]) for n in _all(iam, "list_group_policies", "PolicyNames", GroupName=name)]
            documents += [self._managed(p["PolicyArn"]) for p in _all(iam, "list_attached_group_policies", "AttachedPolicies", GroupName=name)]
        boundary = iam.get_user(UserName=user)["User"].get("PermissionsBoundary")
        return documents, self._managed(boundary["PermissionsBoundaryArn"])[1] if boundary else None

    def _role_documents(self, role: str) -> tuple[list[tuple[str, Any]], Any]:
        iam = self._iam
        documents = [(n, iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"]) for n in _all(iam, "list_role_policies", "PolicyNames", RoleName=role)]
        documents += [self._managed(p["PolicyArn"]) for p in _all(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=role)]
        boundary = iam.get_role(RoleName=role)["Role"].get("PermissionsBoundary")
        return documents, self._managed(boundary["PermissionsBoundaryArn"])[1] if boundary else None

    def _managed(self, arn: str) -> tuple[str, Any]:
        version = self._iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        return arn, self._iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]


#: Condition keys the emulator puts in every request context, lower-cased prefixes.
KNOWN_CONDITION_PREFIXES = (
    "kms:recipientattestation:",
    "kms:encryptioncontext:",
    "kms:encryptioncontextkeys",
    "kms:calleraccount",
    "aws:principalaccount",
)


def _known_condition_key(key: str) -> bool:
    return key.startswith(KNOWN_CONDITION_PREFIXES)


def _all(client: Any, method: str, field: str, **params: Any) -> list:
    """Every item of a paginated IAM list call."""
    items: list = []
    for page in client.get_paginator(method).paginate(**params):
        items.extend(page.get(field, []))
    return items


def _text(document: Any) -> str:
    """botocore hands IAM policy documents over already decoded; the evaluator parses text."""
    if isinstance(document, str):
        return document
    if isinstance(document, Mapping):
        return json.dumps(document)
    raise MalformedPolicyDocument(f"policy document is {type(document).__name__}")
