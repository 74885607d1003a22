"""Who is calling, and what their IAM policies say: the caller of each KMS request, as AWS sees it.

AWS identifies the caller of a signed request by the access key id in the SigV4 ``Authorization``
header (``Credential=<access key id>/<date>/<region>/kms/aws4_request``). The emulator does the
same, against moto's IAM and STS:

* the access keys the emulator was given as the account root's (``Emulator.kms`` signs with
  them) are ``arn:aws:iam::<account>:root``;
* an access key of a moto IAM user is that user, ``arn:aws:iam::<account>:user/<name>``;
* moto STS credentials from ``AssumeRole`` are the role session,
  ``arn:aws:sts::<account>:assumed-role/<role>/<session>``;
* any other key is refused with ``UnrecognizedClientException`` ("The security token included in
  the request is invalid."), as AWS refuses a key it does not know.

The key id is resolved with STS ``GetCallerIdentity`` sent to moto *as that key* (moto, like AWS,
answers with the ARN the key belongs to; unlike AWS it does not check the signature, and for a key
it does not know it answers its placeholder ``arn:aws:sts::<account>:user/moto``). The key's secret
(and for a role session its token, expiration and session policies) come from moto's IAM and STS
through an internal operation of the moto process (:mod:`.moto_extensions`), so the front checks
the SigV4 signature (:mod:`.sigv4`), the token and its expiry as AWS does.

A caller's IAM policies are read from moto's IAM, by policy type, as AWS evaluates them:

* identity-based policies: inline and attached managed policies of the user (and of the user's
  groups) or of the session's role;
* a permissions boundary of the user or role;
* session policies of a role session: the inline ``Policy`` and the managed ``PolicyArns`` passed
  to ``AssumeRole``. The session's permissions are their intersection with the role's (documented).
  Among themselves they are read as one set, an Allow in any of them counting and a Deny in any
  winning: AWS states no rule, but its stated use of several managed session policies (composing
  a session's permissions from reusable pieces) only works that way. A managed session policy
  the emulator cannot read refuses everything (fail closed).

An explicit Deny in any of them refuses; which of them must also allow depends on how the key
policy covers the caller (:attr:`.policy.Decision.grant`).
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from .conditions import unknown_condition_keys
from .exceptions import KMSInternalException, UnrecognizedClientException
from .moto_extensions import INTERNAL_ACCESS_KEY_SECRET, call_internal
from .policy import AuthorizationRequest, IdentityPolicy, MalformedPolicyDocument

__all__ = [
    "IDENTITY_POLICY",
    "PERMISSIONS_BOUNDARY",
    "SESSION_POLICY",
    "Caller",
    "Credential",
    "IamDecision",
    "Identities",
    "IdentityPolicies",
]

#: The IAM policy types, as AWS names them in access-denied messages.
IDENTITY_POLICY = "identity-based policy"
PERMISSIONS_BOUNDARY = "permissions boundary"
SESSION_POLICY = "session policy"

_STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
_UNKNOWN_KEY_USER_ID = "AKIAIOSFODNN7EXAMPLE"  # moto's answer for a key it does not know
_INVALID_TOKEN = "The security token included in the request is invalid."
_SESSION_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:sts::([0-9]{12}):assumed-role/([^/]+)/([^/]+)")
_USER_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::([0-9]{12}):user/(?:.*/)?([^/]+)")
# A user or role ARN as a key policy names it: account, kind, path (without its outer slashes), name.
_PRINCIPAL_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::([0-9]{12}):(user|role)/(?:(.*)/)?([^/]+)")


@dataclass(frozen=True)
class Caller:
    """The principal behind a request: the account root, an IAM user or an assumed-role session.

    A session also carries the session policies it was created with: ``session_policy`` (the
    inline ``Policy`` of ``AssumeRole``, JSON text) and ``session_policy_arns`` (its ``PolicyArns``).
    """

    arn: str
    account_id: str
    kind: Literal["root", "user", "session"]
    name: str = ""  # the user's or the role's name
    session_policy: str | None = None
    session_policy_arns: tuple[str, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.kind == "root"


@dataclass(frozen=True)
class Credential:
    """An access key as the emulator's IAM and STS hold it."""

    caller: Caller
    secret_access_key: str
    session_token: str | None = None  # None: a long-term key
    expiration: datetime.datetime | None = None  # aware UTC; None: does not expire

    def expired(self, now: datetime.datetime | None = None) -> bool:
        return self.expiration is not None and (now or datetime.datetime.now(datetime.timezone.utc)) >= self.expiration


@dataclass(frozen=True)
class IamDecision:
    """What a caller's IAM policies say about one request, by policy type.

    ``denied_by``: the policy type with an explicit Deny (or one that cannot be evaluated, which
    counts as a Deny: fail closed). ``allowing``: the policy types that allow the request; a caller
    without a permissions boundary or session policies is not limited by them, so those count as
    allowing. ``reason``: the deciding statements, for the emulator's own diagnostics.
    """

    denied_by: str | None
    reason: str
    allowing: frozenset[str] = frozenset()

    def first_missing(self, needed: Sequence[str]) -> str | None:
        """The first policy type of ``needed`` that does not allow the request, or ``None``."""
        return next((kind for kind in needed if kind not in self.allowing), None)


@dataclass(frozen=True)
class IdentityPolicies:
    """A caller's IAM policies by type, or why they cannot be evaluated.

    ``boundary`` / ``session``: ``None`` when the caller has none (then they do not limit).
    ``role_arn``: a session's role as IAM reports it, path included; empty for other callers and
    for a role that no longer exists. ``unreadable``: (policy type, why) — nothing is allowed.
    """

    policies: tuple[IdentityPolicy, ...] = ()
    boundary: IdentityPolicy | None = None
    session: tuple[IdentityPolicy, ...] | None = None
    role_arn: str = ""
    unreadable: tuple[str, str] | None = None

    def evaluate(self, request: AuthorizationRequest) -> IamDecision:
        """A Deny in any policy type wins; else which types allow the request."""
        if self.unreadable is not None:
            return IamDecision(*self.unreadable)
        layers = (
            (IDENTITY_POLICY, self.policies),
            (PERMISSIONS_BOUNDARY, None if self.boundary is None else (self.boundary,)),
            (SESSION_POLICY, self.session),
        )
        allowing, reasons = set(), []
        for kind, documents in layers:
            if documents is None:
                allowing.add(kind)
                continue
            decisions = [document.evaluate(request) for document in documents]
            denied = next((d for d in decisions if d.denied), None)
            if denied is not None:
                return IamDecision(kind, f"{kind}: {denied.reason}")
            allowed = next((d for d in decisions if d.allowed), None)
            if allowed is not None:
                allowing.add(kind)
            reasons.append(f"{kind}: {allowed.reason}" if allowed else f"no {kind} allows {request.action}")
        return IamDecision(None, "; ".join(reasons), frozenset(allowing))


@dataclass(frozen=True)
class _Documents:
    """A user's or a role's policy documents as moto's IAM returns them (decoded JSON or text)."""

    policies: list[Any]
    boundary: Any = None
    role_arn: str = ""


class Identities:
    """Resolves access keys to callers and reads their IAM policies, from one moto process."""

    def __init__(self, moto_endpoint: str, *, account_id: str, region: str, root_credentials: Mapping[str, str]) -> None:
        from botocore.config import Config

        from .. import _boto

        self.account_id = account_id
        self.region = region
        self.root = Caller(f"arn:aws:iam::{account_id}:root", account_id, "root")
        self._root_keys = dict(root_credentials)
        self._moto_endpoint = moto_endpoint
        target = urlsplit(moto_endpoint)
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 80
        self._iam = _boto.client(
            "iam", endpoint_url=moto_endpoint, region=region, credentials={"access_key_id": "emulator", "secret_access_key": "emulator"},
            config=Config(retries={"max_attempts": 1}),
        )  # fmt: skip

    def close(self) -> None:
        self._iam.close()

    # -- who --------------------------------------------------------------------------------------
    def resolve(self, key_id: str) -> Credential:
        """The credential ``key_id`` belongs to; ``UnrecognizedClientException`` for an unknown or inactive key."""
        if key_id in self._root_keys:
            return Credential(self.root, self._root_keys[key_id])
        caller = self.caller(key_id)
        try:
            status, answer = call_internal(self._moto_endpoint, INTERNAL_ACCESS_KEY_SECRET, {"AccessKeyId": key_id}, region=self.region)
        except (OSError, ValueError):
            raise KMSInternalException("the emulator's IAM did not answer") from None
        if status != 200 or not isinstance(answer.get("SecretAccessKey"), str):
            raise UnrecognizedClientException(_INVALID_TOKEN)
        token = answer.get("SessionToken")
        if not isinstance(token, str):
            return Credential(caller, answer["SecretAccessKey"])
        session = replace(caller, session_policy=_optional_text(answer.get("SessionPolicy")), session_policy_arns=tuple(answer.get("SessionPolicyArns") or ()))
        return Credential(session, answer["SecretAccessKey"], token, _expiration(answer.get("Expiration")))

    def caller(self, key_id: str) -> Caller:
        if key_id in self._root_keys:
            return self.root
        arn, user_id = self._get_caller_identity(key_id)
        if user_id == _UNKNOWN_KEY_USER_ID and arn.endswith(":user/moto"):
            raise UnrecognizedClientException(_INVALID_TOKEN)
        if match := _SESSION_ARN.fullmatch(arn):
            return Caller(arn, match.group(1), "session", match.group(2))
        if match := _USER_ARN.fullmatch(arn):
            return Caller(arn, match.group(1), "user", match.group(2))
        # moto answered something this emulator does not model (say a federated user): refuse.
        raise UnrecognizedClientException(_INVALID_TOKEN)

    def _get_caller_identity(self, key_id: str) -> tuple[str, str]:
        """STS GetCallerIdentity sent to moto as ``key_id`` (moto does not check the signature)."""
        if not re.fullmatch(r"[\x21-\x7e]{1,128}", key_id) or "/" in key_id:
            raise UnrecognizedClientException(_INVALID_TOKEN)
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

    # -- principals named in key policies ---------------------------------------------------------
    def principal_exists(self, arn: str) -> bool:
        """Whether a user or role ARN names a user or role of moto's IAM, path and all.

        A principal in another account cannot be checked here, so it counts as not existing.
        """
        match = _PRINCIPAL_ARN.fullmatch(arn)
        if match is None or match.group(1) != self.account_id:
            return False
        kind, name = match.group(2), match.group(4)
        try:
            found = self._read("get_user", UserName=name)["User"] if kind == "user" else self._read("get_role", RoleName=name)["Role"]
        except _Missing:
            return False
        real = _PRINCIPAL_ARN.fullmatch(found.get("Arn", ""))
        return real is not None and (real.group(3) or "", real.group(4).lower()) == (match.group(3) or "", name.lower())

    # -- what their policies say ------------------------------------------------------------------
    def policies(self, caller: Caller) -> IdentityPolicies:
        """The caller's IAM policies by type (none for the root: it is not limited by IAM)."""
        if caller.is_root:
            return IdentityPolicies()
        try:
            documents = self._user_documents(caller.name) if caller.kind == "user" else self._role_documents(caller.name)
        except _Missing:
            return IdentityPolicies()  # the user or role no longer exists: no IAM policy allows anything
        try:
            session = self._session_documents(caller)
        except _Missing as missing:
            return IdentityPolicies(unreadable=(SESSION_POLICY, f"a managed session policy of {caller.arn} does not exist: {missing}"))
        return _parsed(caller, documents, session)

    def _user_documents(self, user: str) -> _Documents:
        iam = self._read
        documents = [iam("get_user_policy", UserName=user, PolicyName=n)["PolicyDocument"] for n in self._all("list_user_policies", "PolicyNames", UserName=user)]
        documents += [self._managed(p["PolicyArn"]) for p in self._all("list_attached_user_policies", "AttachedPolicies", UserName=user)]
        for group in self._all("list_groups_for_user", "Groups", UserName=user):
            name = group["GroupName"]
            documents += [iam("get_group_policy", GroupName=name, PolicyName=n)["PolicyDocument"] for n in self._all("list_group_policies", "PolicyNames", GroupName=name)]
            documents += [self._managed(p["PolicyArn"]) for p in self._all("list_attached_group_policies", "AttachedPolicies", GroupName=name)]
        boundary = iam("get_user", UserName=user)["User"].get("PermissionsBoundary")
        return _Documents(documents, self._managed(boundary["PermissionsBoundaryArn"]) if boundary else None)

    def _role_documents(self, role: str) -> _Documents:
        iam = self._read
        documents = [iam("get_role_policy", RoleName=role, PolicyName=n)["PolicyDocument"] for n in self._all("list_role_policies", "PolicyNames", RoleName=role)]
        documents += [self._managed(p["PolicyArn"]) for p in self._all("list_attached_role_policies", "AttachedPolicies", RoleName=role)]
        found = iam("get_role", RoleName=role)["Role"]
        boundary = found.get("PermissionsBoundary")
        return _Documents(documents, self._managed(boundary["PermissionsBoundaryArn"]) if boundary else None, found["Arn"])

    def _session_documents(self, caller: Caller) -> list[Any] | None:
        if caller.session_policy is None and not caller.session_policy_arns:
            return None
        documents: list[Any] = [caller.session_policy] if caller.session_policy is not None else []
        for arn in caller.session_policy_arns:
            if not arn.startswith("arn:"):
                raise _Missing(f"{arn!r} is not a policy ARN")
            documents.append(self._managed(arn))
        return documents

    def _managed(self, arn: str) -> Any:
        version = self._read("get_policy", PolicyArn=arn)["Policy"]["DefaultVersionId"]
        return self._read("get_policy_version", PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]

    def _read(self, method: str, **params: Any) -> Any:
        """One IAM read; ``_Missing`` if the entity is gone, ``KMSInternalException`` if IAM fails otherwise."""
        with _iam_errors():
            return getattr(self._iam, method)(**params)

    def _all(self, method: str, field: str, **params: Any) -> list:
        """Every item of a paginated IAM list call."""
        items: list = []
        with _iam_errors():
            for page in self._iam.get_paginator(method).paginate(**params):
                items.extend(page.get(field, []))
        return items


class _Missing(Exception):
    """An IAM entity (user, role, policy) that does not exist."""


def _no_such_entity(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "NoSuchEntity"


@contextlib.contextmanager
def _iam_errors() -> Iterator[None]:
    """moto's IAM errors as ours: ``_Missing`` for an entity that does not exist, else ``KMSInternalException``."""
    try:
        yield
    except ClientError as exc:
        if _no_such_entity(exc):
            raise _Missing(str(exc)) from None
        raise KMSInternalException(f"the emulator's IAM refused a read: {exc}") from None
    except BotoCoreError as exc:
        raise KMSInternalException(f"the emulator's IAM failed: {type(exc).__name__}") from None


def _parsed(caller: Caller, documents: _Documents, session: list[Any] | None) -> IdentityPolicies:
    """Parse every document; a policy the evaluator cannot read makes its type deny (fail closed)."""
    try:
        policies = tuple(IdentityPolicy.parse(_text(document)) for document in documents.policies)
        boundary = IdentityPolicy.parse(_text(documents.boundary)) if documents.boundary is not None else None
    except MalformedPolicyDocument as exc:
        return IdentityPolicies(unreadable=(IDENTITY_POLICY, f"an identity policy of {caller.arn} cannot be evaluated: {exc}"))
    try:
        session_policies = None if session is None else tuple(IdentityPolicy.parse(_text(document)) for document in session)
    except MalformedPolicyDocument as exc:
        return IdentityPolicies(unreadable=(SESSION_POLICY, f"a session policy of {caller.arn} cannot be evaluated: {exc}"))
    for kind, group in ((IDENTITY_POLICY, (*policies, *([boundary] if boundary else []))), (SESSION_POLICY, session_policies or ())):
        unknown = sorted(key for policy in group for key in unknown_condition_keys(policy))
        if unknown:
            return IdentityPolicies(unreadable=(kind, f"a {kind} of {caller.arn} tests {unknown[0]!r}, which the emulator cannot evaluate"))
    return IdentityPolicies(policies, boundary, session_policies, documents.role_arn)


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _expiration(value: Any) -> datetime.datetime | None:
    """moto's session expiration (ISO 8601, UTC); a session whose expiry cannot be read has expired."""
    if value is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def _text(document: Any) -> str:
    """botocore hands IAM policy documents over already decoded; the evaluator parses text."""
    if isinstance(document, str):
        return document
    if isinstance(document, Mapping):
        return json.dumps(document)
    raise MalformedPolicyDocument(f"policy document is {type(document).__name__}")
