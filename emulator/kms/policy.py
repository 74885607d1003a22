"""Evaluate AWS KMS key policies the way AWS does, and fail closed.

The emulated KMS checks the key policy on every call against a key: ``Decrypt`` with or without
``Recipient``, ``GenerateDataKey``, ``ReEncrypt*``, ``CreateGrant``, ... moto itself does not, and
its policy validator lets an unparseable policy through. This module parses a key policy strictly
(:meth:`KeyPolicy.parse`) and evaluates it against one request (:meth:`KeyPolicy.evaluate`).

AWS pages this follows:

* IAM policy evaluation logic (explicit Deny, then Allow, else implicit deny):
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
* Condition operators, missing keys, ``...IfExists``, ``Null``:
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
* Several operators / keys / values (AND, AND, OR; NOR for negated operators):
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_multi-value-conditions.html
* ``ForAnyValue:`` / ``ForAllValues:`` on multivalued keys:
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
* KMS condition keys for Nitro Enclaves (``kms:RecipientAttestation:ImageSha384``,
  ``kms:RecipientAttestation:PCR<n>``, compared with ``StringEqualsIgnoreCase`` in AWS's examples):
  https://docs.aws.amazon.com/kms/latest/developerguide/conditions-nitro-enclaves.html
* ``kms:EncryptionContext:<context-key>``:
  https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-encryption-context
* Key policy elements and limits (32 KiB, character set):
  https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-overview.html and
  https://docs.aws.amazon.com/kms/latest/APIReference/API_PutKeyPolicy.html

The subset implemented is what a key policy needs:

* Document: ``Version`` (required; ``"2012-10-17"`` or ``"2008-10-17"``), optional ``Id``,
  ``Statement`` (one object or a non-empty list). At most 32768 characters, AWS's character set.
* Statement: optional ``Sid`` (unique), ``Effect`` ``"Allow"``/``"Deny"``, ``Principal`` (required,
  as in every key policy statement), exactly one of ``Action``/``NotAction`` and of
  ``Resource``/``NotResource`` (AWS accepts a statement without them and ignores it; we refuse it),
  optional ``Condition``.
* Principal: ``"*"`` or ``{"AWS": str | [str]}`` with ``"*"``, a 12-digit account id,
  ``arn:aws:iam::<account>:root``, ``arn:aws:iam::<account>:user/<name>``,
  ``arn:aws:iam::<account>:role/<name>`` or ``arn:aws:sts::<account>:assumed-role/<role>/<session>``.
  How a statement covers a caller is its :attr:`Decision.grant`, which tells the caller of
  :meth:`KeyPolicy.evaluate` which IAM policies must also allow
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html,
  "The effect of permissions boundaries" / "session policies"):

  - ``"direct"``: the statement names exactly the caller — a user's ARN, a role session's ARN, or
    for the account root its account. The key policy alone allows (only an explicit Deny elsewhere
    refuses).
  - ``"bounded"``: it names the role of a session (its real ARN, path included, as IAM reports
    it: :attr:`AuthorizationRequest.role_arn`), or ``"*"`` for a caller other than the root. The
    caller's permissions boundary and session policies must allow too; an identity policy need not.
    (For ``"*"`` AWS does not say; this is the strict reading.)
  - ``"account"``: it names the caller's account (the bare id or ``:root``). The caller's identity
    policies must allow, within boundary and session policies
    (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html#key-policy-default-allow-root-enable-iam).

  A Deny naming an account applies to every principal of it. ``NotPrincipal`` and other
  principal types (``Service``, ``Federated``, ...) are refused as unsupported.
* Identity policies (:class:`IdentityPolicy`): the same grammar without ``Principal``; statements
  whose actions cannot name a ``kms:`` action are ignored, so an IAM role's S3 or EC2 statements
  do not need the KMS evaluator.
* Action: case-insensitive, ``*`` and ``?`` wildcards. Resource: case-sensitive, same wildcards.
* Condition operators: ``StringEquals``, ``StringNotEquals``, ``StringEqualsIgnoreCase``,
  ``StringNotEqualsIgnoreCase``, ``StringLike``, ``StringNotLike``, ``Bool``, each also with
  ``IfExists``; ``Null``; the ``ForAnyValue:`` and ``ForAllValues:`` prefixes. Condition keys are
  case-insensitive, values compare as the operator says (so hex PCRs compare case-insensitively
  only under the ``...IgnoreCase`` operators). Numeric, Date, IP, ARN and Binary operators and
  policy variables (``${...}``) are not implemented and are refused.

Choices where AWS leaves room, each made so a ZeroCopy key policy cannot be read more loosely than
it was written:

* A missing key: a positive operator is false, a negated one (``StringNot...``) true, any
  ``...IfExists`` true; ``ForAllValues:`` is true (vacuously, as AWS documents), ``ForAnyValue:``
  false. An empty sequence in the request context counts as a missing key.
* A list-valued request key without a set prefix: a positive operator holds if any request value
  matches any policy value (like ``ForAnyValue:``); a negated operator is exactly its negation (no
  request value matches any policy value). For a single value both are the plain IAM rules, and a
  negated operator with several policy values is their NOR, as AWS documents.
* Two request condition keys that differ only by case (say an encryption context with both
  ``Name`` and ``name``) make :meth:`KeyPolicy.evaluate` deny: it cannot tell which one AWS would
  test.

Fail closed: anything unknown or mistyped (a field, an operator, an ``Effect``, a value type, a
duplicate JSON key) raises :class:`MalformedPolicyDocument` at parse time instead of being ignored,
because an ignored Deny statement or condition would widen access.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "AuthorizationRequest",
    "Decision",
    "IdentityPolicy",
    "KeyPolicy",
    "MalformedPolicyDocument",
    "MAX_POLICY_LENGTH",
]

#: PutKeyPolicy's limit on the policy document, in characters.
MAX_POLICY_LENGTH = 32768

_VERSIONS = frozenset({"2012-10-17", "2008-10-17"})
_TOP_LEVEL_FIELDS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_FIELDS = frozenset(
    {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
# PutKeyPolicy: printable ASCII, printable Latin-1 supplement, tab, LF, CR.
_ALLOWED_CHARS = re.compile(r"[\t\n\r\x20-\x7e\xa0-\xff]*")
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_PARTITION = r"arn:aws(?:-cn|-us-gov)?"
_NAME = r"[A-Za-z0-9_+=,.@-]+"  # IAM user, role and session names
_ROOT_ARN = re.compile(_PARTITION + r":iam::([0-9]{12}):root")
# Groups: account, "user" or "role", path between the kind and the name (without its slashes), name.
_USER_OR_ROLE_ARN = re.compile(_PARTITION + rf":iam::([0-9]{{12}}):(user|role)/(?:([A-Za-z0-9_+=,.@/-]*)/)?({_NAME})")
_SESSION_ARN = re.compile(_PARTITION + rf":sts::([0-9]{{12}}):assumed-role/({_NAME})/({_NAME})")
_ACTION_PATTERN = re.compile(r"\*|[A-Za-z0-9-]+:[A-Za-z0-9*?]+")
_REQUEST_ACTION = re.compile(r"[A-Za-z0-9-]+:[A-Za-z0-9]+")

_STRING_OPERATORS = frozenset(
    {
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
    }
)
_NEGATED_OPERATORS = frozenset({"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike"})
_SET_PREFIXES = {"ForAnyValue:": "any", "ForAllValues:": "all"}


class MalformedPolicyDocument(ValueError):
    """The key policy cannot be parsed or uses something this evaluator does not implement.

    The message names the problem and where it is (``Statement[1].Condition: ...``). The emulated
    KMS answers it with ``MalformedPolicyDocumentException``, as AWS does.
    """


@dataclass(frozen=True)
class AuthorizationRequest:
    """One call against a key, as the key policy sees it.

    ``context`` holds the condition keys present in the request, e.g.
    ``{"kms:RecipientAttestation:ImageSha384": "ab12...", "kms:EncryptionContext:zerocopy:name": "x"}``.
    A value is a string, or a sequence of strings for a multivalued key (an empty sequence counts as
    absent). The mapping is copied on construction, so later changes by the caller do not leak in.

    ``principal`` is the caller's ARN as AWS reports it (``arn:aws:iam::<account>:root``,
    ``arn:aws:iam::<account>:user/<path/><name>`` or ``arn:aws:sts::<account>:assumed-role/<role>/<session>``),
    in ``account_id``; empty means the account root.

    ``role_arn``: for a role session, the role's ARN as IAM reports it, path included (a session
    ARN has no path). Empty: the role is unknown (say, deleted), and no statement naming a role
    covers the session.
    """

    action: str
    resource: str
    account_id: str
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    principal: str = ""
    role_arn: str = ""
    # Condition keys lower-cased, each with a tuple of values; None if two keys differ only by case.
    _values: Mapping[str, tuple[str, ...]] | None = field(init=False, repr=False, compare=False)
    _caller: _Principal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("action", "resource", "account_id", "principal", "role_arn"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be str, not {type(getattr(self, name)).__name__}")
        if not _REQUEST_ACTION.fullmatch(self.action):
            raise ValueError(f"action must look like 'kms:Decrypt', not {_show(self.action)}")
        if not _ACCOUNT_ID.fullmatch(self.account_id):
            raise ValueError(f"account_id must be 12 digits, not {_show(self.account_id)}")
        caller = _Principal("account", self.account_id) if not self.principal else _caller_principal(self.principal, self.role_arn)
        if caller.account != self.account_id:
            raise ValueError(f"principal {_show(self.principal)} is not in account {self.account_id}")
        object.__setattr__(self, "_caller", caller)
        if not isinstance(self.context, Mapping):
            raise TypeError(f"context must be a mapping, not {type(self.context).__name__}")
        snapshot: dict[str, str | tuple[str, ...]] = {}
        values: dict[str, tuple[str, ...]] | None = {}
        for key, value in self.context.items():
            if not isinstance(key, str):
                raise TypeError(f"context keys must be str, not {type(key).__name__}")
            if isinstance(value, str):
                snapshot[key] = value
                items: tuple[str, ...] = (value,)
            elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
                snapshot[key] = items = tuple(value)
            else:
                raise TypeError(f"context[{key!r}] must be str or a sequence of str")
            if values is not None:
                if key.lower() in values:
                    # e.g. encryption context {"Name": ..., "name": ...}: which one would a policy
                    # on kms:EncryptionContext:name see? evaluate() denies rather than guess.
                    values = None
                elif items:
                    values[key.lower()] = items
        object.__setattr__(self, "context", MappingProxyType(snapshot))
        object.__setattr__(self, "_values", None if values is None else MappingProxyType(values))


@dataclass(frozen=True)
class Decision:
    """The outcome of :meth:`KeyPolicy.evaluate`; ``reason`` names the deciding statement.

    Truthiness follows ``allowed``, so ``if policy.evaluate(request):`` cannot fail open.
    ``grant``: how the allowing statement covers the caller (``"direct"``, ``"bounded"`` or
    ``"account"``, see the module docstring), which says what else AWS requires to allow.
    ``denied`` tells an explicit Deny from "nothing allows it".
    """

    allowed: bool
    reason: str
    grant: Grant | None = None
    denied: bool = field(default=False, compare=False)

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def via_account(self) -> bool:
        """Allowed only through the caller's account: the caller's IAM policies decide."""
        return self.grant == "account"


# --- parsed form ------------------------------------------------------------------------------


Grant = Literal["direct", "bounded", "account"]
_GRANT_ORDER: tuple[Grant, ...] = ("direct", "bounded", "account")  # the first a statement gives wins


@dataclass(frozen=True)
class _Principal:
    """A principal named in a statement, or the caller. ``kind``: any, account, user, role, session.

    Names compare case-insensitively (IAM user and role names are unique regardless of case);
    paths exactly. ``path`` is a user's or role's path (``"/"`` or ``"/team/a/"``); for a session
    caller its role's path, ``None`` when the role is unknown.
    """

    kind: Literal["any", "account", "user", "role", "session"]
    account: str = ""
    name: str = ""  # user or role name, lower-cased
    session: str = ""
    path: str | None = "/"
    arn: str = field(default="", compare=False)  # as a statement wrote it (user and role principals)

    def matches(self, caller: _Principal) -> Grant | None:
        """How this statement principal covers ``caller`` (an account, a user or a session)."""
        if self.kind == "any":
            return "direct" if caller.kind == "account" else "bounded"
        if self.account != caller.account:
            return None
        if self.kind == "account":
            return "direct" if caller.kind == "account" else "account"
        if self.kind == "user":
            return "direct" if caller.kind == "user" and (caller.path, caller.name) == (self.path, self.name) else None
        if self.kind == "role":
            return "bounded" if caller.kind == "session" and (caller.path, caller.name) == (self.path, self.name) else None
        same_session = caller.kind == "session" and (caller.name, caller.session) == (self.name, self.session)
        return "direct" if same_session else None


def _path(inner: str | None) -> str:
    return f"/{inner}/" if inner else "/"


def _caller_principal(arn: str, role_arn: str) -> _Principal:
    if match := _ROOT_ARN.fullmatch(arn):
        return _Principal("account", match.group(1))
    if (match := _USER_OR_ROLE_ARN.fullmatch(arn)) and match.group(2) == "user":
        return _Principal("user", match.group(1), match.group(4).lower(), path=_path(match.group(3)))
    if match := _SESSION_ARN.fullmatch(arn):
        account, role, session = match.group(1), match.group(2).lower(), match.group(3)
        return _Principal("session", account, role, session, path=_role_path(role_arn, account, role))
    raise ValueError(f"principal must be an account root, user or assumed-role session ARN, not {_show(arn)}")


def _role_path(role_arn: str, account: str, role: str) -> str | None:
    """The path of the session's role from its ARN; ``None`` when the role is unknown."""
    if not role_arn:
        return None
    match = _USER_OR_ROLE_ARN.fullmatch(role_arn)
    if not match or match.group(2) != "role" or (match.group(1), match.group(4).lower()) != (account, role):
        raise ValueError(f"role_arn {_show(role_arn)} is not the ARN of the session's role")
    return _path(match.group(3))


@dataclass(frozen=True)
class _Test:
    """One (operator, condition key) pair of a Condition block, with its policy values."""

    operator: str  # as written, for messages
    base: str  # e.g. "StringEquals", "Bool", "Null"
    set_operator: Literal["any", "all"] | None
    if_exists: bool
    key: str  # lower-cased: condition keys are case-insensitive
    values: tuple[str, ...]

    def holds(self, present: Mapping[str, tuple[str, ...]]) -> bool:
        request_values = present.get(self.key)
        if self.base == "Null":
            # "true": the key must be absent; "false": present. Several values OR'd.
            return any((request_values is None) == (v == "true") for v in self.values)
        negated = self.base in _NEGATED_OPERATORS
        if request_values is None:
            if self.if_exists:
                return True
            if self.set_operator == "all":
                return True  # ForAllValues over an empty set is vacuously true (AWS documents it)
            if self.set_operator == "any":
                return False
            return negated  # "StringNotEquals" on a missing key is true, "StringEquals" false
        matches = [self._matches(v) for v in request_values]
        if self.set_operator == "all":
            return all(not m for m in matches) if negated else all(matches)
        if self.set_operator == "any":
            return any(not m for m in matches) if negated else any(matches)
        # No set operator: a positive operator holds if any request value matches any policy value
        # (like ForAnyValue); a negated one is exactly its negation, i.e. no request value matches
        # any policy value (NOR). For a single-valued key both are plain IAM semantics.
        return not any(matches) if negated else any(matches)

    def _matches(self, request_value: str) -> bool:
        """Whether one request value matches any policy value under the positive operator."""
        base = self.base
        if base in ("StringEquals", "StringNotEquals"):
            return request_value in self.values
        if base in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
            lowered = request_value.lower()
            return any(lowered == v.lower() for v in self.values)
        if base in ("StringLike", "StringNotLike"):
            return any(_glob(v, request_value) for v in self.values)
        if base == "Bool":
            return request_value.lower() in self.values  # policy values normalised to lower case
        raise AssertionError(f"unhandled operator {base}")  # parse() admits no other


@dataclass(frozen=True)
class _Statement:
    label: str  # "statement 'Sid'" or "Statement[i]", for Decision.reason
    effect: Literal["Allow", "Deny"]
    principals: tuple[_Principal, ...]
    actions: tuple[str, ...]  # lower-cased patterns
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[_Test, ...]

    def applies(self, request: AuthorizationRequest, present: Mapping[str, tuple[str, ...]]) -> Grant | None:
        """Whether the statement covers the request, and through which principal match."""
        matches = {p.matches(request._caller) for p in self.principals}
        grant = next((g for g in _GRANT_ORDER if g in matches), None)
        if grant is None or not self._covers(request, present):
            return None
        return grant

    def _covers(self, request: AuthorizationRequest, present: Mapping[str, tuple[str, ...]]) -> bool:
        action = request.action.lower()
        if any(_glob(p, action) for p in self.actions) == self.not_action:
            return False
        if any(_glob(p, request.resource) for p in self.resources) == self.not_resource:
            return False
        return all(test.holds(present) for test in self.conditions)


class _PolicyDocument:
    """A parsed, immutable policy document. Build it with :meth:`parse`."""

    __slots__ = ("version", "policy_id", "_statements")
    _principal_required = True
    _kind = "policy"

    def __init__(self, version: str, policy_id: str | None, statements: tuple[_Statement, ...]) -> None:
        # One parsed policy may serve several request threads: no attribute changes after this.
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "policy_id", policy_id)
        object.__setattr__(self, "_statements", statements)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot delete {name!r}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.version} with {len(self._statements)} statement(s)>"

    @property
    def condition_keys(self) -> frozenset[str]:
        """Every condition key the policy tests, lower-cased.

        A key the request context never carries counts as absent, as on AWS, so a Deny that tests
        a key the emulator does not model never fires. Callers can refuse such policies up front.
        """
        return frozenset(t.key for s in self._statements for t in s.conditions)

    @property
    def principal_arns(self) -> frozenset[str]:
        """Every user and role ARN the statements name, as written (AWS requires each to exist)."""
        return frozenset(p.arn for s in self._statements for p in s.principals if p.kind in ("user", "role"))

    @classmethod
    def parse(cls, text: str | bytes) -> Any:
        """Parse a policy document; raise :class:`MalformedPolicyDocument` naming the problem."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedPolicyDocument(f"policy is not UTF-8: {exc.reason}") from None
        elif not isinstance(text, str):
            raise TypeError(f"policy text must be str or bytes, not {type(text).__name__}")
        if not text.strip():
            raise MalformedPolicyDocument("policy is empty")
        if len(text) > MAX_POLICY_LENGTH:
            raise MalformedPolicyDocument(f"policy is {len(text)} characters, the limit is {MAX_POLICY_LENGTH}")
        if not _ALLOWED_CHARS.fullmatch(text):
            bad = next(c for c in text if not _ALLOWED_CHARS.fullmatch(c))
            raise MalformedPolicyDocument(f"policy contains a character KMS does not allow: U+{ord(bad):04X}")
        try:
            document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except MalformedPolicyDocument:
            raise
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise MalformedPolicyDocument(f"policy is not JSON: {_first_line(exc)}") from None
        return cls._from_document(document)

    @classmethod
    def _from_document(cls, document: Any) -> Any:
        if not isinstance(document, dict):
            raise MalformedPolicyDocument(f"policy must be a JSON object, not {_json_type(document)}")
        _reject_unknown(document, _TOP_LEVEL_FIELDS, "policy")
        if "Version" not in document:
            raise MalformedPolicyDocument("policy: Version is missing")
        version = document["Version"]
        if not isinstance(version, str) or version not in _VERSIONS:
            raise MalformedPolicyDocument(f"Version must be '2012-10-17' or '2008-10-17', not {_show(version)}")
        policy_id = document.get("Id")
        if policy_id is not None and not isinstance(policy_id, str):
            raise MalformedPolicyDocument(f"Id must be a string, not {_json_type(policy_id)}")
        if "Statement" not in document:
            raise MalformedPolicyDocument("policy: Statement is missing")
        raw = document["Statement"]
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list):
            raise MalformedPolicyDocument(f"Statement must be an object or a list, not {_json_type(raw)}")
        if not raw:
            raise MalformedPolicyDocument("Statement is an empty list")
        statements = tuple(
            _parse_statement(s, i, version, principal_required=cls._principal_required)
            for i, s in enumerate(raw)
            if cls._relevant(s)
        )
        sids = [s["Sid"] for s in raw if isinstance(s, dict) and isinstance(s.get("Sid"), str) and s["Sid"]]
        duplicates = sorted({sid for sid in sids if sids.count(sid) > 1})
        if duplicates:
            raise MalformedPolicyDocument(f"duplicate Sid {_show(duplicates[0])}")
        return cls(version, policy_id, statements)

    @staticmethod
    def _relevant(raw: Any) -> bool:
        return True

    def evaluate(self, request: AuthorizationRequest) -> Decision:
        """Decide one request: an explicit Deny wins, else an Allow allows, else implicit deny.

        Of the allowing statements the one covering the caller most directly decides
        (:attr:`Decision.grant`: ``"direct"``, then ``"bounded"``, then ``"account"``).
        """
        if not isinstance(request, AuthorizationRequest):
            raise TypeError(f"request must be an AuthorizationRequest, not {type(request).__name__}")
        present = request._values
        if present is None:
            return Decision(False, "request context has condition keys that differ only by case")
        allowing: dict[Grant, _Statement] = {}
        for statement in self._statements:
            grant = statement.applies(request, present)
            if grant is None:
                continue
            if statement.effect == "Deny":
                return Decision(False, f"explicitly denied by {statement.label}", denied=True)
            allowing.setdefault(grant, statement)
        for grant in _GRANT_ORDER:
            if grant in allowing:
                if not self._principal_required:  # an identity policy: it applies to its holder, whoever that is
                    return Decision(True, f"allowed by {allowing[grant].label}")
                return Decision(True, f"allowed by {allowing[grant].label}{_GRANT_WORDS[grant]}", grant=grant)
        return Decision(False, f"no statement allows {request.action}")


_GRANT_WORDS: Mapping[Grant, str] = {
    "direct": "",
    "bounded": " (within the caller's permissions boundary and session policies)",
    "account": " (the account: IAM decides)",
}


class KeyPolicy(_PolicyDocument):
    """A parsed, immutable key policy: every statement names a ``Principal``."""

    __slots__ = ()


class IdentityPolicy(_PolicyDocument):
    """A parsed, immutable IAM identity policy (a user's or role's inline or managed policy).

    Statements have no ``Principal`` (they apply to whoever holds the policy). A statement whose
    ``Action`` names only other services is dropped before parsing: it can never decide a KMS
    request, and its conditions may use operators this evaluator does not implement. Everything
    that could apply to ``kms:`` actions is parsed as strictly as a key policy.
    https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_identity-vs-resource.html
    """

    __slots__ = ()
    _principal_required = False

    @staticmethod
    def _relevant(raw: Any) -> bool:
        if not isinstance(raw, dict) or "NotAction" in raw or "Action" not in raw:
            return True  # parse it, and let the parser say what is wrong
        actions = raw["Action"] if isinstance(raw["Action"], list) else [raw["Action"]]
        if not all(isinstance(a, str) for a in actions):
            return True
        return any(a == "*" or _glob(a.split(":", 1)[0].lower(), "kms") for a in actions)


# --- parsing helpers ---------------------------------------------------------------------------


def _parse_statement(raw: Any, index: int, version: str, *, principal_required: bool = True) -> _Statement:
    where = f"Statement[{index}]"
    if not isinstance(raw, dict):
        raise MalformedPolicyDocument(f"{where} must be an object, not {_json_type(raw)}")
    _reject_unknown(raw, _STATEMENT_FIELDS, where)
    if "NotPrincipal" in raw:
        raise MalformedPolicyDocument(f"{where}: NotPrincipal is not supported")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise MalformedPolicyDocument(f"{where}.Sid must be a string, not {_json_type(sid)}")
    label = f"statement '{sid}'" if sid else where
    if "Effect" not in raw:
        raise MalformedPolicyDocument(f"{where}: Effect is missing")
    effect = raw["Effect"]
    if effect not in ("Allow", "Deny"):
        raise MalformedPolicyDocument(f"{where}.Effect must be 'Allow' or 'Deny', not {_show(effect)}")
    if principal_required:
        if "Principal" not in raw:
            raise MalformedPolicyDocument(f"{where}: Principal is missing (key policies require one)")
        principals = _parse_principal(raw["Principal"], where)
    elif "Principal" in raw:
        raise MalformedPolicyDocument(f"{where}: an identity policy has no Principal")
    else:
        principals = (_Principal("any"),)
    not_action, actions = _one_of(raw, "Action", "NotAction", where)
    for action in actions:
        if not _ACTION_PATTERN.fullmatch(action):
            raise MalformedPolicyDocument(f"{where}: invalid action {_show(action)}")
    not_resource, resources = _one_of(raw, "Resource", "NotResource", where)
    for resource in resources:
        if resource != "*" and not resource.startswith("arn:"):
            raise MalformedPolicyDocument(f"{where}: resource must be '*' or an ARN, not {_show(resource)}")
        _reject_variables(resource, version, where)
    conditions = _parse_condition(raw.get("Condition", {}), where, version)
    return _Statement(
        label=label,
        effect=effect,
        principals=principals,
        actions=tuple(a.lower() for a in actions),
        not_action=not_action,
        resources=tuple(resources),
        not_resource=not_resource,
        conditions=conditions,
    )


def _parse_principal(raw: Any, where: str) -> tuple[_Principal, ...]:
    if raw == "*":
        return (_Principal("any"),)
    if not isinstance(raw, dict):
        raise MalformedPolicyDocument(f"{where}.Principal must be '*' or an object, not {_show(raw)}")
    if not raw:
        raise MalformedPolicyDocument(f"{where}.Principal is empty")
    unsupported = sorted(set(raw) - {"AWS"})
    if unsupported:
        raise MalformedPolicyDocument(f"{where}.Principal: principal type {_show(unsupported[0])} is not supported")
    return tuple(_statement_principal(p, where) for p in _strings(raw["AWS"], f"{where}.Principal.AWS"))


def _statement_principal(principal: str, where: str) -> _Principal:
    if principal == "*":
        return _Principal("any")
    if _ACCOUNT_ID.fullmatch(principal):
        return _Principal("account", principal)
    if match := _ROOT_ARN.fullmatch(principal):
        return _Principal("account", match.group(1))
    if match := _USER_OR_ROLE_ARN.fullmatch(principal):
        return _Principal(match.group(2), match.group(1), match.group(4).lower(), path=_path(match.group(3)), arn=principal)  # type: ignore[arg-type]
    if match := _SESSION_ARN.fullmatch(principal):
        return _Principal("session", match.group(1), match.group(2).lower(), match.group(3))
    raise MalformedPolicyDocument(f"{where}.Principal.AWS: invalid principal {_show(principal)}")


def _one_of(raw: dict, name: str, negated: str, where: str) -> tuple[bool, list[str]]:
    if name in raw and negated in raw:
        raise MalformedPolicyDocument(f"{where}: both {name} and {negated} given")
    if name in raw:
        return False, _strings(raw[name], f"{where}.{name}")
    if negated in raw:
        return True, _strings(raw[negated], f"{where}.{negated}")
    raise MalformedPolicyDocument(f"{where}: {name} or {negated} is missing")


def _parse_condition(raw: Any, where: str, version: str) -> tuple[_Test, ...]:
    where = f"{where}.Condition"
    if not isinstance(raw, dict):
        raise MalformedPolicyDocument(f"{where} must be an object, not {_json_type(raw)}")
    tests = []
    for operator, block in raw.items():
        base, set_operator, if_exists = _parse_operator(operator, where)
        here = f"{where}.{operator}"
        if not isinstance(block, dict):
            raise MalformedPolicyDocument(f"{here} must be an object, not {_json_type(block)}")
        if not block:
            raise MalformedPolicyDocument(f"{here} has no condition keys")
        for key, value in block.items():
            if ":" not in key.strip(":"):
                raise MalformedPolicyDocument(f"{here}: invalid condition key {_show(key)}")
            values = _condition_values(value, f"{here}.{key}")
            for v in values:
                _reject_variables(v, version, here)
            if base in ("Bool", "Null"):
                values = tuple(v.lower() for v in values)
                if not set(values) <= {"true", "false"}:
                    raise MalformedPolicyDocument(f"{here}.{key}: {base} takes 'true' or 'false'")
            tests.append(_Test(operator, base, set_operator, if_exists, key.lower(), values))
    return tuple(tests)


def _parse_operator(operator: str, where: str) -> tuple[str, Literal["any", "all"] | None, bool]:
    base, set_operator = operator, None
    for prefix, kind in _SET_PREFIXES.items():
        if base.startswith(prefix):
            base, set_operator = base[len(prefix) :], kind
            break  # one prefix at most: "ForAnyValue:ForAllValues:..." stays unknown
    if_exists = base.endswith("IfExists")
    if if_exists:
        base = base[: -len("IfExists")]
    known = base in _STRING_OPERATORS or base == "Bool" or (base == "Null" and not if_exists)
    if not known:
        raise MalformedPolicyDocument(f"{where}: unknown or unsupported condition operator {_show(operator)}")
    if base == "Null" and set_operator is not None:
        raise MalformedPolicyDocument(f"{where}: {_show(operator)}: Null takes no set operator")
    return base, set_operator, if_exists


def _condition_values(raw: Any, where: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise MalformedPolicyDocument(f"{where} has no values")
    values = []
    for item in items:
        # JSON true/false and integers are written as strings by AWS; floats and null are ambiguous.
        if isinstance(item, bool):
            values.append("true" if item else "false")
        elif isinstance(item, (str, int)):
            values.append(str(item))
        else:
            raise MalformedPolicyDocument(f"{where}: a condition value must be a string, not {_json_type(item)}")
    return tuple(values)


def _strings(raw: Any, where: str) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise MalformedPolicyDocument(f"{where} is an empty list")
    for item in items:
        if not isinstance(item, str) or not item:
            raise MalformedPolicyDocument(f"{where} must hold non-empty strings, not {_show(item)}")
    return items


def _reject_unknown(raw: dict, allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise MalformedPolicyDocument(f"{where}: unknown field {_show(unknown[0])}")


def _reject_variables(value: str, version: str, where: str) -> None:
    # Under 2012-10-17 AWS substitutes ${...}; comparing it literally would differ from AWS.
    if version == "2012-10-17" and "${" in value:
        raise MalformedPolicyDocument(f"{where}: policy variables are not supported ({_show(value)})")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # json keeps the last one silently; a reviewer would read the first.
            raise MalformedPolicyDocument(f"duplicate JSON key {_show(key)}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise MalformedPolicyDocument(f"policy is not JSON: {name} is not a JSON value")


# --- small utilities ---------------------------------------------------------------------------


def _glob(pattern: str, text: str) -> bool:
    """IAM wildcard match: ``*`` any run of characters, ``?`` one character, nothing else special.

    Backtracks only to the last ``*`` (no regex), so a hostile pattern costs at most
    len(pattern) * len(text) steps.
    """
    p = t = 0
    star, mark = -1, 0
    while t < len(text):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[t]):
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:120]
