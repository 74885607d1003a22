"""What the emulator adds to moto's KMS, installed inside moto's own process (see :mod:`.moto_process`).

moto keeps the KMS keys, so operations that need a key's secret material run here, on moto's
backend, and private keys never leave this process except as AWS would return them:

* ``GenerateDataKeyPair`` / ``GenerateDataKeyPairWithoutPlaintext`` (moto 5.2.5 lacks them): a
  fresh key pair of ``KeyPairSpec``, the private key as DER PKCS#8 encrypted under the KMS key
  (moto's own ciphertext format), the public key as DER SubjectPublicKeyInfo.
  https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateDataKeyPair.html
* ``DeriveSharedSecret`` (moto lacks it): ECDH between a ``KEY_AGREEMENT`` key's private key and
  the caller's public key. https://docs.aws.amazon.com/kms/latest/APIReference/API_DeriveSharedSecret.html
* ``EmulatorCiphertextKeyId``, internal: which key a ciphertext names, without decrypting it (KMS
  reads the key from the ciphertext's header too). ``EmulatorAccessKeySecret``, internal: the
  secret key of an active moto IAM or STS access key and, for a role session, its token,
  expiration and session policies, so the front can check SigV4 signatures, tokens and expiry as
  AWS does and evaluate session policies. moto's ``AssumeRole`` keeps the inline ``Policy`` but
  drops ``PolicyArns``: it is patched to remember them on the session. The front never routes these names: they are not operations of
  the KMS model. (Anyone who can reach moto's port on 127.0.0.1 can call them; the emulator is
  not a security boundary.) :func:`call_internal` is how the front calls them.
* The operations on what the emulated account never has — custom key stores (CloudHSM or external)
  and ML-KEM keys — answer as AWS answers an account without them, with an error their model
  lists: ``DescribeCustomKeyStores`` an empty list, the other custom-key-store operations
  ``CustomKeyStoreNotFoundException`` (``CreateCustomKeyStore``: no CloudHSM cluster or external
  proxy is reachable), ``Encapsulate``/``Decapsulate`` ``NotFoundException`` or
  ``InvalidKeyUsageException``; ``GetKeyLastUsage`` reports tracking that starts now (no usage
  since). Every other operation of botocore's KMS model that moto lacks answers a JSON
  ``UnsupportedOperationException`` instead of moto's HTML 500 page (each lists it).
* Keys created without ``KeyUsage`` get ``ENCRYPT_DECRYPT``, AWS's default (moto leaves it empty);
  ``DisableKey``, ``EnableKey``, ``ScheduleKeyDeletion``, ``CancelKeyDeletion`` and ``ReplicateKey`` take a key ARN
  as AWS does (moto's backend only takes the raw id and fails with a 500 otherwise).
* moto's own key-policy check (it refuses ``DescribeKey`` when any statement denies
  ``kms:DescribeKey``, whoever the principal) is switched off: the attesting front authorizes
  every call before moto sees it, as AWS would.

Every moto internal patched or called here is checked first (:func:`check_moto`): it must exist
with the parameters this module relies on, and moto's version must be one these patches were
tested with (:data:`TESTED_MOTO`, the same range as the ``emulator`` extra in pyproject.toml). A
moto that differs makes the moto process fail at start, so ``MotoProcess`` raises
``MotoStartError`` with this module's message rather than the emulator misbehaving later.
"""

from __future__ import annotations

import base64
import datetime
import functools
import importlib
import inspect
import json
import struct
from typing import Any

__all__ = [
    "INTERNAL_ACCESS_KEY_SECRET",
    "INTERNAL_CIPHERTEXT_KEY_ID",
    "TESTED_MOTO",
    "IncompatibleMoto",
    "call_internal",
    "check_moto",
    "install",
]

INTERNAL_CIPHERTEXT_KEY_ID = "EmulatorCiphertextKeyId"
INTERNAL_ACCESS_KEY_SECRET = "EmulatorAccessKeySecret"
#: moto versions these patches were tested with: at least the first, below the second.
TESTED_MOTO = ((5, 2), (5, 3))

#: Every moto internal this module patches or calls: (module, attribute path, leading parameters).
#: ``None``: only its existence matters.
_MOTO_INTERNALS: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("moto.kms.responses", "KmsResponse._validate_key_policy", ("self", "key_id", "action")),
    ("moto.kms.responses", "KmsResponse._validate_key_id", ("self", "key_id")),
    ("moto.kms.responses", "KmsResponse._get_param", ("self", "param_name")),
    ("moto.kms.responses", "KmsResponse.kms_backend", None),
    ("moto.kms.models", "KmsBackend.create_key", ("self", "policy", "key_usage")),
    ("moto.kms.models", "KmsBackend.disable_key", ("self", "key_id")),
    ("moto.kms.models", "KmsBackend.enable_key", ("self", "key_id")),
    ("moto.kms.models", "KmsBackend.cancel_key_deletion", ("self", "key_id")),
    ("moto.kms.models", "KmsBackend.schedule_key_deletion", ("self", "key_id")),
    ("moto.kms.models", "KmsBackend.replicate_key", ("self", "key_id")),
    ("moto.kms.models", "KmsBackend.get_key_id", ("key_id",)),
    ("moto.kms.models", "KmsBackend.any_id_to_key_id", ("self", "key_id")),
    ("moto.kms.models", "KmsBackend.encrypt", ("self", "key_id", "plaintext", "encryption_context")),
    ("moto.kms.utils", "_deserialize_ciphertext_blob", ("ciphertext_blob",)),
    ("moto.kms.exceptions", "NotFoundException", None),
    ("moto.kms.exceptions", "ValidationException", None),
    ("moto.kms.exceptions", "InvalidCiphertextException", None),
    ("moto.core.exceptions", "JsonRESTError", None),
    ("moto.core.utils", "camelcase_to_underscores", ("argument",)),
    ("moto.iam.models", "iam_backends", None),
    ("moto.sts.models", "sts_backends", None),
    ("moto.sts.models", "STSBackend.get_assumed_role_from_access_key", ("self", "access_key_id")),
    ("moto.sts.models", "AssumedRole.__init__", ("self", "account_id", "region_name", "access_key", "role_session_name", "role_arn", "policy", "duration")),
    ("moto.sts.responses", "TokenResponse.assume_role", ("self",)),
    ("moto.utilities.utils", "PARTITION_NAMES", None),
)


class IncompatibleMoto(RuntimeError):
    """The installed moto is not one the emulator's patches were written and tested for."""


def check_moto(*, installed: str | None = None, internals: tuple[tuple[str, str, tuple[str, ...] | None], ...] = _MOTO_INTERNALS) -> None:
    """Raise :class:`IncompatibleMoto` unless moto's version and every internal used here are as expected.

    ``installed``: the version to judge (default: the installed moto's); ``internals``: what to
    look for (default: everything this module uses).
    """
    from importlib.metadata import version

    installed = installed or version("moto")
    release = tuple(int(part) for part in installed.split(".")[:2] if part.isdigit())
    low, high = TESTED_MOTO
    if not low <= release < high:
        raise IncompatibleMoto(f"moto {installed} is not in the range the KMS emulator was tested with (>={_dotted(low)},<{_dotted(high)})")
    for module, path, parameters in internals:
        _check_internal(module, path, parameters)


def _check_internal(module: str, path: str, parameters: tuple[str, ...] | None) -> None:
    target: Any = importlib.import_module(module)
    for name in path.split("."):
        if not hasattr(target, name):
            raise IncompatibleMoto(f"moto has no {module}.{path}, which the KMS emulator patches or calls")
        target = getattr(target, name)
    if parameters is None:
        return
    found = tuple(inspect.signature(target).parameters)[: len(parameters)]
    if found != parameters:
        raise IncompatibleMoto(f"moto's {module}.{path} takes {found}, not {parameters} as the KMS emulator expects")


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)

# KeyPairSpec -> private key factory (cryptography); SM2 and ML-KEM are not available here.
_EC_CURVES = {
    "ECC_NIST_P256": "SECP256R1",
    "ECC_NIST_P384": "SECP384R1",
    "ECC_NIST_P521": "SECP521R1",
    "ECC_SECG_P256K1": "SECP256K1",
}


def install() -> None:
    """Check moto (:func:`check_moto`), then patch its KMS and STS classes in this process (idempotent)."""
    import botocore.session
    from moto.kms.models import KmsBackend
    from moto.kms.responses import KmsResponse
    from moto.sts.responses import TokenResponse

    check_moto()
    KmsResponse._validate_key_policy = _no_policy_check  # type: ignore[method-assign]
    KmsResponse.generate_data_key_pair = _generate_data_key_pair  # type: ignore[attr-defined]
    KmsResponse.generate_data_key_pair_without_plaintext = _generate_data_key_pair_without_plaintext  # type: ignore[attr-defined]
    KmsResponse.derive_shared_secret = _derive_shared_secret  # type: ignore[attr-defined]
    setattr(KmsResponse, _snake(INTERNAL_CIPHERTEXT_KEY_ID), _ciphertext_key_id)
    setattr(KmsResponse, _snake(INTERNAL_ACCESS_KEY_SECRET), _access_key_secret)
    model = botocore.session.get_session().get_service_model("kms")
    for operation, answer in ABSENT_RESOURCES.items():
        setattr(KmsResponse, _snake(operation), answer)
    for operation in model.operation_names:
        if not hasattr(KmsResponse, _snake(operation)):
            setattr(KmsResponse, _snake(operation), _unsupported(operation))
    if not getattr(KmsBackend.create_key, "_zerocopy", False):
        KmsBackend.create_key = _default_key_usage(KmsBackend.create_key)  # type: ignore[method-assign]
        for name in ("disable_key", "enable_key", "cancel_key_deletion", "schedule_key_deletion", "replicate_key"):
            setattr(KmsBackend, name, _any_key_id(getattr(KmsBackend, name)))
    if not getattr(TokenResponse.assume_role, "_zerocopy", False):
        TokenResponse.assume_role = _remember_policy_arns(TokenResponse.assume_role)  # type: ignore[method-assign]


def _snake(name: str) -> str:
    """The method name moto dispatches ``X-Amz-Target: TrentService.<name>`` to."""
    from moto.core.utils import camelcase_to_underscores

    return camelcase_to_underscores(name)


def _no_policy_check(self: Any, key_id: str, action: str) -> None:
    return None


def _default_key_usage(create_key: Any) -> Any:
    @functools.wraps(create_key)  # keeps the signature check_moto() reads
    def wrapper(self: Any, policy: Any, key_usage: Any, *args: Any, **kwargs: Any) -> Any:
        return create_key(self, policy, key_usage or "ENCRYPT_DECRYPT", *args, **kwargs)

    wrapper._zerocopy = True  # type: ignore[attr-defined]
    return wrapper


def _any_key_id(method: Any) -> Any:
    """moto's state changes index its keys by raw id; AWS takes the key ARN too (moto: KeyError, a 500)."""

    @functools.wraps(method)
    def wrapper(self: Any, key_id: str, *args: Any, **kwargs: Any) -> Any:
        return method(self, self.get_key_id(key_id), *args, **kwargs)

    return wrapper


def _remember_policy_arns(assume_role: Any) -> Any:
    """moto's AssumeRole drops ``PolicyArns``; keep them on the session so the front can evaluate them."""

    @functools.wraps(assume_role)
    def wrapper(self: Any) -> Any:
        result = assume_role(self)
        requested = self._get_param("PolicyArns") or []
        arns = [item.get("arn") if isinstance(item, dict) else item for item in requested]
        # Anything but a list of ARN strings cannot be read back: keep a marker that names no policy,
        # so the front fails closed instead of ignoring it.
        result.result["Credentials"].zerocopy_policy_arns = [arn if isinstance(arn, str) else "<unreadable>" for arn in arns]
        return result

    wrapper._zerocopy = True  # type: ignore[attr-defined]
    return wrapper


def _unsupported(operation: str) -> Any:
    def method(self: Any) -> str:
        from moto.core.exceptions import JsonRESTError

        raise JsonRESTError("UnsupportedOperationException", f"The KMS emulator does not implement {operation}.")

    return method


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _key(response: Any, key_id: Any) -> Any:
    from moto.kms.exceptions import NotFoundException

    if not isinstance(key_id, str) or not key_id:
        raise NotFoundException(f"Invalid keyId {key_id!r}")
    response._validate_key_id(key_id)
    backend = response.kms_backend
    return backend.keys[backend.any_id_to_key_id(key_id)]


def _invalid_usage(key: Any, operation: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError("InvalidKeyUsageException", f"{key.arn} key usage is {key.key_usage} which is not valid for {operation}.")


# --- GenerateDataKeyPair ------------------------------------------------------------------------


def _new_private_key(spec: Any) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from moto.core.exceptions import JsonRESTError

    if spec in ("RSA_2048", "RSA_3072", "RSA_4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(spec[4:]))
    if spec in _EC_CURVES:
        return ec.generate_private_key(getattr(ec, _EC_CURVES[spec])())
    if spec == "ECC_NIST_EDWARDS25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise JsonRESTError("UnsupportedOperationException", f"KeyPairSpec {spec} is not supported by the KMS emulator.")


def _data_key_pair(response: Any, operation: str, with_plaintext: bool) -> str:
    from cryptography.hazmat.primitives import serialization

    key = _key(response, response._get_param("KeyId"))
    if key.key_usage != "ENCRYPT_DECRYPT" or key.key_spec != "SYMMETRIC_DEFAULT":
        raise _invalid_usage(key, operation)
    spec = response._get_param("KeyPairSpec")
    private = _new_private_key(spec)
    private_der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    blob, arn = response.kms_backend.encrypt(
        key_id=key.id, plaintext=private_der, encryption_context=response._get_param("EncryptionContext", {}) or {}
    )
    answer = {"KeyId": arn, "KeyPairSpec": spec, "PublicKey": _b64(public_der), "PrivateKeyCiphertextBlob": _b64(blob)}
    if with_plaintext:
        answer["PrivateKeyPlaintext"] = _b64(private_der)
    return json.dumps(answer)


def _generate_data_key_pair(self: Any) -> str:
    return _data_key_pair(self, "GenerateDataKeyPair", with_plaintext=True)


def _generate_data_key_pair_without_plaintext(self: Any) -> str:
    return _data_key_pair(self, "GenerateDataKeyPairWithoutPlaintext", with_plaintext=False)


# --- DeriveSharedSecret -------------------------------------------------------------------------


def _derive_shared_secret(self: Any) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from moto.kms.exceptions import ValidationException

    key = _key(self, self._get_param("KeyId"))
    if key.key_usage != "KEY_AGREEMENT":
        raise _invalid_usage(key, "DeriveSharedSecret")
    private = getattr(key.private_key, "private_key", None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise _invalid_usage(key, "DeriveSharedSecret")
    if self._get_param("KeyAgreementAlgorithm") != "ECDH":
        raise ValidationException(
            f"1 validation error detected: Value '{self._get_param('KeyAgreementAlgorithm')}' at 'keyAgreementAlgorithm' "
            "failed to satisfy constraint: Member must satisfy enum value set: [ECDH]"
        )
    try:
        peer = serialization.load_der_public_key(base64.b64decode(self._get_param("PublicKey") or "", validate=True))
    except ValueError:
        raise ValidationException("") from None  # real KMS says no more (LocalStack's recorded answer)
    if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != private.curve.name:
        raise ValidationException("")
    secret = private.exchange(ec.ECDH(), peer)
    return json.dumps({"KeyId": key.arn, "SharedSecret": _b64(secret), "KeyAgreementAlgorithm": "ECDH", "KeyOrigin": key.origin})


# --- what the emulated account never has: custom key stores, ML-KEM keys ------------------------


def _error(code: str, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError(code, message)


def _describe_custom_key_stores(self: Any) -> str:
    if self._get_param("CustomKeyStoreId") is not None or self._get_param("CustomKeyStoreName") is not None:
        raise _error("CustomKeyStoreNotFoundException", "The account has no custom key store of that id or name.")
    if self._get_param("Marker") is not None:  # no earlier page gave one
        raise _error("InvalidMarkerException", "The marker does not come from an earlier DescribeCustomKeyStores answer.")
    return json.dumps({"CustomKeyStores": [], "Truncated": False})


def _no_custom_key_store(self: Any) -> str:
    raise _error("CustomKeyStoreNotFoundException", f"No custom key store {str(self._get_param('CustomKeyStoreId'))[:80]!r} in this account.")


def _create_custom_key_store(self: Any) -> str:
    if self._get_param("CustomKeyStoreType") == "EXTERNAL_KEY_STORE":
        raise _error("XksProxyUriUnreachableException", "The KMS emulator reaches no external key store proxy.")
    raise _error("CloudHsmClusterNotFoundException", "The KMS emulator has no CloudHSM cluster.")


def _no_encapsulation_key(operation: str) -> Any:
    def answer(self: Any) -> str:
        key = _key(self, self._get_param("KeyId"))  # NotFoundException for a key that does not exist
        raise _invalid_usage(key, operation)  # no key of the emulator is a KEY_ENCAPSULATION (ML-KEM) key

    return answer


def _get_key_last_usage(self: Any) -> str:
    key = _key(self, self._get_param("KeyId"))
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    # The emulator keeps no usage record: tracking starts now, and nothing has used the key since.
    return json.dumps({"KeyId": key.arn, "KeyCreationDate": key.creation_date, "TrackingStartDate": now})


ABSENT_RESOURCES = {
    "DescribeCustomKeyStores": _describe_custom_key_stores,
    "ConnectCustomKeyStore": _no_custom_key_store,
    "DisconnectCustomKeyStore": _no_custom_key_store,
    "DeleteCustomKeyStore": _no_custom_key_store,
    "UpdateCustomKeyStore": _no_custom_key_store,
    "CreateCustomKeyStore": _create_custom_key_store,
    "Encapsulate": _no_encapsulation_key("Encapsulate"),
    "Decapsulate": _no_encapsulation_key("Decapsulate"),
    "GetKeyLastUsage": _get_key_last_usage,
}


# --- internal: the key a ciphertext names -------------------------------------------------------


def _ciphertext_key_id(self: Any) -> str:
    from moto.core.exceptions import JsonRESTError
    from moto.kms.exceptions import InvalidCiphertextException
    from moto.kms.utils import _deserialize_ciphertext_blob

    blob = self._get_param("CiphertextBlob")
    try:
        key_id = _deserialize_ciphertext_blob(ciphertext_blob=blob).key_id
    except (struct.error, UnicodeDecodeError, TypeError):  # too short, a key id that is not UTF-8, not bytes
        raise InvalidCiphertextException() from None
    key = self.kms_backend.keys.get(key_id)
    if key is None:
        # Not moto's AccessDeniedException: it drops its message from the answer, and KMS sends this one.
        raise JsonRESTError(
            "AccessDeniedException",
            "The ciphertext refers to a customer master key that does not exist, "
            "does not exist in this region, or you are not allowed to access."
        )
    return json.dumps({"KeyId": key.arn})


# --- internal: the secret of an access key ------------------------------------------------------


def _access_key_secret(self: Any) -> str:
    from moto.core.exceptions import JsonRESTError
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends
    from moto.utilities.utils import PARTITION_NAMES

    key_id = self._get_param("AccessKeyId")
    for account_id, account in list(iam_backends.items()):
        for partition in PARTITION_NAMES:
            key = account[partition].access_keys.get(key_id)
            if key is None or key.status != "Active":
                continue
            role = sts_backends[account_id][partition].get_assumed_role_from_access_key(key_id)
            answer = {"SecretAccessKey": key.secret_access_key}
            return json.dumps(answer if role is None else {**answer, **_session(role)})
    raise JsonRESTError("UnrecognizedClientException", "The security token included in the request is invalid.")


def _session(role: Any) -> dict[str, Any]:
    """A role session's token, expiration (ISO 8601, UTC) and session policies."""
    expiration = role.expiration if role.expiration.tzinfo else role.expiration.replace(tzinfo=datetime.timezone.utc)
    return {
        "SessionToken": role.session_token,
        "Expiration": expiration.isoformat(),
        "SessionPolicy": role.policy,
        "SessionPolicyArns": list(getattr(role, "zerocopy_policy_arns", [])),
    }


# --- the front's side ------------------------------------------------------------------------------


def call_internal(moto_endpoint: str, operation: str, params: dict, *, region: str) -> tuple[int, dict]:
    """Call one of the internal operations (or any KMS target) on moto: (HTTP status, JSON answer).

    Raises ``OSError`` if moto cannot be reached and ``ValueError`` if it answers something other
    than a JSON object.
    """
    import http.client
    from urllib.parse import urlsplit

    target = urlsplit(moto_endpoint)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
    headers = {
        "X-Amz-Target": f"TrentService.{operation}",
        "Content-Type": "application/x-amz-json-1.1",
        "Authorization": f"AWS4-HMAC-SHA256 Credential=emulator/20250101/{region}/kms/aws4_request, SignedHeaders=host, Signature=0",
    }
    try:
        connection.request("POST", "/", body=json.dumps(params), headers=headers)
        response = connection.getresponse()
        status, body = response.status, response.read()
    finally:
        connection.close()
    answer = json.loads(body)
    if not isinstance(answer, dict):
        raise ValueError("moto answered something other than a JSON object")
    return status, answer
