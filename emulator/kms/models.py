"""The attesting KMS: every call authorized as AWS authorizes it, and ``Recipient`` on five operations.

moto keeps the keys and does the cryptography; this model sits in front of it and adds what moto
lacks. For every operation it finds the keys the request touches (``Decrypt`` and ``ReEncrypt``
find theirs from the ciphertext; aliases resolve to their key), evaluates the caller's access the
way AWS does (the key policy; the caller's identity policies, permissions boundary and session
policies as far as the key policy leaves it to them; IAM alone for operations on no key; an
explicit Deny anywhere wins), then the key's state, usage and encryption algorithm, before moto
sees the request. A new key policy (``CreateKey``, ``PutKeyPolicy``) must name principals that
exist and pass AWS's lockout safety check. moto alone evaluates none of this: its plain ``Decrypt``
returns the plaintext to anyone.

``Recipient`` (``Decrypt``, ``GenerateDataKey``, ``GenerateDataKeyPair``, ``GenerateRandom``,
``DeriveSharedSecret``): the attestation document is verified with the same verifier bots use
(:func:`zerocopy.attestation.verify`, against the emulator's root), its measurements become the
``kms:RecipientAttestation:ImageSha384`` / ``kms:RecipientAttestation:PCR<n>`` condition keys, and
the secret is returned only as ``CiphertextForRecipient`` (CMS EnvelopedData, as real KMS does) to
the document's RSA key, never as a plaintext field.

https://docs.aws.amazon.com/kms/latest/developerguide/services-nitro-enclaves.html
https://docs.aws.amazon.com/kms/latest/developerguide/determining-access.html
https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from zerocopy.attestation import AttestationError, verify

from .cms import build_ciphertext_for_recipient
from .conditions import account_keys, attestation_keys, principal_keys, encryption_context_keys, grant_constraint_keys, unknown_condition_keys
from .exceptions import (
    AccessDeniedException,
    CustomKeyStoreNotFoundException,
    DryRunOperationException,
    ExpiredTokenException,
    IncorrectKeyException,
    KMSInternalException,
    KmsException,
    MalformedPolicyDocumentException,
    NotFoundException,
    SerializationException,
    UnrecognizedClientException,
    ValidationException,
)
from .identity import IDENTITY_POLICY, PERMISSIONS_BOUNDARY, SESSION_POLICY, Caller, Credential, Identities
from .moto_extensions import INTERNAL_CIPHERTEXT_KEY_ID, call_internal
from .operations import IAM_ONLY, encryption_algorithm_error, key_state_error, key_usage_error
from .policy import AuthorizationRequest, Grant, KeyPolicy, MalformedPolicyDocument
from .sigv4 import check_scope, parse_authorization, verify_signature

__all__ = ["AttestingKms", "KeyInfo", "MotoError"]

RECIPIENT_ALGORITHM = "RSAES_OAEP_SHA_256"
#: The RSA sizes a Nitro enclave's recipient key may have (aws-nitro-enclaves-sdk-c's ``aws_rsa_key_size``).
RECIPIENT_RSA_SIZES = (2048, 3072, 4096)
_DRY_RUN = "The request would have succeeded, but the DryRun option is set."
_INCORRECT_KEY = "The key ID in the request does not identify a CMK that can perform this operation."
_INVALID_TOKEN = "The security token included in the request is invalid."
_EXPIRED_TOKEN = "The security token included in the request is expired"
_LOCKOUT = "The new key policy will not allow you to update the key policy in the future."
_INVALID_PRINCIPALS = "Policy contains a statement with one or more invalid principals."
RESOURCE_POLICY = "resource-based policy"
#: What else must allow, by how the key policy covers the caller (policy.Decision.grant).
_ALSO_NEEDED: Mapping[Grant, tuple[str, ...]] = {
    "direct": (),
    "bounded": (PERMISSIONS_BOUNDARY, SESSION_POLICY),
    "account": (IDENTITY_POLICY, PERMISSIONS_BOUNDARY, SESSION_POLICY),
}
_IAM_ONLY_NEEDED = (IDENTITY_POLICY, PERMISSIONS_BOUNDARY, SESSION_POLICY)
#: The resource CreateKey's lockout check evaluates against: the key does not exist yet, so no
#: statement naming an existing key can cover it, and ``*`` or ``key/*`` can.
_NEW_KEY_ID = "new-key"
#: moto does not check the signatures of the emulator's own calls; these keys name no one.
_MOTO_CREDENTIALS = {"access_key_id": "emulator", "secret_access_key": "emulator"}


class MotoError(KmsException):
    """An error moto returned, passed on with its own code."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        if code in (AccessDeniedException.code, SerializationException.code):
            self.message_key = "Message"  # as KMS spells it for these two


@dataclass(frozen=True)
class KeyInfo:
    """What authorization needs to know about a key (from ``DescribeKey``)."""

    arn: str
    state: str
    usage: str | None
    spec: str | None
    encryption_algorithms: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Touch:
    """One key a request touches: the action evaluated on it, with which condition keys.

    ``algorithm``: the encryption algorithm the request asks of this key, if the operation takes one.
    """

    key: KeyInfo
    action: str
    context: dict[str, Any]
    check_state: bool = True
    algorithm: str | None = None


class AttestingKms:
    """One emulator's KMS state: moto underneath, the attestation roots, the account, its root keys.

    ``root_credentials`` maps the access keys that act as the account root (the operator's client,
    ``Emulator.kms``) to their secret keys; every other key is resolved through moto's IAM and STS.
    """

    def __init__(
        self,
        moto_endpoint: str,
        *,
        attestation_roots: list[bytes],
        account_id: str = "123456789012",
        region: str = "us-east-1",
        root_credentials: Mapping[str, str] | None = None,
    ) -> None:
        from botocore.config import Config

        from .. import _boto

        self.attestation_roots = list(attestation_roots)
        self.account_id = account_id
        self.region = region
        self.moto_endpoint = moto_endpoint
        self._moto = _boto.client(
            "kms", endpoint_url=moto_endpoint, region=region, credentials=_MOTO_CREDENTIALS, config=Config(retries={"max_attempts": 1})
        )
        self.identities = Identities(moto_endpoint, account_id=account_id, region=region, root_credentials=root_credentials or {})
        self._lock = threading.Lock()

    @property
    def root(self) -> Caller:
        return self.identities.root

    def close(self) -> None:
        self._moto.close()
        self.identities.close()

    # -- the front door -----------------------------------------------------------------------
    def identify(self, header: Callable[[str], list[str]], body: bytes, *, method: str = "POST", path: str = "/") -> Caller:
        """The caller of a request, from its SigV4 signature, as AWS authenticates it.

        ``header(name)`` returns every value of a request header (case-insensitive). Refuses a
        credential scope of another region or service and a wrong signature
        (``InvalidSignatureException``), an unknown access key or a session token that does not
        go with it (``UnrecognizedClientException``), and an expired session (``ExpiredTokenException``).
        """
        authorization = parse_authorization(next(iter(header("authorization")), None), has_date=bool(header("x-amz-date") or header("date")))
        check_scope(authorization, region=self.region, service="kms")
        credential = self.identities.resolve(authorization.access_key_id)
        _check_token(credential, header("x-amz-security-token"))
        verify_signature(authorization, credential.secret_access_key, method=method, path=path, header=header, body=body)
        return credential.caller

    def handle(self, operation: str, params: dict, caller: Caller) -> dict | None:
        """Answer ``operation`` (a dict), or authorize it and return ``None``: pass it to moto."""
        answered_here: dict[str, Callable[[dict, Caller], dict]] = {"Decrypt": self.decrypt, "GenerateRandom": self.generate_random}
        with_recipient: dict[str, Callable[[dict, Caller], dict]] = {
            "GenerateDataKey": self.generate_data_key,
            "GenerateDataKeyPair": self.generate_data_key_pair,
            "DeriveSharedSecret": self.derive_shared_secret,
        }
        if operation in answered_here:
            return answered_here[operation](params, caller)
        if operation in with_recipient and params.get("Recipient") is not None:
            return with_recipient[operation](params, caller)
        self.authorize_request(operation, params, caller)
        if operation == "RetireGrant":
            _check_retire_grant(params)
        _refuse_dry_run(params)
        return None

    # -- moto underneath -------------------------------------------------------------------
    def _call_moto(self, operation: str, **params: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._moto, operation)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise MotoError(str(error.get("Code", "KMSInternalException")), str(error.get("Message", "")), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)) from None
        except BotoCoreError as exc:
            raise KMSInternalException(f"the emulator's key store failed: {type(exc).__name__}") from None

    def _call_moto_raw(self, operation: str, params: dict) -> dict:
        """An operation botocore's model does not have (the emulator's internal ones)."""
        try:
            status, answer = call_internal(self.moto_endpoint, operation, params, region=self.region)
        except OSError as exc:
            raise KMSInternalException(f"the emulator's key store is unreachable: {exc}") from None
        except ValueError:
            raise KMSInternalException("the emulator's key store answered something other than JSON") from None
        if status != 200:
            message = answer.get("message", answer.get("Message", ""))  # moto spells it either way
            raise MotoError(str(answer.get("__type", "KMSInternalException")), str(message), status)
        return answer

    def key(self, key_id: str) -> KeyInfo:
        """The key ``key_id`` names (an id, ARN, alias name or alias ARN); NotFoundException if none."""
        metadata = self._call_moto("describe_key", KeyId=key_id)["KeyMetadata"]
        key = KeyInfo(
            metadata["Arn"],
            metadata.get("KeyState", "Enabled"),
            metadata.get("KeyUsage"),
            metadata.get("KeySpec"),
            tuple(metadata.get("EncryptionAlgorithms") or ()),
        )
        self._check_arn_place(key_id, key.arn)
        return key

    def _check_arn_place(self, key_id: str, key_arn: str) -> None:
        """An ARN naming another region or account names no key here (moto resolves it by its id alone).

        AWS's words for another region, as LocalStack recorded them: ``Invalid arn <region>``; for
        another account the words of a key that does not exist.
        """
        if not key_id.startswith("arn:"):
            return
        parts = key_id.split(":", 5)
        if len(parts) == 6 and parts[3] != self.region:
            raise NotFoundException(f"Invalid arn {parts[3]}")
        if len(parts) == 6 and parts[4] != key_arn.split(":")[4]:
            raise NotFoundException(f"Alias {key_id} is not found." if parts[5].startswith("alias/") else f"Key '{key_id}' does not exist")

    def _ciphertext_key(self, ciphertext_b64: Any) -> KeyInfo:
        """The key a ciphertext was made under, read from it without decrypting it."""
        _b64(ciphertext_b64, "CiphertextBlob")
        return self.key(self._call_moto_raw(INTERNAL_CIPHERTEXT_KEY_ID, {"CiphertextBlob": ciphertext_b64})["KeyId"])

    def key_policy(self, key_arn: str) -> KeyPolicy | str:
        """The parsed key policy, or why it cannot be evaluated (then it allows nothing: fail closed)."""
        text = self._call_moto("get_key_policy", KeyId=key_arn, PolicyName="default")["Policy"]
        try:
            policy = KeyPolicy.parse(text)
        except MalformedPolicyDocument as exc:
            return f"the key policy of {key_arn} cannot be evaluated: {exc}"
        unknown = unknown_condition_keys(policy)
        if unknown:
            return f"the key policy of {key_arn} tests {unknown[0]!r}, which the emulator cannot evaluate"
        return policy

    # -- authorization ---------------------------------------------------------------------
    def authorize(self, action: str, key_arn: str, context: dict[str, Any], caller: Caller) -> None:
        """Raise ``AccessDeniedException`` unless ``caller`` may perform ``action`` on the key.

        As AWS: an explicit Deny in the key policy or in any of the caller's IAM policies refuses;
        else the key policy must allow, and depending on how it names the caller (its ``grant``)
        the caller's identity policies, permissions boundary and session policies must allow too.
        """
        policy = self.key_policy(key_arn)
        if isinstance(policy, str):
            raise _denied(caller, action, key_arn, policy, missing=RESOURCE_POLICY)
        self._decide(caller, action, key_arn, context, policy)

    def _decide(self, caller: Caller, action: str, resource: str, context: dict[str, Any], policy: KeyPolicy) -> None:
        iam = self.identities.policies(caller)
        request = self._request(action, resource, context, caller, iam.role_arn)
        decision = policy.evaluate(request)
        if decision.denied:
            raise _denied(caller, action, resource, decision.reason, explicit_in=RESOURCE_POLICY)
        iam_decision = iam.evaluate(request)
        if iam_decision.denied_by is not None:
            raise _denied(caller, action, resource, iam_decision.reason, explicit_in=iam_decision.denied_by)
        if not decision.allowed or decision.grant is None:
            raise _denied(caller, action, resource, decision.reason, missing=RESOURCE_POLICY)
        missing = iam_decision.first_missing(_ALSO_NEEDED[decision.grant])
        if missing is not None:
            raise _denied(caller, action, resource, f"{decision.reason}; {iam_decision.reason}", missing=missing)

    def authorize_iam(self, action: str, resource: str, context: dict[str, Any], caller: Caller) -> None:
        """Raise ``AccessDeniedException`` unless the caller's IAM policies allow ``action`` on ``resource``."""
        if caller.is_root:
            return
        iam = self.identities.policies(caller)
        decision = iam.evaluate(self._request(action, resource, context, caller, iam.role_arn))
        if decision.denied_by is not None:
            raise _denied(caller, action, resource, decision.reason, explicit_in=decision.denied_by)
        missing = decision.first_missing(_IAM_ONLY_NEEDED)
        if missing is not None:
            raise _denied(caller, action, resource, decision.reason, missing=missing)

    def _request(self, action: str, resource: str, context: dict[str, Any], caller: Caller, role_arn: str) -> AuthorizationRequest:
        if caller.account_id != self.account_id:
            # Cross-account access is not modelled: refuse rather than guess.
            raise _denied(caller, action, resource, f"{caller.arn} is not in account {self.account_id}", missing=RESOURCE_POLICY)
        keys = {**account_keys(caller.account_id), **principal_keys(caller.arn, caller.kind, role_arn), **context}
        principal = "" if caller.is_root else caller.arn
        return AuthorizationRequest(action, resource, self.account_id, keys, principal, role_arn if caller.kind == "session" else "")

    def authorize_request(self, operation: str, params: dict, caller: Caller, attestation: dict[str, str] | None = None) -> list[KeyInfo]:
        """Everything AWS checks before it performs ``operation``: policies, key state, usage, algorithm.

        Returns the keys the request touches. Raises the AWS error otherwise.
        """
        context = {**encryption_context_keys(params.get("EncryptionContext")), **(attestation or {})}
        if operation == "CreateGrant":
            context.update(_grant_context(params))
        if operation in IAM_ONLY or (operation == "RetireGrant" and not isinstance(params.get("KeyId"), str)):
            touches: list[_Touch] = []
            self.authorize_iam(f"kms:{operation}", "*", context, caller)
            if operation == "CreateKey" and params.get("Tags"):
                self.authorize_iam("kms:TagResource", "*", context, caller)  # AWS: tagging at creation needs both
        else:
            touches = self._touches(operation, params, context, caller)
            for touch in touches:
                self.authorize(touch.action, touch.key.arn, touch.context, caller)
        self._check_new_policy(operation, params, caller, touches)
        for touch in touches:
            problem = _key_problem(operation, touch)
            if problem is not None:
                raise problem
        return [touch.key for touch in touches]

    def _touches(self, operation: str, params: dict, context: dict[str, Any], caller: Caller) -> list[_Touch]:
        action = f"kms:{operation}"
        if operation == "Decrypt":
            key = self._ciphertext_key(params.get("CiphertextBlob"))
            self._same_key(params.get("KeyId"), key)
            return [_Touch(key, action, context, algorithm=params.get("EncryptionAlgorithm", "SYMMETRIC_DEFAULT"))]
        if operation == "ReEncrypt":
            return self._reencrypt_touches(params, context)
        if operation in ("CreateAlias", "UpdateAlias", "DeleteAlias"):
            return self._alias_touches(operation, params, context, caller)
        key_id = params.get("KeyId")
        if not isinstance(key_id, str):
            self.authorize_iam(action, "*", context, caller)
            return []
        algorithm = params.get("EncryptionAlgorithm", "SYMMETRIC_DEFAULT") if operation == "Encrypt" else None
        return [_Touch(self.key(key_id), action, context, algorithm=algorithm)]

    def _reencrypt_touches(self, params: dict, context: dict[str, Any]) -> list[_Touch]:
        source = self._ciphertext_key(params.get("CiphertextBlob"))
        self._same_key(params.get("SourceKeyId"), source)
        destination = self.key(params["DestinationKeyId"])
        return [
            _Touch(source, "kms:ReEncryptFrom", {**context, **encryption_context_keys(params.get("SourceEncryptionContext"))},
                   algorithm=params.get("SourceEncryptionAlgorithm", "SYMMETRIC_DEFAULT")),
            _Touch(destination, "kms:ReEncryptTo", {**context, **encryption_context_keys(params.get("DestinationEncryptionContext"))},
                   algorithm=params.get("DestinationEncryptionAlgorithm", "SYMMETRIC_DEFAULT")),
        ]  # fmt: skip

    def _alias_touches(self, operation: str, params: dict, context: dict[str, Any], caller: Caller) -> list[_Touch]:
        """Alias calls need the action on the alias (IAM only) and on the key(s) it names."""
        action = f"kms:{operation}"
        alias = params["AliasName"]
        alias_arn = f"arn:aws:kms:{self.region}:{self.account_id}:{alias}"
        self.authorize_iam(action, alias_arn, context, caller)
        touches = []
        if operation != "CreateAlias":
            current = next((a for a in self._call_moto("list_aliases").get("Aliases", []) if a.get("AliasName") == alias), None)
            if current is None or not current.get("TargetKeyId"):
                raise NotFoundException(f"Alias {alias_arn} is not found.")
            # The key the alias leaves is not state-checked (AWS: "If the source KMS key is pending deletion, the command succeeds").
            touches.append(_Touch(self.key(current["TargetKeyId"]), action, context, check_state=False))
        if operation != "DeleteAlias":
            touches.append(_Touch(self.key(params["TargetKeyId"]), action, context))
        return touches

    def _same_key(self, key_id: Any, key: KeyInfo) -> None:
        if isinstance(key_id, str) and self.key(key_id).arn != key.arn:
            raise IncorrectKeyException(_INCORRECT_KEY)

    # -- new key policies ----------------------------------------------------------------------
    def _check_new_policy(self, operation: str, params: dict, caller: Caller, touches: list[_Touch]) -> None:
        """A key policy a request sets: valid, naming principals that exist, not locking its setter out.

        AWS's lockout safety check: unless ``BypassPolicyLockoutSafetyCheck`` is true, the caller
        must be able to call ``PutKeyPolicy`` under the new policy (its IAM policies included).
        https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-bypass-policy-lockout-safety-check
        """
        if operation not in ("CreateKey", "PutKeyPolicy", "ReplicateKey") or params.get("Policy") is None:
            return
        policy = self.validate_policy(params["Policy"])
        if not all(self.identities.principal_exists(arn) for arn in policy.principal_arns):
            raise MalformedPolicyDocumentException(_INVALID_PRINCIPALS)
        if params.get("BypassPolicyLockoutSafetyCheck") is True:
            return
        resource = touches[0].key.arn if touches else f"arn:aws:kms:{self.region}:{self.account_id}:key/{_NEW_KEY_ID}"
        try:
            self._decide(caller, "kms:PutKeyPolicy", resource, {}, policy)
        except AccessDeniedException:
            raise MalformedPolicyDocumentException(_LOCKOUT) from None

    @staticmethod
    def validate_policy(policy: Any) -> KeyPolicy:
        """The policy parsed, or ``MalformedPolicyDocumentException``."""
        try:
            parsed = KeyPolicy.parse(policy if isinstance(policy, str) else "")
        except MalformedPolicyDocument as exc:
            raise MalformedPolicyDocumentException(f"The key policy is not valid: {exc}") from None
        # A condition on a key the emulator never supplies would silently never match: refuse it.
        unknown = unknown_condition_keys(parsed)
        if unknown:
            raise MalformedPolicyDocumentException(f"the emulator cannot evaluate the condition key {unknown[0]!r}")
        return parsed

    # -- the operations the front answers itself ---------------------------------------------
    def _moto_decrypt(self, ciphertext_b64: Any, context: Any) -> tuple[str, bytes]:
        blob = _b64(ciphertext_b64, "CiphertextBlob")
        params: dict[str, Any] = {"CiphertextBlob": blob}
        if context:
            params["EncryptionContext"] = context
        response = self._call_moto("decrypt", **params)
        return response["KeyId"], response["Plaintext"]

    def decrypt(self, params: dict, caller: Caller) -> dict:
        """``Decrypt``, with or without ``Recipient``. https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html"""
        public_key, attestation = self._recipient(params)
        self.authorize_request("Decrypt", params, caller, attestation)
        _refuse_dry_run(params)
        key_arn, plaintext = self._moto_decrypt(params.get("CiphertextBlob"), params.get("EncryptionContext"))
        response = {"KeyId": key_arn, "EncryptionAlgorithm": params.get("EncryptionAlgorithm", "SYMMETRIC_DEFAULT")}
        return _deliver(response, "Plaintext", plaintext, public_key)

    def generate_data_key(self, params: dict, caller: Caller) -> dict:
        """``GenerateDataKey`` with ``Recipient``: the data key only as ``CiphertextForRecipient``.

        https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateDataKey.html
        """
        public_key, attestation = self._recipient(params)
        self.authorize_request("GenerateDataKey", params, caller, attestation)
        _refuse_dry_run(params)
        forwarded = {name: value for name, value in params.items() if name in ("KeyId", "EncryptionContext", "KeySpec", "NumberOfBytes")}
        response = self._call_moto("generate_data_key", **forwarded)
        answer = {"KeyId": response["KeyId"], "CiphertextBlob": base64.b64encode(response["CiphertextBlob"]).decode()}
        return _deliver(answer, "Plaintext", response["Plaintext"], public_key)

    def generate_data_key_pair(self, params: dict, caller: Caller) -> dict:
        """``GenerateDataKeyPair`` with ``Recipient``: the private key only as ``CiphertextForRecipient``.

        https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateDataKeyPair.html
        """
        public_key, attestation = self._recipient(params)
        self.authorize_request("GenerateDataKeyPair", params, caller, attestation)
        _refuse_dry_run(params)
        forwarded = {name: value for name, value in params.items() if name in ("KeyId", "EncryptionContext", "KeyPairSpec")}
        response = self._call_moto("generate_data_key_pair", **forwarded)
        answer = {
            "KeyId": response["KeyId"],
            "KeyPairSpec": response["KeyPairSpec"],
            "PublicKey": base64.b64encode(response["PublicKey"]).decode(),
            "PrivateKeyCiphertextBlob": base64.b64encode(response["PrivateKeyCiphertextBlob"]).decode(),
        }
        return _deliver(answer, "PrivateKeyPlaintext", response["PrivateKeyPlaintext"], public_key)

    def derive_shared_secret(self, params: dict, caller: Caller) -> dict:
        """``DeriveSharedSecret`` with ``Recipient``: the secret only as ``CiphertextForRecipient``.

        https://docs.aws.amazon.com/kms/latest/APIReference/API_DeriveSharedSecret.html
        """
        public_key, attestation = self._recipient(params)
        self.authorize_request("DeriveSharedSecret", params, caller, attestation)
        _refuse_dry_run(params)
        response = self._call_moto(
            "derive_shared_secret",
            KeyId=params["KeyId"],
            KeyAgreementAlgorithm=params.get("KeyAgreementAlgorithm", ""),
            PublicKey=_b64(params.get("PublicKey"), "PublicKey"),
        )
        answer = {"KeyId": response["KeyId"], "KeyAgreementAlgorithm": response["KeyAgreementAlgorithm"], "KeyOrigin": response["KeyOrigin"]}
        return _deliver(answer, "SharedSecret", response["SharedSecret"], public_key)

    def generate_random(self, params: dict, caller: Caller) -> dict:
        """``GenerateRandom``, with or without ``Recipient`` (IAM decides: it uses no key).

        https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateRandom.html
        """
        public_key, attestation = self._recipient(params)
        size = params.get("NumberOfBytes")
        if size is None:
            raise ValidationException("NumberOfBytes is required.")  # AWS's words (not a model constraint)
        if params.get("CustomKeyStoreId") is not None:
            raise CustomKeyStoreNotFoundException("The account has no custom key store of that id.")
        self.authorize_request("GenerateRandom", params, caller, attestation)
        return _deliver({}, "Plaintext", os.urandom(size), public_key)

    def _recipient(self, params: dict) -> tuple[bytes | None, dict[str, str]]:
        """The recipient's public key and the attestation condition keys; ``(None, {})`` without ``Recipient``."""
        if params.get("Recipient") is None:
            return None, {}
        return self._check_recipient(params["Recipient"])

    def _check_recipient(self, recipient: Any) -> tuple[bytes, dict[str, str]]:
        if not isinstance(recipient, dict):
            raise ValidationException("Recipient must be a structure")
        algorithm = recipient.get("KeyEncryptionAlgorithm")
        if algorithm is None:
            # The model marks it optional; AWS's default is undocumented, so refuse in AWS's words for a null.
            raise ValidationException(_null_member("recipient.keyEncryptionAlgorithm"))
        if algorithm != RECIPIENT_ALGORITHM:
            raise ValidationException(
                f"1 validation error detected: Value '{algorithm}' at 'recipient.keyEncryptionAlgorithm' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{RECIPIENT_ALGORITHM}]"
            )
        if recipient.get("AttestationDocument") is None:
            raise ValidationException(_null_member("recipient.attestationDocument"))
        document = _b64(recipient["AttestationDocument"], "Recipient.AttestationDocument")
        try:
            # Debug documents are accepted as on AWS: their zero PCRs simply fail pinned policies.
            verified = verify(document, roots=self.attestation_roots, allow_debug=True)
        except AttestationError as exc:
            raise ValidationException(f"Recipient AttestationDocument is not valid: {exc}") from None
        if not verified.public_key:
            raise ValidationException("Recipient AttestationDocument has no public key to encrypt the response to")
        _check_recipient_key(verified.public_key)
        return verified.public_key, attestation_keys(verified.pcrs)

    def reset(self) -> None:
        """Drop every key (moto's reset endpoint)."""
        import urllib.request

        with self._lock:
            urllib.request.urlopen(urllib.request.Request(f"{self.moto_endpoint}/moto-api/reset", method="POST"), timeout=10).close()


def _check_token(credential: Credential, sent: list[str]) -> None:
    """The session token must be the session's, and the session not expired; a long-term key takes none."""
    if credential.session_token is None:
        if sent:
            raise UnrecognizedClientException(_INVALID_TOKEN)
        return
    if sent != [credential.session_token]:
        raise UnrecognizedClientException(_INVALID_TOKEN)
    if credential.expired():
        raise ExpiredTokenException(_EXPIRED_TOKEN)


def _denied(caller: Caller, action: str, resource: str, reason: str, *, explicit_in: str | None = None, missing: str | None = None) -> AccessDeniedException:
    """AWS's words, e.g. "... on resource: arn:aws:kms:...:key/... with an explicit deny in a
    resource-based policy" (aws/aws-nitro-enclaves-sdk-c#157 quotes a raw KMS answer) or "...
    because no permissions boundary allows the kms:Encrypt action". ``reason`` is the emulator's own."""
    if explicit_in is not None:
        ending = f"with an explicit deny in {_article(explicit_in)} {explicit_in}"
    else:
        ending = f"because no {missing} allows the {action} action"
    return AccessDeniedException(f"User: {caller.arn} is not authorized to perform: {action} on resource: {resource} {ending}", reason=reason)


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def _key_problem(operation: str, touch: _Touch) -> KmsException | None:
    """AWS's error for the key's state, usage or encryption algorithm, in that order; ``None`` if fine."""
    key = touch.key
    return (
        (key_state_error(operation, key.arn, key.state) if touch.check_state else None)
        or key_usage_error(operation, key.arn, key.usage)
        or (encryption_algorithm_error(touch.algorithm, key.spec, key.encryption_algorithms) if touch.algorithm is not None else None)
    )


def _grant_context(params: dict) -> dict[str, Any]:
    try:
        return grant_constraint_keys(params.get("Constraints"))
    except ValueError as exc:
        raise ValidationException(f"The KMS emulator cannot evaluate this grant's constraints: {exc}") from None


def _null_member(path: str) -> str:
    return f"1 validation error detected: Value null at '{path}' failed to satisfy constraint: Member must not be null"


def _check_retire_grant(params: dict) -> None:
    """``RetireGrant`` names its grant by token, or by key and grant id (AWS's API reference); the
    model marks neither member required, and moto fails with a 500 on a request naming neither."""
    if params.get("GrantToken") is None and (params.get("KeyId") is None or params.get("GrantId") is None):
        raise ValidationException("Either GrantToken, or both KeyId and GrantId, must be specified.")


def _refuse_dry_run(params: dict) -> None:
    if params.get("DryRun") is True:
        raise DryRunOperationException(_DRY_RUN)


def _deliver(response: dict, field: str, secret: bytes, public_key: bytes | None) -> dict:
    """``secret`` as ``field``, or sealed to the recipient as ``CiphertextForRecipient`` (then no ``field``)."""
    if public_key is None:
        response[field] = base64.b64encode(secret).decode()
    else:
        response["CiphertextForRecipient"] = base64.b64encode(build_ciphertext_for_recipient(secret, public_key)).decode()
    return response


def _check_recipient_key(der: bytes) -> None:
    """KMS encrypts to the document's key with RSAES_OAEP_SHA_256: an RSA key of a size KMS takes."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size not in RECIPIENT_RSA_SIZES:
        sizes = ", ".join(str(size) for size in RECIPIENT_RSA_SIZES)
        raise ValidationException(f"Recipient AttestationDocument public key must be an RSA public key ({sizes} bits) for {RECIPIENT_ALGORITHM}")


def _b64(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValidationException(f"{field} is required")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationException(f"{field} is not valid base64") from None
