"""The emulated KMS against what AWS KMS does (issue 7, KMS).

Routing, request validation, callers, authorization of every operation, key state, ``Recipient``
on all five operations that take it, and JSON for every answer. Expected answers come from AWS:
its documentation, real KMS answers recorded by LocalStack's snapshot tests
(``tests/aws/services/kms/test_kms.snapshot.json``), kinesalite's record of AWS's JSON 1.1 front
end, and raw KMS answers quoted in public issues; each test names its source where it matters.

One moto process, one attesting model and one TLS front for the module, as in test_kms_front.py.
moto's IAM and STS (in the same moto process) hold the users and roles.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import boto3
import pytest
from attestation_builder import sample_pcrs
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from emulator_helpers import (
    ACCOUNT_ID,
    EMULATOR_ACCESS_KEY,
    EMULATOR_SECRET_KEY,
    REGION,
    aws_words,
    http_post,
    join_new_threads,
    localstack_error,
    moto_process,
    recipient,
    rsa_recipient,
    signed_headers,
    spki_der,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emulator.kms import service_model
from emulator.kms.models import AttestingKms
from emulator.kms.operations import RECIPIENT_OPERATIONS
from emulator.kms.responses import REASON_HEADER, HttpResponse, Passthrough, dispatch
from emulator.kms.server import KmsFrontServer
from emulator.nsm import EmulatedNsm
from emulator.pki import AttestationPki, TlsAuthority
from enclave.cms import decrypt_ciphertext_for_recipient
from zerocopy.kms_policy import attested_key_policy

KMS_HOST = f"kms.{REGION}.amazonaws.com"
MODULE_ID = "i-0123456789abcdef0-enc0123456789abcdef"
CONTEXT = {"zerocopy:name": "fidelity", "zerocopy:format": "1"}
ROOT_ARN = f"arn:aws:iam::{ACCOUNT_ID}:root"
EXPLICIT_DENY = "with an explicit deny in a resource-based policy"
_NO_RETRIES = Config(retries={"total_max_attempts": 1})
TRUST_EC2 = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
)
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")


class Creds(NamedTuple):
    access_key: str
    secret: str = "x"
    token: str | None = None


ROOT = Creds(EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY)  # the account root, as Emulator.kms (the operator)


def request(target: str | None, body: bytes | dict, creds: Creds = ROOT) -> tuple[dict[str, str], bytes]:
    """Headers and body of a request as botocore signs it (for ``dispatch`` or ``http_post``)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return signed_headers(target, raw, *creds), raw


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def allow(*actions: str, resource: str = "*", condition: dict | None = None) -> str:
    """An IAM identity policy allowing ``actions``."""
    statement: dict[str, Any] = {"Effect": "Allow", "Action": list(actions), "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


# --- the module's KMS: moto, model, TLS front ----------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kms-fidelity")


@pytest.fixture(scope="module")
def moto_endpoint(workdir: Path) -> Iterator[str]:
    with moto_process(workdir) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def aws(moto_endpoint: str) -> Iterator[SimpleNamespace]:
    """boto3 clients straight to moto (as the account root's key): what moto alone does."""
    session = boto3.session.Session(aws_access_key_id=EMULATOR_ACCESS_KEY, aws_secret_access_key="x", region_name=REGION)
    clients = SimpleNamespace(**{name: session.client(name, endpoint_url=moto_endpoint, config=_NO_RETRIES) for name in ("kms", "iam", "sts")})
    try:
        yield clients
    finally:
        for client in vars(clients).values():
            client.close()


@pytest.fixture(scope="module")
def pki() -> AttestationPki:
    return AttestationPki(REGION)


@pytest.fixture(scope="module")
def model(moto_endpoint: str, pki: AttestationPki) -> Iterator[AttestingKms]:
    kms = AttestingKms(moto_endpoint, attestation_roots=[pki.root_pem], account_id=ACCOUNT_ID, region=REGION, root_credentials={ROOT.access_key: ROOT.secret})
    try:
        yield kms
    finally:
        kms.close()


@pytest.fixture(scope="module")
def ca_file(workdir: Path) -> tuple[TlsAuthority, str]:
    authority = TlsAuthority()
    path = workdir / "ca.pem"
    path.write_bytes(authority.root_pem)
    return authority, str(path)


@pytest.fixture(scope="module")
def front(workdir: Path, ca_file: tuple[TlsAuthority, str], model: AttestingKms) -> Iterator[KmsFrontServer]:
    authority, _ = ca_file
    served = authority.server_certificate(KMS_HOST)
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    cert.write_bytes(served.pem)
    key.touch(0o600)
    key.write_bytes(TlsAuthority.key_pem(served))
    before = set(threading.enumerate())
    server = KmsFrontServer(model, certfile=str(cert), keyfile=str(key))
    try:
        yield server.start()
    finally:
        server.stop()
        assert join_new_threads(before) == []


@pytest.fixture(scope="module")
def clients(front: KmsFrontServer, ca_file: tuple[TlsAuthority, str]) -> Iterator[Callable[..., Any]]:
    """``clients(credentials)``: a boto3 KMS client through the TLS front (closed at module end)."""
    made: list[Any] = []

    def make(creds: Creds = ROOT) -> Any:
        session = boto3.session.Session(aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret, aws_session_token=creds.token, region_name=REGION)
        client = session.client("kms", endpoint_url=front.endpoint_url, verify=ca_file[1], config=_NO_RETRIES)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.close()


@pytest.fixture(scope="module")
def kms(clients: Callable[..., Any]) -> Any:
    """The account root through the front, as Emulator.kms (the operator) calls it."""
    return clients()


# --- enclaves and keys ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def enclave_key() -> rsa.RSAPrivateKey:
    return rsa_recipient()


@pytest.fixture(scope="module")
def nsm(pki: AttestationPki) -> EmulatedNsm:
    return EmulatedNsm(pki, module_id=MODULE_ID, pcrs=sample_pcrs(b"zerocopy-enclave"))


@pytest.fixture(scope="module")
def document(nsm: EmulatedNsm, enclave_key: rsa.RSAPrivateKey) -> bytes:
    return nsm.attestation_document(public_key=spki_der(enclave_key), nonce=b"fidelity")


def attested(document: bytes) -> dict[str, Any]:
    """``Recipient`` as boto3 takes it (the document as bytes)."""
    return {"AttestationDocument": document, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}


@pytest.fixture(scope="module")
def pinned_key(aws: SimpleNamespace, nsm: EmulatedNsm) -> str:
    """A key with ZeroCopy's policy: the account administers it, only the attested image decrypts."""
    return aws.kms.create_key(Policy=json.dumps(attested_key_policy(ACCOUNT_ID, image_sha384=nsm.pcrs[0])))["KeyMetadata"]["Arn"]


@pytest.fixture(scope="module")
def keys(aws: SimpleNamespace) -> SimpleNamespace:
    """One key of each usage, created in moto (default key policy: the account, through IAM)."""
    create = aws.kms.create_key
    made = SimpleNamespace(
        sym=create()["KeyMetadata"]["Arn"],
        sym2=create()["KeyMetadata"]["Arn"],
        mac=create(KeyUsage="GENERATE_VERIFY_MAC", KeySpec="HMAC_256")["KeyMetadata"]["Arn"],
        sig=create(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"],
        agree=create(KeyUsage="KEY_AGREEMENT", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"],
        multi_region=create(MultiRegion=True)["KeyMetadata"]["Arn"],
    )
    aws.kms.create_alias(AliasName="alias/fidelity", TargetKeyId=made.sym)
    made.ciphertext = aws.kms.encrypt(KeyId=made.sym, Plaintext=b"secret")["CiphertextBlob"]
    grant = aws.kms.create_grant(KeyId=made.sym, GranteePrincipal=f"arn:aws:iam::{ACCOUNT_ID}:user/alice", Operations=["Decrypt"])
    made.grant_id = grant["GrantId"]
    made.signature = aws.kms.sign(KeyId=made.sig, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    made.mac_value = aws.kms.generate_mac(KeyId=made.mac, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    made.peer = ec.generate_private_key(ec.SECP256R1())
    return made


# --- principals in moto's IAM and STS ------------------------------------------------------------


def user_key(aws: SimpleNamespace, name: str, *policies: str) -> Creds:
    aws.iam.create_user(UserName=name)
    for index, document in enumerate(policies):
        aws.iam.put_user_policy(UserName=name, PolicyName=f"p{index}", PolicyDocument=document)
    key = aws.iam.create_access_key(UserName=name)["AccessKey"]
    return Creds(key["AccessKeyId"], key["SecretAccessKey"])


def role_session(aws: SimpleNamespace, role: str, *policies: str, session: str = "i-0123456789abcdef0", boundary: str | None = None) -> Creds:
    """Create ``role`` with inline ``policies`` (and a permissions boundary: a managed policy's
    document) and assume it as an instance would: its credentials."""
    extra = {"PermissionsBoundary": managed_policy(aws, f"{role}-boundary", boundary)} if boundary else {}
    aws.iam.create_role(RoleName=role, AssumeRolePolicyDocument=TRUST_EC2, **extra)
    for index, document in enumerate(policies):
        aws.iam.put_role_policy(RoleName=role, PolicyName=f"p{index}", PolicyDocument=document)
    return assume(aws, role, session)


def assume(aws: SimpleNamespace, role: str, session: str = "i-0123456789abcdef0", **session_policies: Any) -> Creds:
    """A new session of ``role`` (``Policy=``, ``PolicyArns=``: its session policies)."""
    credentials = aws.sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{role}", RoleSessionName=session, **session_policies)["Credentials"]
    return Creds(credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"])


def managed_policy(aws: SimpleNamespace, name: str, document: str) -> str:
    return aws.iam.create_policy(PolicyName=name, PolicyDocument=document)["Policy"]["Arn"]


def key_policy(*statements: dict) -> str:
    """A key policy: the account administers the key (through IAM), plus ``statements``."""
    admin = {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [admin, *statements]})


def grant(principal: str, *actions: str, effect: str = "Allow", **extra: Any) -> dict:
    """A key policy statement naming ``principal``."""
    return {"Effect": effect, "Principal": {"AWS": principal}, "Action": list(actions), "Resource": "*", **extra}


@pytest.fixture(scope="module")
def nobody(aws: SimpleNamespace) -> Creds:
    """An IAM user of the account with no policy at all: moto serves it everything."""
    return user_key(aws, "nobody")


# --- helpers ---------------------------------------------------------------------------------------


def post(model: AttestingKms, operation: str, params: dict, creds: Creds = ROOT) -> tuple[int, dict]:
    result = dispatch(model, *request(f"TrentService.{operation}", params, creds))
    assert isinstance(result, HttpResponse), f"{operation} passed to moto: {result}"
    return result.status, json.loads(result.body)


def message(body: dict) -> str:
    return body.get("message", body.get("Message", ""))


@contextlib.contextmanager
def aws_error(code: str, text: str = "", status: int = 400) -> Iterator[None]:
    """A ClientError with ``code`` whose message contains ``text``."""
    with pytest.raises(ClientError) as info:
        yield
    error = info.value.response["Error"]
    assert (error["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]) == (code, status), error
    assert text in error["Message"], error["Message"]


def moto_alone(moto_endpoint: str, operation: str, params: dict, creds: Creds) -> tuple[int, dict]:
    status, _, body = http_post(moto_endpoint, *request(f"TrentService.{operation}", params, creds))
    try:
        return status, json.loads(body) if body else {}
    except ValueError:
        return status, {"not JSON": body[:200].decode(errors="replace")}


# --- 1. routing: the model's operation names, exactly --------------------------------------------


def test_every_operation_of_the_model_is_routed(model):
    for operation in sorted(service_model.operation_names()):
        result = dispatch(model, *request(f"TrentService.{operation}", b"{}"))
        if isinstance(result, HttpResponse):
            assert json.loads(result.body).get("__type") != "UnknownOperationException", operation


@pytest.mark.parametrize(
    "target",
    ["TrentService.decrypt", "TrentService.DECRYPT", "trentservice.Decrypt", "TrentService.Decrypt ", "TrentService..Decrypt",
     "Decrypt", "TrentService", "KMS.Decrypt", "TrentService.EmulatorCiphertextKeyId", "TrentService.GenerateDataKeyPairs", "", None],
)  # fmt: skip
def test_unknown_or_mis_cased_operations_never_reach_moto(model, moto_endpoint, keys, target):
    params = {"CiphertextBlob": b64(keys.ciphertext)}
    result = dispatch(model, *request(target, params))
    # AWS JSON 1.1: 400 with only the type (kinesalite, which mirrors AWS's front end, records it).
    assert isinstance(result, HttpResponse) and (result.status, json.loads(result.body)) == (400, {"__type": "UnknownOperationException"})


def test_moto_alone_serves_a_mis_cased_target(moto_endpoint, keys, nobody):
    """The gap the routing closes: moto maps ``decrypt`` (and its internal names) to methods."""
    params = {"CiphertextBlob": b64(keys.ciphertext)}
    assert moto_alone(moto_endpoint, "decrypt", params, nobody)[0] == 200
    assert moto_alone(moto_endpoint, "EmulatorCiphertextKeyId", params, nobody)[0] == 200


def test_unknown_operation_through_tls(front, ca_file):
    status, content_type, body = http_post(front.endpoint_url, *request("TrentService.decrypt", b"{}"), ca_file=ca_file[1])
    assert (status, content_type, json.loads(body)) == (400, "application/x-amz-json-1.1", {"__type": "UnknownOperationException"})


# --- 2. request bodies: SerializationException / ValidationException as AWS words them -----------

LONG_TAG = "a" * 129  # as LocalStack's recorded answer


def recorded(test: str, match: str, **placeholders: str) -> dict[str, str]:
    """A real KMS answer LocalStack recorded, as the JSON body the front must send."""
    code, words = localstack_error(test, match, **placeholders)
    return {"__type": code, "message": words}


@pytest.mark.parametrize(
    ("operation", "params", "expected"),
    [
        # wrong JSON types: AWS's JSON deserializer (kinesalite's record of it)
        ("DescribeKey", {"KeyId": ["a"]}, {"__type": "SerializationException", "Message": "Start of list found where not expected"}),
        ("DescribeKey", {"KeyId": {"a": 1}}, {"__type": "SerializationException", "Message": "Start of structure or map found where not expected."}),
        ("DescribeKey", {"KeyId": 5}, {"__type": "SerializationException", "Message": "class java.math.BigDecimal can not be converted to an String"}),
        ("DescribeKey", {"KeyId": True}, {"__type": "SerializationException", "Message": "class java.lang.Boolean can not be converted to an String"}),
        ("GenerateRandom", {"NumberOfBytes": "16"}, {"__type": "SerializationException", "Message": "class java.lang.String can not be converted to an Integer"}),
        ("CreateKey", {"Tags": {"TagKey": "k"}}, {"__type": "SerializationException", "Message": "Start of structure or map found where not expected."}),
        ("CreateKey", {"Tags": "k"}, {"__type": "SerializationException", "Message": "Expected list or null"}),
        ("Decrypt", {"CiphertextBlob": "abc"},
         {"__type": "SerializationException", "Message": "'abc' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 3"}),
        ("Decrypt", {"CiphertextBlob": "ab!="}, {"__type": "SerializationException", "Message": "'ab!=' can not be converted to a Blob: Invalid Base64 character: '!'"}),
        # a sensitive member (the model's trait) is never echoed, as in validation messages
        ("Encrypt", {"KeyId": "k", "Plaintext": "TXlTZWNyZXQ"},
         {"__type": "SerializationException", "Message": "Value can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 11"}),
        ("Encrypt", {"KeyId": "k", "Plaintext": "TXlTZWNyZXQ!"}, {"__type": "SerializationException", "Message": "Value can not be converted to a Blob: Invalid Base64 character: '!'"}),
        ("Sign", {"KeyId": "k", "Message": "c2VjcmV0IG9yZGVy=x==", "SigningAlgorithm": "ECDSA_SHA_256"},
         {"__type": "SerializationException", "Message": "Value can not be converted to a Blob: Invalid Base64 character: '='"}),
        ("Encrypt", {"KeyId": "k", "Plaintext": "aGk=", "EncryptionContext": ["a"]}, {"__type": "SerializationException", "Message": "Start of list found where not expected"}),
        ("Decrypt", {"Recipient": "doc"}, {"__type": "SerializationException", "Message": "Expected null"}),
        # constraints: real KMS answers LocalStack recorded, word for word (tests/data/kms/)
        ("GenerateRandom", {"NumberOfBytes": 0}, recorded("test_generate_random_invalid_number_of_bytes[0]", "generate-random-exc")),
        ("GenerateRandom", {"NumberOfBytes": 1025}, recorded("test_generate_random_invalid_number_of_bytes[1025]", "generate-random-exc")),
        ("GenerateRandom", {}, recorded("test_generate_random_invalid_number_of_bytes[None]", "generate-random-exc")),
        ("Encrypt", {"KeyId": "k", "Plaintext": b64(bytes(4097))}, recorded("test_plaintext_size_for_encrypt", "invalid-plaintext-size-encrypt")),
        ("DeriveSharedSecret", {"KeyId": "k", "KeyAgreementAlgorithm": "INVALID", "PublicKey": "aGk="}, recorded("test_derive_shared_secret", "response-invalid-key-agreement-algo")),
        # recorded for CreateKey's tags: the same member shape as TagResource's
        ("TagResource", {"KeyId": "k", "Tags": [{"TagKey": LONG_TAG, "TagValue": "v"}]}, recorded("test_create_key_with_invalid_tag_key[too_long_key]", "invalid-tag-key")),
        # required members and nested structures, in the same wording
        ("DescribeKey", {}, {"__type": "ValidationException", "message": "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null"}),
        ("DescribeKey", {"KeyId": None}, {"__type": "ValidationException", "message": "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null"}),
        ("Decrypt", {"CiphertextBlob": "aGk=", "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_1"}}, {"__type": "ValidationException", "message": "1 validation error detected: Value 'RSAES_OAEP_SHA_1' at 'recipient.keyEncryptionAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [RSAES_OAEP_SHA_256]"}),
        ("Encrypt", {"KeyId": "", "Plaintext": ""}, {"__type": "ValidationException", "message": "2 validation errors detected: Value '' at 'keyId' failed to satisfy constraint: Member must have length greater than or equal to 1; Value at 'plaintext' failed to satisfy constraint: Member must have length greater than or equal to 1"}),
    ],
)  # fmt: skip
def test_malformed_requests_are_refused_as_aws_refuses_them(model, operation, params, expected):
    assert post(model, operation, params) == (400, expected)


def test_enum_constraint_lists_the_model_values(model, keys):
    status, body = post(model, "GenerateMac", {"KeyId": keys.mac, "Message": "bQ==", "MacAlgorithm": "INVALID"})
    assert (status, body["__type"]) == (400, "ValidationException")
    # Real KMS (LocalStack's snapshot) lists the same values in its own order.
    real = localstack_error("test_invalid_generate_mac[HMAC_256-INVALID]", "generate-mac")[1]
    prefix = real[: real.index("[") + 1]
    assert body["message"].startswith(prefix)
    assert set(body["message"][len(prefix) : -1].split(", ")) == set(real[len(prefix) : -1].split(", "))


def test_unknown_members_and_nulls_are_ignored(model, keys):
    result = dispatch(model, *request("TrentService.DescribeKey", {"KeyId": keys.sym, "Bogus": [1], "GrantTokens": None}))
    assert isinstance(result, Passthrough) and json.loads(result.body) == {"KeyId": keys.sym}


def test_a_list_as_key_id_through_boto3_is_a_400(front, ca_file):
    # botocore validates client-side, so send the bytes another SDK (or a bug) could send.
    status, _, body = http_post(front.endpoint_url, *request("TrentService.Decrypt", b'{"CiphertextBlob": "aGk=", "KeyId": ["a", "b"]}'), ca_file=ca_file[1])
    assert (status, json.loads(body)) == (400, {"__type": "SerializationException", "Message": "Start of list found where not expected"})


# --- 3. callers: the access key id, resolved as AWS resolves it ----------------------------------


@pytest.mark.parametrize(
    ("authorization", "code", "text"),
    [
        (None, "MissingAuthenticationTokenException", "Missing Authentication Token"),
        ("", "MissingAuthenticationTokenException", "Missing Authentication Token"),
        ("AWS4-HMAC-SHA256 Credential=zerocopy-emulator/20250101/us-east-1/kms/aws4_request, SignedHeaders=host", "IncompleteSignatureException", "Authorization header requires 'Signature' parameter."),
        ("Bearer token", "IncompleteSignatureException", "Authorization header requires 'Credential' parameter."),
        ("AWS4-HMAC-SHA256 Credential=zerocopy-emulator, SignedHeaders=host, Signature=0", "IncompleteSignatureException",
         "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got 'zerocopy-emulator'"),
        ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0",
         "UnrecognizedClientException", "The security token included in the request is invalid."),
        ("AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0",
         "UnrecognizedClientException", "The security token included in the request is invalid."),
    ],
)  # fmt: skip
def test_requests_without_a_known_caller_are_refused(model, authorization, code, text):
    headers, body = request("TrentService.ListKeys", b"{}")
    del headers["Authorization"]
    if authorization is not None:
        headers["Authorization"] = authorization
    result = dispatch(model, headers, body)
    assert isinstance(result, HttpResponse) and result.status == 400
    body = json.loads(result.body)
    assert body["__type"] == code and text in message(body)


def test_unknown_access_key_through_boto3(clients):
    with aws_error("UnrecognizedClientException", "The security token included in the request is invalid."):
        clients(Creds("AKIAUNKNOWN000000000")).list_keys()


INVALID_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)


def test_signatures_are_checked_as_aws_checks_them(aws, clients, model, moto_endpoint, keys):
    alice = user_key(aws, "signer-alice", allow("kms:DescribeKey"))
    assert clients(alice).describe_key(KeyId=keys.sym)["KeyMetadata"]["Arn"] == keys.sym
    with aws_error("InvalidSignatureException", INVALID_SIGNATURE):
        clients(alice._replace(secret="not-her-secret")).describe_key(KeyId=keys.sym)
    with aws_error("InvalidSignatureException", INVALID_SIGNATURE):
        clients(ROOT._replace(secret="not-the-emulator-secret")).list_keys()
    headers, body = request("TrentService.DescribeKey", {"KeyId": keys.sym}, alice)
    tampered = json.dumps({"KeyId": keys.sym2}).encode()
    assert post_raw(model, headers, tampered) == (400, {"__type": "InvalidSignatureException", "message": INVALID_SIGNATURE})
    # moto alone takes any secret.
    assert moto_alone(moto_endpoint, "DescribeKey", {"KeyId": keys.sym}, alice._replace(secret="wrong"))[0] == 200


def test_session_credentials_need_their_token(aws, clients, keys):
    session = role_session(aws, "token-check", allow("kms:DescribeKey"))
    assert clients(session).describe_key(KeyId=keys.sym)["KeyMetadata"]["Arn"] == keys.sym
    for token in (None, "not-the-token"):
        with aws_error("UnrecognizedClientException", "The security token included in the request is invalid."):
            clients(session._replace(token=token)).describe_key(KeyId=keys.sym)


def test_an_inactive_access_key_is_unrecognized(aws, clients):
    frank = user_key(aws, "frank", allow("kms:ListKeys"))
    assert "Keys" in clients(frank).list_keys()
    aws.iam.update_access_key(UserName="frank", AccessKeyId=frank.access_key, Status="Inactive")
    with aws_error("UnrecognizedClientException", "The security token included in the request is invalid."):
        clients(frank).list_keys()


def signed_for(access_key: str, secret: str, *, service: str = "kms", region: str = REGION, body: bytes = b"{}") -> dict[str, str]:
    """The headers botocore signs for a ListKeys with this credential scope (service, region)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request_ = AWSRequest(method="POST", url=f"https://{KMS_HOST}/", data=body, headers={"X-Amz-Target": "TrentService.ListKeys", "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(access_key, secret), service, region).add_auth(request_)
    return {**dict(request_.headers.items()), "Host": KMS_HOST}


@pytest.mark.parametrize(("service", "region", "words"), [
    ("kms", "eu-west-1", aws_words("wrong-region-in-scope", region="eu-west-1")),
    ("s3", REGION, aws_words("wrong-service-in-scope", service="kms")),
    ("s3", "eu-west-1", aws_words("wrong-region-in-scope", region="eu-west-1")),
])  # fmt: skip
def test_a_credential_scope_of_another_region_or_service_is_refused(front, ca_file, service, region, words):
    status, _, body = http_post(front.endpoint_url, signed_for(ROOT.access_key, ROOT.secret, service=service, region=region), b"{}", ca_file=ca_file[1])
    assert (status, json.loads(body)) == (400, {"__type": words[0], "message": words[1]})


def test_a_long_term_key_with_a_session_token_is_unrecognized(clients, aws):
    lister = user_key(aws, "token-lister", allow("kms:ListKeys"))
    for creds in (ROOT, lister):
        assert "Keys" in clients(creds).list_keys()
        with aws_error(*aws_words("invalid-token")):
            clients(creds._replace(token="FQoGZXIvYXdzEXAMPLE")).list_keys()


def test_an_expired_session_is_refused(aws, clients, keys):
    """Sessions expire as on AWS. (botocore refuses DurationSeconds below AWS's 900 client-side;
    moto takes a shorter one, so the test need not wait a quarter of an hour.)"""
    import time

    aws.iam.create_role(RoleName="short-lived", AssumeRolePolicyDocument=TRUST_EC2)
    aws.iam.put_role_policy(RoleName="short-lived", PolicyName="d", PolicyDocument=allow("kms:DescribeKey"))
    unchecked = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=REGION).client(
        "sts", endpoint_url=aws.sts.meta.endpoint_url, config=Config(parameter_validation=False, retries={"total_max_attempts": 1}))  # fmt: skip
    try:
        found = unchecked.assume_role(RoleArn=role_arn("short-lived"), RoleSessionName="brief", DurationSeconds=1)["Credentials"]
    finally:
        unchecked.close()
    session = clients(Creds(found["AccessKeyId"], found["SecretAccessKey"], found["SessionToken"]))
    time.sleep(max(0.0, (found["Expiration"] - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 0.2)
    with aws_error(*aws_words("expired-token")):
        session.describe_key(KeyId=keys.sym)


def test_a_non_ascii_signature_is_an_invalid_signature_not_a_crash(front, ca_file):
    headers, body = request("TrentService.ListKeys", b"{}")
    headers["Authorization"] = headers["Authorization"].rsplit("Signature=", 1)[0] + "Signature=\u00e9t\u00e9"
    status, _, answer = http_post(front.endpoint_url, headers, body, ca_file=ca_file[1])
    assert (status, json.loads(answer)) == (400, {"__type": "InvalidSignatureException", "message": INVALID_SIGNATURE})


def post_raw(model: AttestingKms, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    result = dispatch(model, headers, body)
    assert isinstance(result, HttpResponse)
    return result.status, json.loads(result.body)


def test_callers_are_the_principals_aws_would_name(model, aws, nobody):
    role = role_session(aws, "caller-check")
    def identify(creds: Creds) -> Any:
        headers, body = request(None, b"{}", creds)
        lowered = {name.lower(): [value] for name, value in headers.items()}
        return model.identify(lambda name: lowered.get(name.lower(), []), body)

    assert identify(ROOT) == model.root
    assert identify(nobody).arn == f"arn:aws:iam::{ACCOUNT_ID}:user/nobody"
    session = identify(role)
    assert (session.arn, session.kind, session.name) == (f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/caller-check/i-0123456789abcdef0", "session", "caller-check")


# --- 4. authorization of every operation -----------------------------------------------------------


class _Fresh:
    """Fresh things a destructive request may consume (moto alone really performs it), made on first use."""

    def __init__(self, aws: SimpleNamespace, n: int) -> None:
        self._aws, self._n = aws, n
        self.alias, self.new_alias = f"alias/fresh-{n}", f"alias/new-{n}"

    def __getattr__(self, name: str) -> str:
        kms = self._aws.kms
        if name == "key":
            value = kms.create_key()["KeyMetadata"]["Arn"]
        elif name == "doomed":
            value = kms.create_key()["KeyMetadata"]["Arn"]
            kms.schedule_key_deletion(KeyId=value, PendingWindowInDays=7)
        elif name == "grant_id":
            value = kms.create_grant(KeyId=self.key, GranteePrincipal=f"arn:aws:iam::{ACCOUNT_ID}:user/alice", Operations=["Decrypt"])["GrantId"]
        else:
            raise AttributeError(name)
        setattr(self, name, value)
        return value


@pytest.fixture(scope="module")
def resources(aws: SimpleNamespace, keys: SimpleNamespace) -> Callable[[], Any]:
    counter = iter(range(10_000))

    def fresh() -> Any:
        made = _Fresh(aws, next(counter))
        aws.kms.create_alias(AliasName=made.alias, TargetKeyId=keys.sym2)
        return made

    return fresh


def operation_params(operation: str, keys: SimpleNamespace, fresh: SimpleNamespace) -> dict[str, Any]:
    """A request the model accepts, for a key of the right usage: what moto alone would serve."""
    message_b64 = b64(b"m")
    peer = b64(keys.peer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    store = {"CustomKeyStoreId": "cks-1234567890abcdef0"}
    table: dict[str, Callable[[], dict[str, Any]]] = {  # lambdas: make only what this operation needs
        "CancelKeyDeletion": lambda: {"KeyId": fresh.doomed},
        "ConnectCustomKeyStore": lambda: store,
        "CreateAlias": lambda: {"AliasName": fresh.new_alias, "TargetKeyId": keys.sym},
        "CreateCustomKeyStore": lambda: {"CustomKeyStoreName": "store"},
        "CreateGrant": lambda: {"KeyId": keys.sym, "GranteePrincipal": f"arn:aws:iam::{ACCOUNT_ID}:user/alice", "Operations": ["Decrypt"]},
        "CreateKey": lambda: {},
        "Decapsulate": lambda: {"KeyId": keys.sym, "SharedSecretCiphertextBlob": message_b64, "EncapsulationAlgorithm": "ML_KEM"},
        "Decrypt": lambda: {"CiphertextBlob": b64(keys.ciphertext)},
        "DeleteAlias": lambda: {"AliasName": fresh.alias},
        "DeleteCustomKeyStore": lambda: store,
        "DeleteImportedKeyMaterial": lambda: {"KeyId": keys.sym},
        "DeriveSharedSecret": lambda: {"KeyId": keys.agree, "KeyAgreementAlgorithm": "ECDH", "PublicKey": peer},
        "DescribeCustomKeyStores": lambda: {},
        "DescribeKey": lambda: {"KeyId": keys.sym},
        "DisableKey": lambda: {"KeyId": fresh.key},
        "DisableKeyRotation": lambda: {"KeyId": keys.sym},
        "DisconnectCustomKeyStore": lambda: store,
        "EnableKey": lambda: {"KeyId": keys.sym},
        "EnableKeyRotation": lambda: {"KeyId": keys.sym},
        "Encapsulate": lambda: {"KeyId": keys.sym, "EncapsulationAlgorithm": "ML_KEM"},
        "Encrypt": lambda: {"KeyId": keys.sym, "Plaintext": message_b64},
        "GenerateDataKey": lambda: {"KeyId": keys.sym, "KeySpec": "AES_256"},
        "GenerateDataKeyPair": lambda: {"KeyId": keys.sym, "KeyPairSpec": "ECC_NIST_P256"},
        "GenerateDataKeyPairWithoutPlaintext": lambda: {"KeyId": keys.sym, "KeyPairSpec": "ECC_NIST_P256"},
        "GenerateDataKeyWithoutPlaintext": lambda: {"KeyId": keys.sym, "KeySpec": "AES_256"},
        "GenerateMac": lambda: {"KeyId": keys.mac, "Message": message_b64, "MacAlgorithm": "HMAC_SHA_256"},
        "GenerateRandom": lambda: {"NumberOfBytes": 16},
        "GetKeyLastUsage": lambda: {"KeyId": keys.sym},
        "GetKeyPolicy": lambda: {"KeyId": keys.sym, "PolicyName": "default"},
        "GetKeyRotationStatus": lambda: {"KeyId": keys.sym},
        "GetParametersForImport": lambda: {"KeyId": keys.sym, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"},
        "GetPublicKey": lambda: {"KeyId": keys.sig},
        "ImportKeyMaterial": lambda: {"KeyId": keys.sym, "ImportToken": message_b64, "EncryptedKeyMaterial": message_b64},
        "ListAliases": lambda: {},
        "ListGrants": lambda: {"KeyId": keys.sym},
        "ListKeyPolicies": lambda: {"KeyId": keys.sym},
        "ListKeyRotations": lambda: {"KeyId": keys.sym},
        "ListKeys": lambda: {},
        "ListResourceTags": lambda: {"KeyId": keys.sym},
        "ListRetirableGrants": lambda: {"RetiringPrincipal": f"arn:aws:iam::{ACCOUNT_ID}:user/alice"},
        "PutKeyPolicy": lambda: {"KeyId": fresh.key, "PolicyName": "default", "Policy": json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"}]})},
        "ReEncrypt": lambda: {"CiphertextBlob": b64(keys.ciphertext), "DestinationKeyId": keys.sym2},
        "ReplicateKey": lambda: {"KeyId": keys.multi_region, "ReplicaRegion": "eu-west-1"},
        "RetireGrant": lambda: {"KeyId": fresh.key, "GrantId": fresh.grant_id},
        "RevokeGrant": lambda: {"KeyId": fresh.key, "GrantId": fresh.grant_id},
        "RotateKeyOnDemand": lambda: {"KeyId": keys.sym},
        "ScheduleKeyDeletion": lambda: {"KeyId": fresh.key, "PendingWindowInDays": 7},
        "Sign": lambda: {"KeyId": keys.sig, "Message": message_b64, "SigningAlgorithm": "ECDSA_SHA_256"},
        "TagResource": lambda: {"KeyId": keys.sym, "Tags": [{"TagKey": "k", "TagValue": "v"}]},
        "UntagResource": lambda: {"KeyId": keys.sym, "TagKeys": ["k"]},
        "UpdateAlias": lambda: {"AliasName": fresh.alias, "TargetKeyId": keys.sym2},
        "UpdateCustomKeyStore": lambda: store,
        "UpdateKeyDescription": lambda: {"KeyId": keys.sym, "Description": "d"},
        "UpdatePrimaryRegion": lambda: {"KeyId": keys.sym, "PrimaryRegion": "eu-west-1"},
        "Verify": lambda: {"KeyId": keys.sig, "Message": message_b64, "Signature": b64(keys.signature), "SigningAlgorithm": "ECDSA_SHA_256"},
        "VerifyMac": lambda: {"KeyId": keys.mac, "Message": message_b64, "MacAlgorithm": "HMAC_SHA_256", "Mac": b64(keys.mac_value)},
    }
    return table[operation]()


#: Operations moto (with the emulator's additions) cannot perform at all: key material import and
#: multi-Region calls. moto answers them UnsupportedOperationException; the front still refuses the
#: caller first, as AWS would.
NOT_EMULATED = frozenset({"DeleteImportedKeyMaterial", "GetParametersForImport", "ImportKeyMaterial", "UpdatePrimaryRegion"})
#: Operations on what the emulated account never has (custom key stores, ML-KEM keys) and the
#: last-usage call: the emulator answers as AWS answers an account without them (see LACKING).
ANSWERED_AS_ABSENT = frozenset(
    {
        "ConnectCustomKeyStore", "CreateCustomKeyStore", "DeleteCustomKeyStore", "DescribeCustomKeyStores",
        "DisconnectCustomKeyStore", "UpdateCustomKeyStore", "Encapsulate", "Decapsulate", "GetKeyLastUsage",
    }
)  # fmt: skip


#: Operations on no key, which IAM alone authorizes (AWS's KMS permissions reference: no resource).
ON_NO_KEY = frozenset(
    {
        "CreateKey", "ListKeys", "ListAliases", "ListRetirableGrants", "GenerateRandom", "CreateCustomKeyStore",
        "ConnectCustomKeyStore", "DeleteCustomKeyStore", "DescribeCustomKeyStores", "DisconnectCustomKeyStore", "UpdateCustomKeyStore",
    }
)  # fmt: skip


def named_resource(operation: str, params: dict[str, Any], keys: SimpleNamespace) -> str:
    """The resource AWS names in the first refusal of ``operation``: the key it touches first (its
    ARN, which every request here names it by), the alias for alias calls, ``*`` for calls on no key."""
    if operation in ON_NO_KEY or (operation == "RetireGrant" and "KeyId" not in params):
        return "*"
    if operation in ("CreateAlias", "UpdateAlias", "DeleteAlias"):
        return f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{params['AliasName']}"  # the alias is authorized first
    if operation in ("Decrypt", "ReEncrypt"):
        return keys.sym  # the key the ciphertext was made under
    assert params["KeyId"].startswith("arn:aws:kms:"), params
    return params["KeyId"]


@pytest.mark.parametrize("operation", sorted(service_model.operation_names()))
def test_every_operation_is_authorized_where_moto_alone_serves_it(model, moto_endpoint, keys, resources, nobody, operation):
    """A caller with no IAM policy gets nothing, though every key policy delegates to the account.

    AWS: the default key policy's account principal hands the decision to IAM, and no identity
    policy allows anything, so every operation is refused; moto alone serves them all.
    """
    params = operation_params(operation, keys, resources())
    assert set(service_model.required_members(operation)) <= set(params)
    status, body = post(model, operation, params, nobody)
    action = "kms:ReEncryptFrom" if operation == "ReEncrypt" else f"kms:{operation}"
    assert (status, body["__type"]) == (400, "AccessDeniedException"), body
    resource = named_resource(operation, params, keys)
    expected = f"User: arn:aws:iam::{ACCOUNT_ID}:user/nobody is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action"
    assert body["Message"] == expected
    alone_status, alone_body = moto_alone(moto_endpoint, operation, operation_params(operation, keys, resources()), nobody)
    if operation in NOT_EMULATED:
        assert alone_body.get("__type") == "UnsupportedOperationException", alone_body
    elif operation in ANSWERED_AS_ABSENT:  # served without asking who calls: a model answer, never a refusal
        assert alone_status == 200 or alone_body.get("__type") in service_model.error_codes(operation) - {"AccessDeniedException"}, alone_body
    else:
        assert alone_status == 200, (operation, alone_body)


def test_the_resource_is_the_key_an_alias_names(model, keys, nobody):
    status, body = post(model, "Encrypt", {"KeyId": "alias/fidelity", "Plaintext": "bQ=="}, nobody)
    assert status == 400 and f"on resource: {keys.sym} because" in body["Message"]


def test_decrypt_without_key_id_is_authorized_on_the_ciphertext_key(model, aws):
    denied_key = aws.kms.create_key(Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "NoDecrypt", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}]}))["KeyMetadata"]["Arn"]  # fmt: skip
    blob = aws.kms.encrypt(KeyId=denied_key, Plaintext=b"x")["CiphertextBlob"]
    status, body = post(model, "Decrypt", {"CiphertextBlob": b64(blob)})
    assert (status, body["Message"]) == (400, f"User: {ROOT_ARN} is not authorized to perform: kms:Decrypt on resource: {denied_key} {EXPLICIT_DENY}")


def test_reencrypt_needs_both_actions(model, aws, keys):
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "NotHere", "Effect": "Deny", "Principal": "*", "Action": "kms:ReEncryptTo", "Resource": "*"}]}  # fmt: skip
    no_target = aws.kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
    status, body = post(model, "ReEncrypt", {"CiphertextBlob": b64(keys.ciphertext), "DestinationKeyId": no_target})
    assert (status, body["Message"]) == (400, f"User: {ROOT_ARN} is not authorized to perform: kms:ReEncryptTo on resource: {no_target} {EXPLICIT_DENY}")
    assert isinstance(dispatch(model, *request("TrentService.ReEncrypt", {"CiphertextBlob": b64(keys.ciphertext), "DestinationKeyId": keys.sym2})), Passthrough)


def test_source_key_id_must_match_the_ciphertext(model, keys):
    status, body = post(model, "ReEncrypt", {"CiphertextBlob": b64(keys.ciphertext), "SourceKeyId": keys.sym2, "DestinationKeyId": keys.sym2})
    assert (status, body) == (400, recorded("test_re_encrypt_incorrect_source_key", "incorrect-source-key"))


def test_the_emulator_names_the_deciding_statement_in_a_header(front, ca_file, keys, nobody):
    """AWS's message never says which statement decided; the emulator adds it in a header of its own."""
    import http.client
    import ssl

    connection = http.client.HTTPSConnection("127.0.0.1", front.port, context=ssl.create_default_context(cafile=ca_file[1]), timeout=30)
    try:
        headers, body = request("TrentService.Encrypt", {"KeyId": keys.sym, "Plaintext": "bQ=="}, nobody)
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        assert json.loads(response.read())["__type"] == "AccessDeniedException"
        assert response.getheader(REASON_HEADER) == "allowed by statement 'Enable IAM User Permissions' (the account: IAM decides); no identity-based policy allows kms:Encrypt"
    finally:
        connection.close()


# --- 5. principals: a role ARN means that role; the account delegates to IAM -------------------


@pytest.fixture(scope="module")
def host(aws: SimpleNamespace, clients: Callable[..., Any]) -> Any:
    """The parent instance's role exactly as SECURITY.md ("Outside ZeroCopy") gives it: ``kms:Decrypt``."""
    credentials = role_session(aws, "zerocopy-host", allow("kms:Decrypt"))
    return clients(credentials)


HOST_SESSION = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/zerocopy-host/i-0123456789abcdef0"


@pytest.fixture(scope="module")
def sealed(aws: SimpleNamespace, pinned_key: str) -> dict[str, bytes]:
    """A data key under the pinned key, as ``zerocopy seal`` makes it (by the operator, not the host)."""
    generated = aws.kms.generate_data_key(KeyId=pinned_key, KeySpec="AES_256", EncryptionContext=CONTEXT)
    return {"blob": generated["CiphertextBlob"], "plaintext": generated["Plaintext"]}


def test_the_host_role_can_provision_but_not_decrypt(host, pinned_key, sealed, document, enclave_key, moto_endpoint, aws):
    # Provisioning: the enclave calls Decrypt with the host's credentials and its attestation document.
    response = host.decrypt(CiphertextBlob=sealed["blob"], EncryptionContext=CONTEXT, KeyId=pinned_key, Recipient=attested(document))
    assert "Plaintext" not in response and response["KeyId"] == pinned_key
    assert decrypt_ciphertext_for_recipient(response["CiphertextForRecipient"], enclave_key) == sealed["plaintext"]
    # The host itself: the key policy's Deny without attestation (raw KMS wording, aws-nitro-enclaves-sdk-c#157).
    with aws_error("AccessDeniedException", f"User: {HOST_SESSION} is not authorized to perform: kms:Decrypt on resource: {pinned_key} {EXPLICIT_DENY}"):
        host.decrypt(CiphertextBlob=sealed["blob"], EncryptionContext=CONTEXT)
    with aws_error("AccessDeniedException", f"kms:ReEncryptFrom on resource: {pinned_key} {EXPLICIT_DENY}"):
        host.re_encrypt(CiphertextBlob=sealed["blob"], SourceEncryptionContext=CONTEXT, DestinationKeyId=pinned_key)


def test_the_host_role_needs_generate_data_key_for_zerocopy_generate(aws, clients, pinned_key, document, enclave_key):
    """``zerocopy generate`` asks KMS for a data key with Recipient: kms:GenerateDataKey, not only Decrypt.
    The key policy lets the role use it only so: on its own it cannot make a bundle under the key."""
    decrypt_only = role_session(aws, "host-decrypt-only", allow("kms:Decrypt"))
    generator = role_session(aws, "host-generator", allow("kms:Decrypt", "kms:GenerateDataKey"))
    refused = clients(decrypt_only)
    with aws_error("AccessDeniedException", "because no identity-based policy allows the kms:GenerateDataKey action"):
        refused.generate_data_key(KeyId=pinned_key, KeySpec="AES_256", EncryptionContext=CONTEXT, Recipient=attested(document))
    allowed = clients(generator)
    response = allowed.generate_data_key(KeyId=pinned_key, KeySpec="AES_256", EncryptionContext=CONTEXT, Recipient=attested(document))
    assert "Plaintext" not in response and len(decrypt_ciphertext_for_recipient(response["CiphertextForRecipient"], enclave_key)) == 32
    session = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/host-generator/i-0123456789abcdef0"
    with aws_error("AccessDeniedException", f"User: {session} is not authorized to perform: kms:GenerateDataKey on resource: {pinned_key} {EXPLICIT_DENY}"):
        allowed.generate_data_key(KeyId=pinned_key, KeySpec="AES_256", EncryptionContext=CONTEXT)


def test_only_the_sealers_seal_under_a_pinned_key_without_attestation(aws, clients, nsm, document):
    """`zerocopy kms-policy`: GenerateDataKey* and Encrypt need the attestation, except for the
    sealers (aws:PrincipalArn; the account root by default) — so `zerocopy seal` works and a role
    with kms:* in IAM but not named a sealer cannot make bundles under the key."""
    operator_role = f"arn:aws:iam::{ACCOUNT_ID}:role/team/zerocopy-operator"
    aws.iam.create_role(RoleName="zerocopy-operator", Path="/team/", AssumeRolePolicyDocument=TRUST_EC2)
    aws.iam.put_role_policy(RoleName="zerocopy-operator", PolicyName="all", PolicyDocument=allow("kms:*"))
    operator = clients(assume_path(aws, operator_role))
    administrator = clients(role_session(aws, "key-administrator", allow("kms:*")))
    by_default = aws.kms.create_key(Policy=json.dumps(attested_key_policy(ACCOUNT_ID, image_sha384=nsm.pcrs[0])))["KeyMetadata"]["Arn"]
    named = aws.kms.create_key(Policy=json.dumps(attested_key_policy(ACCOUNT_ID, image_sha384=nsm.pcrs[0], sealers=[operator_role])))["KeyMetadata"]["Arn"]
    assert len(clients().generate_data_key(KeyId=by_default, KeySpec="AES_256", EncryptionContext=CONTEXT)["Plaintext"]) == 32  # the root
    assert len(operator.generate_data_key(KeyId=named, KeySpec="AES_256", EncryptionContext=CONTEXT)["Plaintext"]) == 32  # the role's ARN, path and all
    for client, key in ((clients(), named), (administrator, named), (administrator, by_default), (operator, by_default)):
        for action, call in (("GenerateDataKey", lambda: client.generate_data_key(KeyId=key, KeySpec="AES_256")),
                             ("GenerateDataKeyWithoutPlaintext", lambda: client.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_256")),
                             ("Encrypt", lambda: client.encrypt(KeyId=key, Plaintext=b"a bundle of the caller's"))):  # fmt: skip
            with aws_error("AccessDeniedException", f"kms:{action} on resource: {key} {EXPLICIT_DENY}"):
                call()
    # ... and no sealer decrypts: that stays the attested enclave's alone.
    blob = operator.encrypt(KeyId=named, Plaintext=b"sealed by the operator")["CiphertextBlob"]
    with aws_error("AccessDeniedException", f"kms:Decrypt on resource: {named} {EXPLICIT_DENY}"):
        operator.decrypt(CiphertextBlob=blob)


def assume_path(aws: SimpleNamespace, role_arn: str) -> Creds:
    credentials = aws.sts.assume_role(RoleArn=role_arn, RoleSessionName="operator-laptop")["Credentials"]
    return Creds(credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"])


def test_a_role_without_the_iam_grant_is_refused(aws, clients, pinned_key, sealed, document, moto_endpoint):
    credentials = role_session(aws, "no-kms-host")
    bare = clients(credentials)
    with aws_error("AccessDeniedException", "because no identity-based policy allows the kms:Decrypt action"):
        bare.decrypt(CiphertextBlob=sealed["blob"], EncryptionContext=CONTEXT, KeyId=pinned_key, Recipient=attested(document))
    # moto alone hands that role the plaintext.
    status, body = moto_alone(moto_endpoint, "Decrypt", {"CiphertextBlob": b64(sealed["blob"]), "EncryptionContext": CONTEXT}, credentials)
    assert status == 200 and base64.b64decode(body["Plaintext"]) == sealed["plaintext"]


def test_a_key_policy_naming_another_role_refuses_this_one(aws, clients, host, nsm, document, enclave_key):
    """A role ARN in a key policy means that role only: the host's IAM grant does not reach this key."""
    image = nsm.pcrs[0].hex()
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "AdminButNoDecrypt", "Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "NotAction": "kms:Decrypt", "Resource": "*"},
        {"Sid": "OtherEnclaveRole", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:role/other-enclave-host"},
         "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": image}}}]}  # fmt: skip
    key = aws.kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
    blob = aws.kms.encrypt(KeyId=key, Plaintext=b"for the other role", EncryptionContext=CONTEXT)["CiphertextBlob"]
    with aws_error("AccessDeniedException", f"User: {HOST_SESSION} is not authorized to perform: kms:Decrypt on resource: {key} because no resource-based policy allows the kms:Decrypt action"):
        host.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT, KeyId=key, Recipient=attested(document))
    # The named role needs no IAM policy: a key policy naming it is enough (same account).
    other = role_session(aws, "other-enclave-host")
    response = clients(other).decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT, Recipient=attested(document))
    assert decrypt_ciphertext_for_recipient(response["CiphertextForRecipient"], enclave_key) == b"for the other role"


def _kms_policy_command(*argv: str) -> str:
    """What ``zerocopy kms-policy ARGV`` prints (stdout), run in-process."""
    import contextlib
    import io

    from zerocopy._cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["kms-policy", *argv, "--account", ACCOUNT_ID]) == 0
    return out.getvalue()


def test_kms_policy_role_and_operator_are_enforced_as_aws_would(aws, clients, pki, nsm, document, enclave_key):
    """`zerocopy kms-policy --pcr0 … --role HOST --operator OPERATOR`, as printed, on a key: neither
    role has an IAM grant. The host role provisions (Decrypt, GenerateDataKey with the image's
    attestation) and cannot decrypt, seal or use another image's attestation; the operator seals
    (Encrypt, GenerateDataKey without Recipient) and cannot decrypt; the root is no sealer now."""
    host_arn, operator_arn = (f"arn:aws:iam::{ACCOUNT_ID}:role/{name}" for name in ("policy-named-host", "policy-named-operator"))
    host, operator = clients(role_session(aws, "policy-named-host")), clients(role_session(aws, "policy-named-operator"))
    policy = _kms_policy_command("--pcr0", nsm.pcrs[0].hex(), "--role", host_arn, "--operator", operator_arn)
    key = aws.kms.create_key(Policy=policy)["KeyMetadata"]["Arn"]
    sealed = operator.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=CONTEXT)
    encrypted = operator.encrypt(KeyId=key, Plaintext=b"sealed by the operator", EncryptionContext=CONTEXT)["CiphertextBlob"]
    response = host.decrypt(CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=CONTEXT, KeyId=key, Recipient=attested(document))
    assert "Plaintext" not in response and decrypt_ciphertext_for_recipient(response["CiphertextForRecipient"], enclave_key) == sealed["Plaintext"]
    generated = host.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=CONTEXT, Recipient=attested(document))
    assert len(decrypt_ciphertext_for_recipient(generated["CiphertextForRecipient"], enclave_key)) == 32
    other_image = EmulatedNsm(pki, module_id=MODULE_ID, pcrs=sample_pcrs(b"another-enclave")).attestation_document(public_key=spki_der(enclave_key), nonce=b"other")
    host_session = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/policy-named-host/i-0123456789abcdef0"
    operator_session = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/policy-named-operator/i-0123456789abcdef0"
    refused = [
        (host_session, "kms:Decrypt", lambda: host.decrypt(CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=CONTEXT)),
        (host_session, "kms:Decrypt", lambda: host.decrypt(CiphertextBlob=encrypted, EncryptionContext=CONTEXT, Recipient=attested(other_image))),
        (host_session, "kms:GenerateDataKey", lambda: host.generate_data_key(KeyId=key, KeySpec="AES_256")),
        (host_session, "kms:Encrypt", lambda: host.encrypt(KeyId=key, Plaintext=b"a bundle of the host's")),
        (host_session, "kms:CreateGrant", lambda: host.create_grant(KeyId=key, GranteePrincipal=host_arn, Operations=["Decrypt"])),
        (operator_session, "kms:Decrypt", lambda: operator.decrypt(CiphertextBlob=encrypted, EncryptionContext=CONTEXT)),
        (ROOT_ARN, "kms:GenerateDataKey", lambda: clients().generate_data_key(KeyId=key, KeySpec="AES_256")),
    ]
    for caller, action, call in refused:
        with aws_error("AccessDeniedException", f"User: {caller} is not authorized to perform: {action} on resource: {key}"):
            call()


def test_an_identity_policy_deny_wins_over_a_key_policy_grant(aws, clients):
    user = f"arn:aws:iam::{ACCOUNT_ID}:user/alice-denied"
    key = aws.kms.create_key(Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": user}, "Action": "kms:Encrypt", "Resource": "*"}]}))["KeyMetadata"]["Arn"]  # fmt: skip
    deny = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "kms:Encrypt", "Resource": "*"}]})
    alice = clients(user_key(aws, "alice-denied", deny))
    with aws_error("AccessDeniedException", f"User: {user} is not authorized to perform: kms:Encrypt on resource: {key} with an explicit deny in an identity-based policy"):
        alice.encrypt(KeyId=key, Plaintext=b"x")
    bob = clients(user_key(aws, "bob-named"))  # named by no key policy, no IAM policy
    with aws_error("AccessDeniedException", "because no identity-based policy allows the kms:Encrypt action"):
        bob.encrypt(KeyId=key, Plaintext=b"x")


def test_iam_policies_from_managed_policies_groups_and_boundaries(aws, clients, keys):
    managed = aws.iam.create_policy(PolicyName="kms-encrypt", PolicyDocument=allow("kms:Encrypt", resource=keys.sym))["Policy"]["Arn"]
    carol = clients(user_key(aws, "carol"))
    aws.iam.attach_user_policy(UserName="carol", PolicyArn=managed)
    assert carol.encrypt(KeyId=keys.sym, Plaintext=b"x")["KeyId"] == keys.sym
    with aws_error("AccessDeniedException", f"on resource: {keys.sym2} because no identity-based policy allows"):
        carol.encrypt(KeyId=keys.sym2, Plaintext=b"x")  # the managed policy names one key
    aws.iam.create_group(GroupName="describers")
    aws.iam.put_group_policy(GroupName="describers", PolicyName="d", PolicyDocument=allow("kms:DescribeKey"))
    aws.iam.add_user_to_group(GroupName="describers", UserName="carol")
    assert carol.describe_key(KeyId=keys.sym2)["KeyMetadata"]["Arn"] == keys.sym2
    boundary = aws.iam.create_policy(PolicyName="only-describe", PolicyDocument=allow("kms:DescribeKey"))["Policy"]["Arn"]
    # (moto keeps permissions boundaries of roles, not of users)
    aws.iam.create_role(RoleName="bounded", AssumeRolePolicyDocument=TRUST_EC2, PermissionsBoundary=boundary)
    aws.iam.put_role_policy(RoleName="bounded", PolicyName="all", PolicyDocument=allow("kms:*"))
    credentials = aws.sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/bounded", RoleSessionName="bounded-session")["Credentials"]
    bounded = clients(Creds(credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"]))
    with aws_error(*aws_words("no-permissions-boundary-allows", principal=BOUNDED_SESSION, action="kms:Encrypt", resource=keys.sym)):
        bounded.encrypt(KeyId=keys.sym, Plaintext=b"x")  # allowed by a policy, outside the boundary
    assert bounded.describe_key(KeyId=keys.sym)["KeyMetadata"]["Arn"] == keys.sym
    # A key policy naming the role itself is limited by the boundary too (AWS: a grant to the role
    # ARN, unlike one to the session ARN, is within the role's boundary and session policies).
    named = aws.kms.create_key(Policy=key_policy(grant(f"arn:aws:iam::{ACCOUNT_ID}:role/bounded", "kms:Encrypt", "kms:DescribeKey")))["KeyMetadata"]["Arn"]
    with aws_error(*aws_words("no-permissions-boundary-allows", principal=BOUNDED_SESSION, action="kms:Encrypt", resource=named)):
        bounded.encrypt(KeyId=named, Plaintext=b"x")
    assert bounded.describe_key(KeyId=named)["KeyMetadata"]["Arn"] == named


BOUNDED_SESSION = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/bounded/bounded-session"


def test_iam_statements_for_other_services_are_ignored_and_unknown_kms_conditions_fail_closed(aws, clients, keys):
    other_service = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}},
        {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}]})  # fmt: skip
    dave = clients(user_key(aws, "dave", other_service))
    assert dave.encrypt(KeyId=keys.sym, Plaintext=b"x")["KeyId"] == keys.sym
    unknown = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:*", "Resource": "*", "Condition": {"StringEquals": {"aws:PrincipalTag/team": "ops"}}}]})  # fmt: skip
    erin = clients(user_key(aws, "erin", unknown))
    with aws_error("AccessDeniedException", "with an explicit deny in an identity-based policy"):
        erin.encrypt(KeyId=keys.sym, Plaintext=b"x")  # a Deny the emulator cannot evaluate must not be skipped


def test_operations_on_no_key_are_for_iam_alone(aws, clients):
    lister = clients(user_key(aws, "lister", allow("kms:ListKeys")))
    assert "Keys" in lister.list_keys()
    with aws_error("AccessDeniedException", f"User: arn:aws:iam::{ACCOUNT_ID}:user/lister is not authorized to perform: kms:CreateKey on resource: * because no identity-based policy allows the kms:CreateKey action"):
        lister.create_key()
    with aws_error("AccessDeniedException", "kms:CreateAlias on resource: arn:aws:kms:us-east-1:123456789012:alias/lister"):
        lister.create_alias(AliasName="alias/lister", TargetKeyId="alias/fidelity")


# --- 5b. permissions boundaries and session policies (AWS's evaluation logic) --------------------

ALLOW_ALL_DENY_ENCRYPT = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}, {"Effect": "Deny", "Action": "kms:Encrypt", "Resource": "*"}]})  # fmt: skip


def session_arn(role: str, session: str = "i-0123456789abcdef0") -> str:
    return f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/{session}"


def role_arn(role: str) -> str:
    return f"arn:aws:iam::{ACCOUNT_ID}:role/{role}"


def test_an_explicit_deny_in_a_permissions_boundary_wins_however_the_key_policy_names_the_caller(aws, clients):
    """Deny anywhere wins: the boundary's Deny refuses though the key policy names the session, the role or the account."""
    caller = clients(role_session(aws, "boundary-denies", allow("kms:*"), boundary=ALLOW_ALL_DENY_ENCRYPT))
    for principal in (session_arn("boundary-denies"), role_arn("boundary-denies"), ROOT_ARN):
        key = aws.kms.create_key(Policy=key_policy(grant(principal, "kms:Encrypt", "kms:DescribeKey")))["KeyMetadata"]["Arn"]
        with aws_error("AccessDeniedException", f"kms:Encrypt on resource: {key} with an explicit deny in a permissions boundary"):
            caller.encrypt(KeyId=key, Plaintext=b"x")
        assert caller.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key


def test_a_key_policy_naming_the_session_itself_is_not_limited_by_the_boundary(aws, clients):
    only_describe = allow("kms:DescribeKey")
    caller = clients(role_session(aws, "boundary-named-session", boundary=only_describe))
    key = aws.kms.create_key(Policy=key_policy(grant(session_arn("boundary-named-session"), "kms:Encrypt")))["KeyMetadata"]["Arn"]
    assert caller.encrypt(KeyId=key, Plaintext=b"x")["KeyId"] == key  # no identity policy, outside the boundary: still allowed


def test_session_policies_limit_a_role_session(aws, clients, keys):
    aws.iam.create_role(RoleName="session-limited", AssumeRolePolicyDocument=TRUST_EC2)
    aws.iam.put_role_policy(RoleName="session-limited", PolicyName="all", PolicyDocument=allow("kms:*"))
    assert clients(assume(aws, "session-limited", "unlimited")).encrypt(KeyId=keys.sym, Plaintext=b"x")["KeyId"] == keys.sym
    limited = clients(assume(aws, "session-limited", "limited", Policy=allow("kms:DescribeKey")))
    with aws_error("AccessDeniedException", f"{session_arn('session-limited', 'limited')} is not authorized to perform: kms:Encrypt on resource: {keys.sym} because no session policy allows the kms:Encrypt action"):
        limited.encrypt(KeyId=keys.sym, Plaintext=b"x")
    assert limited.describe_key(KeyId=keys.sym)["KeyMetadata"]["Arn"] == keys.sym
    # A key policy naming the role is limited by the session policy; one naming the session is not.
    by_role = aws.kms.create_key(Policy=key_policy(grant(role_arn("session-limited"), "kms:Encrypt")))["KeyMetadata"]["Arn"]
    with aws_error("AccessDeniedException", "because no session policy allows the kms:Encrypt action"):
        limited.encrypt(KeyId=by_role, Plaintext=b"x")
    by_session = aws.kms.create_key(Policy=key_policy(grant(session_arn("session-limited", "limited"), "kms:Encrypt")))["KeyMetadata"]["Arn"]
    assert limited.encrypt(KeyId=by_session, Plaintext=b"x")["KeyId"] == by_session
    denying = clients(assume(aws, "session-limited", "denying", Policy=ALLOW_ALL_DENY_ENCRYPT))
    with aws_error("AccessDeniedException", "with an explicit deny in a session policy"):
        denying.encrypt(KeyId=by_session, Plaintext=b"x")


def test_managed_session_policies_are_read_from_iam_and_fail_closed(aws, clients, keys):
    aws.iam.create_role(RoleName="managed-session", AssumeRolePolicyDocument=TRUST_EC2)
    aws.iam.put_role_policy(RoleName="managed-session", PolicyName="all", PolicyDocument=allow("kms:*"))
    describe = managed_policy(aws, "session-describe", allow("kms:DescribeKey"))
    limited = clients(assume(aws, "managed-session", "managed", PolicyArns=[{"arn": describe}]))
    with aws_error("AccessDeniedException", "because no session policy allows the kms:Encrypt action"):
        limited.encrypt(KeyId=keys.sym, Plaintext=b"x")
    assert limited.describe_key(KeyId=keys.sym)["KeyMetadata"]["Arn"] == keys.sym
    # A managed session policy the emulator cannot read: nothing is allowed (moto keeps no trace of it).
    ghost = clients(assume(aws, "managed-session", "ghost", PolicyArns=[{"arn": f"arn:aws:iam::{ACCOUNT_ID}:policy/no-such-policy"}]))
    with aws_error("AccessDeniedException", "with an explicit deny in a session policy"):
        ghost.describe_key(KeyId=keys.sym)


# --- 5c. new key policies: principals that exist, no lockout (CreateKey, PutKeyPolicy) -----------


def test_a_key_policy_that_locks_its_setter_out_is_refused(kms, clients, aws, moto_endpoint, nobody):
    decrypt_only = json.dumps({"Version": "2012-10-17", "Statement": [grant(ROOT_ARN, "kms:Decrypt", "kms:Encrypt")]})
    with aws_error(*aws_words("policy-lockout")):
        kms.create_key(Policy=decrypt_only)
    bypassed = kms.create_key(Policy=decrypt_only, BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]["Arn"]
    assert kms.encrypt(KeyId=bypassed, Plaintext=b"x")["KeyId"] == bypassed
    fresh = kms.create_key()["KeyMetadata"]["Arn"]
    with aws_error(*aws_words("policy-lockout")):
        kms.put_key_policy(KeyId=fresh, PolicyName="default", Policy=decrypt_only)
    kms.put_key_policy(KeyId=fresh, PolicyName="default", Policy=decrypt_only, BypassPolicyLockoutSafetyCheck=True)
    # The caller's IAM policies count: a user who may create keys but not set their policy is locked out.
    creator = clients(user_key(aws, "key-creator", allow("kms:CreateKey")))
    with aws_error(*aws_words("policy-lockout")):
        creator.create_key(Policy=key_policy())
    admin = clients(user_key(aws, "key-admin", allow("kms:CreateKey", "kms:PutKeyPolicy")))
    assert admin.create_key(Policy=key_policy())["KeyMetadata"]["KeyState"] == "Enabled"
    assert moto_alone(moto_endpoint, "CreateKey", {"Policy": decrypt_only}, nobody)[0] == 200  # moto alone takes it


def test_zerocopy_kms_policy_passes_the_checks_when_the_operator_creates_the_key(kms, nsm):
    """`zerocopy kms-policy`'s policy, set by the emulator's admin (the account root), as `zerocopy demo` does."""
    policy = json.dumps(attested_key_policy(ACCOUNT_ID, image_sha384=nsm.pcrs[0], pcrs={1: nsm.pcrs[1]}))
    key = kms.create_key(Policy=policy)["KeyMetadata"]["Arn"]
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy)


def test_key_policy_principals_must_exist_in_iam_path_and_all(kms, aws):
    aws.iam.create_role(RoleName="pathy", Path="/real/", AssumeRolePolicyDocument=TRUST_EC2)
    aws.iam.create_user(UserName="existing-user")
    fresh = kms.create_key()["KeyMetadata"]["Arn"]
    for principal in (role_arn("ghost"), f"arn:aws:iam::{ACCOUNT_ID}:role/wrong/pathy", role_arn("pathy"),
                      f"arn:aws:iam::{ACCOUNT_ID}:user/nobody-at-all", "arn:aws:iam::210987654321:role/pathy"):  # fmt: skip
        with aws_error(*aws_words("invalid-principals")):
            kms.create_key(Policy=key_policy(grant(principal, "kms:Decrypt")))
        with aws_error(*aws_words("invalid-principals")):
            kms.put_key_policy(KeyId=fresh, PolicyName="default", Policy=key_policy(grant(principal, "kms:Decrypt", effect="Deny")))
    for principal in (f"arn:aws:iam::{ACCOUNT_ID}:role/real/pathy", f"arn:aws:iam::{ACCOUNT_ID}:user/existing-user"):
        kms.create_key(Policy=key_policy(grant(principal, "kms:Decrypt")))


# --- 5d. grants and tags at creation -------------------------------------------------------------


def test_create_grant_is_evaluated_on_its_encryption_context_constraints(kms, aws, moto_endpoint, nobody):
    deny = grant("*", "kms:CreateGrant", effect="Deny", Condition={"StringEquals": {"kms:EncryptionContext:tenant": "forbidden"}})
    key = aws.kms.create_key(Policy=key_policy(deny))["KeyMetadata"]["Arn"]
    for constraint in ("EncryptionContextEquals", "EncryptionContextSubset"):
        with aws_error("AccessDeniedException", f"kms:CreateGrant on resource: {key} {EXPLICIT_DENY}"):
            kms.create_grant(KeyId=key, GranteePrincipal=ROOT_ARN, Operations=["Decrypt"], Constraints={constraint: {"tenant": "forbidden"}})
        kms.create_grant(KeyId=key, GranteePrincipal=ROOT_ARN, Operations=["Decrypt"], Constraints={constraint: {"tenant": "allowed"}})
    with aws_error("ValidationException", "different values"):  # no one value AWS would test: refused, not guessed
        kms.create_grant(KeyId=key, GranteePrincipal=ROOT_ARN, Operations=["Decrypt"],
                         Constraints={"EncryptionContextEquals": {"tenant": "allowed"}, "EncryptionContextSubset": {"tenant": "forbidden"}})  # fmt: skip
    forbidden = {"KeyId": key, "GranteePrincipal": ROOT_ARN, "Operations": ["Decrypt"], "Constraints": {"EncryptionContextEquals": {"tenant": "forbidden"}}}
    assert moto_alone(moto_endpoint, "CreateGrant", forbidden, nobody)[0] == 200


def test_create_key_with_tags_needs_tag_resource_too(aws, clients):
    creator = clients(user_key(aws, "untagged-creator", allow("kms:CreateKey")))
    creator.create_key()
    tags = [{"TagKey": "team", "TagValue": "trading"}]
    with aws_error("AccessDeniedException", "kms:TagResource on resource: * because no identity-based policy allows the kms:TagResource action"):
        creator.create_key(Tags=tags)
    tagger = clients(user_key(aws, "tagged-creator", allow("kms:CreateKey", "kms:TagResource")))
    assert tagger.create_key(Tags=tags)["KeyMetadata"]["KeyState"] == "Enabled"


# --- 5e. keys named by an ARN of another region or account ---------------------------------------


def elsewhere(arn: str, *, region: str = REGION, account: str = ACCOUNT_ID) -> str:
    parts = arn.split(":")
    return ":".join([*parts[:3], region, account, *parts[5:]])


def test_an_arn_of_another_region_or_account_names_no_key_here(kms, keys, moto_endpoint, nobody):
    other_region = elsewhere(keys.sym, region="eu-west-1")
    with aws_error(*localstack_error("test_get_key_in_different_region", "describe-key-diff-region-with-arn", secondary_region="eu-west-1")):
        kms.encrypt(KeyId=other_region, Plaintext=b"x")
    with aws_error(*localstack_error("test_get_key_in_different_region", "describe-key-diff-region-with-arn", secondary_region="eu-west-1")):
        kms.describe_key(KeyId=f"arn:aws:kms:eu-west-1:{ACCOUNT_ID}:alias/fidelity")
    other_account = elsewhere(keys.sym, account="210987654321")
    with aws_error(*localstack_error("test_get_key_does_not_exist", "describe-nonexistent-with-arn", key_arn=other_account)):
        kms.encrypt(KeyId=other_account, Plaintext=b"x")
    with aws_error("NotFoundException", f"Alias arn:aws:kms:{REGION}:210987654321:alias/fidelity is not found."):
        kms.describe_key(KeyId=f"arn:aws:kms:{REGION}:210987654321:alias/fidelity")
    assert moto_alone(moto_endpoint, "Encrypt", {"KeyId": other_region, "Plaintext": "bQ=="}, nobody)[0] == 200  # moto resolves the id alone


# --- 5f. encryption algorithms a key cannot use ----------------------------------------------------


def incompatible_algorithm(algorithm: str, spec: str) -> tuple[str, str]:
    """AWS's InvalidKeyUsageException for an algorithm the key spec cannot use.

    The words are those real KMS uses for a MAC algorithm that does not fit the key (recorded by
    LocalStack); for encryption algorithms AWS documents the same exception but no answer is public.
    """
    code, words = localstack_error("test_invalid_generate_mac[HMAC_224-HMAC_SHA_256]", "generate-mac")
    return code, words.replace("HMAC_SHA_256", algorithm).replace("HMAC_224", spec)


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1", "SM2PKE"])
def test_an_encryption_algorithm_the_key_cannot_use_is_refused(kms, keys, moto_endpoint, nobody, algorithm):
    with aws_error(*incompatible_algorithm(algorithm, "SYMMETRIC_DEFAULT")):
        kms.encrypt(KeyId=keys.sym, Plaintext=b"x", EncryptionAlgorithm=algorithm)
    with aws_error(*incompatible_algorithm(algorithm, "SYMMETRIC_DEFAULT")):
        kms.decrypt(CiphertextBlob=keys.ciphertext, EncryptionAlgorithm=algorithm)
    with aws_error(*incompatible_algorithm(algorithm, "SYMMETRIC_DEFAULT")):
        kms.re_encrypt(CiphertextBlob=keys.ciphertext, DestinationKeyId=keys.sym2, DestinationEncryptionAlgorithm=algorithm)
    assert kms.decrypt(CiphertextBlob=keys.ciphertext, EncryptionAlgorithm="SYMMETRIC_DEFAULT")["Plaintext"] == b"secret"
    status, body = moto_alone(moto_endpoint, "Decrypt", {"CiphertextBlob": b64(keys.ciphertext), "EncryptionAlgorithm": algorithm}, nobody)
    assert status == 200 and base64.b64decode(body["Plaintext"]) == b"secret"  # moto alone ignores it


# --- 6. key state: disabled and pending-deletion keys, with or without Recipient ---------------


@pytest.fixture(scope="module")
def dead_keys(aws: SimpleNamespace, keys: SimpleNamespace) -> dict[str, SimpleNamespace]:
    """For each state, a key of each usage in it, with what was made while they still worked."""
    kms = aws.kms
    made = {}
    for state in ("Disabled", "PendingDeletion"):
        ns = SimpleNamespace(
            sym=kms.create_key()["KeyMetadata"]["Arn"],
            mac=kms.create_key(KeyUsage="GENERATE_VERIFY_MAC", KeySpec="HMAC_256")["KeyMetadata"]["Arn"],
            sig=kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"],
            agree=kms.create_key(KeyUsage="KEY_AGREEMENT", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"],
        )
        ns.ciphertext = kms.encrypt(KeyId=ns.sym, Plaintext=b"before", EncryptionContext=CONTEXT)["CiphertextBlob"]
        ns.signature = kms.sign(KeyId=ns.sig, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
        ns.mac_value = kms.generate_mac(KeyId=ns.mac, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
        for arn in (ns.sym, ns.mac, ns.sig, ns.agree):
            if state == "Disabled":
                kms.disable_key(KeyId=arn)
            else:
                kms.schedule_key_deletion(KeyId=arn, PendingWindowInDays=7)
        made[state] = ns
    return made


def state_params(operation: str, dead: SimpleNamespace, keys: SimpleNamespace) -> tuple[dict[str, Any], str]:
    """A request on a key in the state under test, and that key's ARN."""
    message_b64 = b64(b"m")
    peer = b64(keys.peer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    return {
        "Decrypt": ({"CiphertextBlob": b64(dead.ciphertext), "EncryptionContext": CONTEXT}, dead.sym),
        "Encrypt": ({"KeyId": dead.sym, "Plaintext": message_b64}, dead.sym),
        "GenerateDataKey": ({"KeyId": dead.sym, "KeySpec": "AES_256"}, dead.sym),
        "GenerateDataKeyWithoutPlaintext": ({"KeyId": dead.sym, "NumberOfBytes": 16}, dead.sym),
        "GenerateDataKeyPair": ({"KeyId": dead.sym, "KeyPairSpec": "ECC_NIST_P256"}, dead.sym),
        "GenerateDataKeyPairWithoutPlaintext": ({"KeyId": dead.sym, "KeyPairSpec": "ECC_NIST_P256"}, dead.sym),
        "ReEncrypt": ({"CiphertextBlob": b64(dead.ciphertext), "SourceEncryptionContext": CONTEXT, "DestinationKeyId": keys.sym}, dead.sym),
        "DeriveSharedSecret": ({"KeyId": dead.agree, "KeyAgreementAlgorithm": "ECDH", "PublicKey": peer}, dead.agree),
        "Sign": ({"KeyId": dead.sig, "Message": message_b64, "SigningAlgorithm": "ECDSA_SHA_256"}, dead.sig),
        "Verify": ({"KeyId": dead.sig, "Message": message_b64, "Signature": b64(dead.signature), "SigningAlgorithm": "ECDSA_SHA_256"}, dead.sig),
        "GetPublicKey": ({"KeyId": dead.sig}, dead.sig),
        "GenerateMac": ({"KeyId": dead.mac, "Message": message_b64, "MacAlgorithm": "HMAC_SHA_256"}, dead.mac),
        "VerifyMac": ({"KeyId": dead.mac, "Message": message_b64, "MacAlgorithm": "HMAC_SHA_256", "Mac": b64(dead.mac_value)}, dead.mac),
        "CreateGrant": ({"KeyId": dead.sym, "GranteePrincipal": f"arn:aws:iam::{ACCOUNT_ID}:user/alice", "Operations": ["Decrypt"]}, dead.sym),
        "EnableKeyRotation": ({"KeyId": dead.sym}, dead.sym),
        "RotateKeyOnDemand": ({"KeyId": dead.sym}, dead.sym),
    }[operation]


STATE_ERRORS = {
    # https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html; the words of real answers
    # (LocalStack's snapshot: "<key ARN> is disabled.", "<key ARN> is pending import.").
    "Disabled": localstack_error("test_rotate_key_on_demand_raises_error_given_key_is_disabled", "error-response", key_arn="{arn}"),
    "PendingDeletion": ("KMSInvalidStateException", "{arn} is pending deletion."),
}
CRYPTOGRAPHIC = [
    "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext", "ReEncrypt", "DeriveSharedSecret", "Sign", "Verify", "GetPublicKey",
    "GenerateMac", "VerifyMac", "CreateGrant", "EnableKeyRotation", "RotateKeyOnDemand",
]  # fmt: skip


@pytest.mark.parametrize("state", ["Disabled", "PendingDeletion"])
@pytest.mark.parametrize("operation", CRYPTOGRAPHIC)
def test_a_key_that_is_not_enabled_refuses_cryptography(model, dead_keys, keys, document, operation, state):
    params, arn = state_params(operation, dead_keys[state], keys)
    code, words = STATE_ERRORS[state]
    expected = (400, {"__type": code, "message": words.format(arn=arn)})
    assert post(model, operation, params) == expected
    if operation in RECIPIENT_OPERATIONS:
        assert post(model, operation, {**params, "Recipient": recipient(document)}) == expected


def test_moto_alone_uses_a_disabled_key(moto_endpoint, dead_keys, nobody):
    status, body = moto_alone(moto_endpoint, "Encrypt", {"KeyId": dead_keys["Disabled"].sym, "Plaintext": "bQ=="}, nobody)
    assert status == 200 and body["CiphertextBlob"]


def test_reencrypt_to_a_disabled_key(model, keys, dead_keys):
    arn = dead_keys["Disabled"].sym
    assert post(model, "ReEncrypt", {"CiphertextBlob": b64(keys.ciphertext), "DestinationKeyId": arn}) == (400, {"__type": "DisabledException", "message": f"{arn} is disabled."})


@pytest.mark.parametrize(
    ("operation", "state", "code", "words"),
    [
        ("CancelKeyDeletion", "Enabled", "KMSInvalidStateException", "{arn} is not pending deletion."),
        ("CancelKeyDeletion", "Disabled", "KMSInvalidStateException", "{arn} is not pending deletion."),
        ("ScheduleKeyDeletion", "PendingDeletion", "KMSInvalidStateException", "{arn} is pending deletion."),
        ("EnableKey", "PendingDeletion", "KMSInvalidStateException", "{arn} is pending deletion."),
        ("TagResource", "PendingDeletion", "KMSInvalidStateException", "{arn} is pending deletion."),
        ("UpdateKeyDescription", "PendingDeletion", "KMSInvalidStateException", "{arn} is pending deletion."),
    ],
)
def test_management_calls_and_key_state(model, keys, dead_keys, operation, state, code, words):
    arn = keys.sym2 if state == "Enabled" else dead_keys[state].sym
    extra = {"TagResource": {"Tags": [{"TagKey": "k", "TagValue": "v"}]}, "UpdateKeyDescription": {"Description": "d"}}.get(operation, {})
    assert post(model, operation, {"KeyId": arn, **extra}) == (400, {"__type": code, "message": words.format(arn=arn)})


def test_disabled_keys_can_still_be_described_and_re_enabled(kms, aws):
    arn = aws.kms.create_key()["KeyMetadata"]["Arn"]
    kms.disable_key(KeyId=arn)
    assert kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "Disabled"
    with aws_error("DisabledException", f"{arn} is disabled."):
        kms.encrypt(KeyId=arn, Plaintext=b"x")
    kms.enable_key(KeyId=arn)
    assert kms.encrypt(KeyId=arn, Plaintext=b"x")["KeyId"] == arn


def test_key_usage_is_checked_as_kms_does(model, keys, nobody, moto_endpoint):
    expected = recorded("test_error_messaging_for_invalid_keys", "encrypt-invalid-key-id", key_arn=keys.sig)
    assert post(model, "Encrypt", {"KeyId": keys.sig, "Plaintext": "bQ=="}) == (400, expected)
    assert moto_alone(moto_endpoint, "Encrypt", {"KeyId": keys.sig, "Plaintext": "bQ=="}, nobody)[0] == 200


def test_dry_run_is_answered_after_the_checks(model, keys, moto_endpoint, nobody):
    answer = (400, recorded("test_generate_data_key_pair_dry_run", "dryrun_exception"))
    assert post(model, "GenerateDataKeyPair", {"KeyId": keys.sym, "KeyPairSpec": "ECC_NIST_P256", "DryRun": True}) == answer
    assert post(model, "Encrypt", {"KeyId": keys.sym, "Plaintext": "bQ==", "DryRun": True}) == answer
    assert post(model, "Encrypt", {"KeyId": keys.sym, "Plaintext": "bQ==", "DryRun": True}, nobody)[1]["__type"] == "AccessDeniedException"
    assert moto_alone(moto_endpoint, "Encrypt", {"KeyId": keys.sym, "Plaintext": "bQ==", "DryRun": True}, nobody)[0] == 200  # moto ignores DryRun


# --- 7. Recipient on the five operations that take it --------------------------------------------


def kms_public_key(kms: Any, key: str) -> ec.EllipticCurvePublicKey:
    return serialization.load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])  # type: ignore[return-value]


def peer_spki(peer: ec.EllipticCurvePrivateKey) -> bytes:
    return peer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


_RECIPIENT_REQUESTS: dict[str, tuple[str, Callable[[SimpleNamespace], dict]]] = {
    "Decrypt": ("decrypt", lambda keys: {"CiphertextBlob": keys.ciphertext, "KeyId": keys.sym}),
    "GenerateDataKey": ("generate_data_key", lambda keys: {"KeyId": keys.sym, "KeySpec": "AES_256", "EncryptionContext": CONTEXT}),
    "GenerateDataKeyPair": ("generate_data_key_pair", lambda keys: {"KeyId": keys.sym, "KeyPairSpec": "ECC_NIST_P256", "EncryptionContext": CONTEXT}),
    "GenerateRandom": ("generate_random", lambda keys: {"NumberOfBytes": 48}),
    "DeriveSharedSecret": ("derive_shared_secret", lambda keys: {"KeyId": keys.agree, "KeyAgreementAlgorithm": "ECDH", "PublicKey": peer_spki(keys.peer)}),
}


def _recipient_call(operation: str) -> Callable[[Any, SimpleNamespace, dict | None], dict]:
    method, params = _RECIPIENT_REQUESTS[operation]

    def call(kms: Any, keys: SimpleNamespace, recipient_value: dict | None) -> dict:
        extra = {} if recipient_value is None else {"Recipient": recipient_value}
        return getattr(kms, method)(**params(keys), **extra)

    return call


RECIPIENT_CALLS = {operation: _recipient_call(operation) for operation in _RECIPIENT_REQUESTS}
PLAINTEXT_FIELD = {"Decrypt": "Plaintext", "GenerateDataKey": "Plaintext", "GenerateDataKeyPair": "PrivateKeyPlaintext", "GenerateRandom": "Plaintext", "DeriveSharedSecret": "SharedSecret"}


def test_the_five_recipient_operations_are_the_model_s():
    model_ops = {name for name in service_model.operation_names() if "Recipient" in service_model.input_members(name)}
    assert model_ops == set(RECIPIENT_OPERATIONS) == set(RECIPIENT_CALLS)


@pytest.mark.parametrize("operation", sorted(RECIPIENT_CALLS))
def test_recipient_returns_only_ciphertext_for_recipient(kms, aws, keys, document, enclave_key, operation):
    response = RECIPIENT_CALLS[operation](kms, keys, attested(document))
    assert PLAINTEXT_FIELD[operation] not in response
    secret = decrypt_ciphertext_for_recipient(response["CiphertextForRecipient"], enclave_key)
    if operation == "Decrypt":
        assert secret == b"secret"
    elif operation == "GenerateDataKey":
        assert aws.kms.decrypt(CiphertextBlob=response["CiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"] == secret
    elif operation == "GenerateDataKeyPair":
        private = serialization.load_der_private_key(secret, password=None)
        assert private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == response["PublicKey"]
        assert aws.kms.decrypt(CiphertextBlob=response["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"] == secret
    elif operation == "GenerateRandom":
        assert len(secret) == 48
    else:
        assert secret == keys.peer.exchange(ec.ECDH(), kms_public_key(kms, keys.agree))
    # Without Recipient the same call answers the plaintext field (what an enclave must never ask for).
    assert PLAINTEXT_FIELD[operation] in RECIPIENT_CALLS[operation](kms, keys, None)


@pytest.fixture(scope="module")
def attested_only(aws: SimpleNamespace, clients: Callable[..., Any], nsm: EmulatedNsm) -> Any:
    """A role whose IAM policy allows the five operations only to the attested image."""
    condition = {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": nsm.pcrs[0].hex()}}
    actions = [f"kms:{name}" for name in RECIPIENT_CALLS]
    credentials = role_session(aws, "attested-only", allow(*actions, condition=condition))
    return clients(credentials)


@pytest.mark.parametrize("operation", sorted(RECIPIENT_CALLS))
def test_recipient_attestation_conditions_are_evaluated(attested_only, keys, pki, enclave_key, document, operation):
    call = RECIPIENT_CALLS[operation]
    assert "CiphertextForRecipient" in call(attested_only, keys, attested(document))
    impostor = EmulatedNsm(pki, module_id=MODULE_ID, pcrs=sample_pcrs(b"patched enclave")).attestation_document(public_key=spki_der(enclave_key))
    action = f"kms:{operation}"
    with aws_error("AccessDeniedException", f"because no identity-based policy allows the {action} action"):
        call(attested_only, keys, attested(impostor))
    if operation != "Decrypt":  # (Decrypt without Recipient is covered with the pinned key policy)
        with aws_error("AccessDeniedException", f"because no identity-based policy allows the {action} action"):
            call(attested_only, keys, None)


def test_the_pinned_key_policy_evaluates_generate_data_key_pair_and_derive_too(aws, kms, nsm, pki, enclave_key, document):
    image = nsm.pcrs[0].hex()
    deny = {"StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": image}}
    statements = [
        {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "OnlyTheImage", "Effect": "Deny", "Principal": "*", "Action": ["kms:GenerateDataKeyPair", "kms:DeriveSharedSecret"], "Resource": "*", "Condition": deny},
    ]
    pair_key = aws.kms.create_key(Policy=json.dumps({"Version": "2012-10-17", "Statement": statements}))["KeyMetadata"]["Arn"]
    agree_key = aws.kms.create_key(Policy=json.dumps({"Version": "2012-10-17", "Statement": statements}), KeyUsage="KEY_AGREEMENT", KeySpec="ECC_NIST_P384")["KeyMetadata"]["Arn"]
    impostor = EmulatedNsm(pki, module_id=MODULE_ID, pcrs=sample_pcrs(b"patched enclave")).attestation_document(public_key=spki_der(enclave_key))
    peer = ec.generate_private_key(ec.SECP384R1())
    for recipient_value in (None, attested(impostor)):
        extra = {} if recipient_value is None else {"Recipient": recipient_value}
        with aws_error("AccessDeniedException", EXPLICIT_DENY):
            kms.generate_data_key_pair(KeyId=pair_key, KeyPairSpec="RSA_2048", **extra)
        with aws_error("AccessDeniedException", EXPLICIT_DENY):
            kms.derive_shared_secret(KeyId=agree_key, KeyAgreementAlgorithm="ECDH", PublicKey=peer_spki(peer), **extra)
    sealed_pair = kms.generate_data_key_pair(KeyId=pair_key, KeyPairSpec="RSA_2048", Recipient=attested(document))
    assert isinstance(serialization.load_der_private_key(decrypt_ciphertext_for_recipient(sealed_pair["CiphertextForRecipient"], enclave_key), None), rsa.RSAPrivateKey)
    sealed_secret = kms.derive_shared_secret(KeyId=agree_key, KeyAgreementAlgorithm="ECDH", PublicKey=peer_spki(peer), Recipient=attested(document))
    assert decrypt_ciphertext_for_recipient(sealed_secret["CiphertextForRecipient"], enclave_key) == peer.exchange(ec.ECDH(), kms_public_key(kms, agree_key))


def _spki(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(
    "public_key",
    [
        pytest.param(lambda: _spki(ec.generate_private_key(ec.SECP256R1())), id="ec-p256"),
        pytest.param(lambda: _spki(ec.generate_private_key(ec.SECP384R1())), id="ec-p384"),
        pytest.param(lambda: _spki(rsa.generate_private_key(public_exponent=65537, key_size=1024)), id="rsa-1024"),
        pytest.param(lambda: bytes([1]) * 1024, id="1024-bytes-of-0x01-as-the-real-sample"),
        pytest.param(lambda: b"\x30\x03\x02\x01\x00", id="der-not-spki"),
    ],
)
def test_a_recipient_key_kms_does_not_take_is_a_validation_error(kms, keys, nsm, public_key):
    document = nsm.attestation_document(public_key=public_key())
    with aws_error("ValidationException", "public key"):
        kms.decrypt(CiphertextBlob=keys.ciphertext, Recipient=attested(document))


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_rsa_recipient_keys_kms_takes(kms, keys, nsm, bits):
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    response = kms.generate_random(NumberOfBytes=32, Recipient=attested(nsm.attestation_document(public_key=_spki(private))))
    assert len(decrypt_ciphertext_for_recipient(response["CiphertextForRecipient"], private)) == 32


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_1", "rsaes_oaep_sha_256", "SYMMETRIC_DEFAULT"])
def test_a_bad_key_encryption_algorithm_is_a_validation_error(kms, keys, document, algorithm):
    with aws_error("ValidationException", f"1 validation error detected: Value '{algorithm}' at 'recipient.keyEncryptionAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [RSAES_OAEP_SHA_256]"):
        kms.decrypt(CiphertextBlob=keys.ciphertext, Recipient={"AttestationDocument": document, "KeyEncryptionAlgorithm": algorithm})


# --- 8. the operations moto lacks, on moto's backend ---------------------------------------------


@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1", "ECC_NIST_EDWARDS25519"])
def test_generate_data_key_pair(kms, aws, keys, spec):
    response = kms.generate_data_key_pair(KeyId="alias/fidelity", KeyPairSpec=spec, EncryptionContext=CONTEXT)
    assert (response["KeyId"], response["KeyPairSpec"]) == (keys.sym, spec)
    private = serialization.load_der_private_key(response["PrivateKeyPlaintext"], password=None)
    assert _spki(private) == response["PublicKey"]
    assert aws.kms.decrypt(CiphertextBlob=response["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"] == response["PrivateKeyPlaintext"]
    without = kms.generate_data_key_pair_without_plaintext(KeyId=keys.sym, KeyPairSpec=spec)
    assert "PrivateKeyPlaintext" not in without and serialization.load_der_public_key(without["PublicKey"])


def test_generate_data_key_pair_refusals(kms, keys):
    with aws_error("InvalidKeyUsageException", f"{keys.sig} key usage is SIGN_VERIFY which is not valid for GenerateDataKeyPair."):
        kms.generate_data_key_pair(KeyId=keys.sig, KeyPairSpec="RSA_2048")
    with aws_error("UnsupportedOperationException", "SM2"):
        kms.generate_data_key_pair(KeyId=keys.sym, KeyPairSpec="SM2")


def test_derive_shared_secret(kms, keys):
    response = kms.derive_shared_secret(KeyId=keys.agree, KeyAgreementAlgorithm="ECDH", PublicKey=peer_spki(keys.peer))
    assert response["SharedSecret"] == keys.peer.exchange(ec.ECDH(), kms_public_key(kms, keys.agree))
    assert (response["KeyId"], response["KeyAgreementAlgorithm"], response["KeyOrigin"]) == (keys.agree, "ECDH", "AWS_KMS")
    # Real KMS's words (LocalStack's snapshot), and an empty ValidationException for a bad key.
    with aws_error(*localstack_error("test_derive_shared_secret", "response-invalid-key", key_arn=keys.sym)):
        kms.derive_shared_secret(KeyId=keys.sym, KeyAgreementAlgorithm="ECDH", PublicKey=peer_spki(keys.peer))
    with aws_error(*localstack_error("test_derive_shared_secret", "response-invalid-public-key")):
        kms.derive_shared_secret(KeyId=keys.agree, KeyAgreementAlgorithm="ECDH", PublicKey=peer_spki(ec.generate_private_key(ec.SECP384R1())))


# --- 9. every answer is AWS JSON -------------------------------------------------------------------

JSON_TYPE = "application/x-amz-json-1.1"


def allowed_errors(target: str | None) -> frozenset[str]:
    """The errors AWS may answer a request for ``target``: its operation's (the model's) and the common ones."""
    operation = target[len("TrentService.") :] if isinstance(target, str) and target.startswith("TrentService.") else None
    if operation not in service_model.operation_names():
        return service_model.COMMON_ERRORS
    return service_model.error_codes(operation) | service_model.COMMON_ERRORS


def raw_exchange(front: KmsFrontServer, ca_file: str, request: bytes) -> bytes:
    """Send raw bytes over TLS; return everything the front answers before it closes."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as raw, context.wrap_socket(raw, server_hostname=KMS_HOST) as tls:
        tls.sendall(request)
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def json_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert f"Content-Type: {JSON_TYPE}".encode() in head, head
    return status, json.loads(body)


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: kms\r\nConnection: close\r\n\r\n", 403, "AccessDeniedException"),
        (b"DELETE /keys HTTP/1.1\r\nHost: kms\r\nConnection: close\r\n\r\n", 403, "AccessDeniedException"),
        (b"BREW / HTTP/1.1\r\nHost: kms\r\nConnection: close\r\n\r\n", 403, "AccessDeniedException"),
        (b"POST / HTTP/1.1\r\nHost: kms\r\nContent-Length: abc\r\n\r\n", 400, "SerializationException"),
        (b"POST / HTTP/1.1\r\nHost: kms\r\nContent-Length: -5\r\n\r\n", 400, "SerializationException"),
        (b"POST / HTTP/1.1\r\nHost: kms\r\nContent-Length: 99999999999\r\n\r\n", 413, "SerializationException"),
        (b"POST / HTTP/1.1\r\nHost: kms\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", 431, "SerializationException"),
        (b"POST / HTTP/7.0\r\nHost: kms\r\n\r\n", 505, "SerializationException"),
        (b"POST /anything HTTP/1.1\r\nHost: kms\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", 400, "UnknownOperationException"),
    ],
)
def test_requests_that_never_reach_dispatch_get_json(front, ca_file, request_bytes, status, code):
    got_status, body = json_error(raw_exchange(front, ca_file[1], request_bytes))
    assert (got_status, body["__type"]) == (status, code)


@pytest.mark.parametrize("request_line", [b"GARBAGE", b"POST", b"\x16\x03\x01 junk HTTP/1.1"])
def test_a_request_line_that_is_not_http_gets_json(front, ca_file, request_line):
    answer = raw_exchange(front, ca_file[1], request_line + b"\r\n\r\n")
    assert answer, "the front closed without an answer"
    assert json_error(answer)[1]["__type"] in ("SerializationException", "AccessDeniedException")


def test_an_empty_request_line_is_no_request_at_all(front, ca_file):
    assert raw_exchange(front, ca_file[1], b"\r\n\r\n") == b""  # http.server skips it and waits; then the peer closes


@pytest.mark.parametrize(
    ("framing", "status"),
    [(b"Transfer-Encoding: chunked\r\n", 411), (b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n", 400)],
)
def test_a_chunked_body_is_refused_and_the_connection_closed(front, ca_file, framing, status):
    """Only Content-Length framing is read; a chunked body would otherwise be misread as an empty
    body followed by a second "request" made of the chunks."""
    headers, _ = request("TrentService.ListKeys", b"{}")
    head = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items() if name.lower() != "content-length")
    answer = raw_exchange(front, ca_file[1], b"POST / HTTP/1.1\r\n" + head + framing + b"\r\n2\r\n{}\r\n0\r\n\r\n")
    assert answer.count(b"HTTP/1.1 ") == 1 and b"\r\nConnection: close\r\n" in answer, answer
    assert json_error(answer) == (status, {"__type": "SerializationException", "Message": json_error(answer)[1]["Message"]})


def test_a_recipient_without_key_encryption_algorithm_is_a_null_member(kms, keys, document):
    with pytest.raises(ClientError) as info:
        kms.decrypt(CiphertextBlob=keys.ciphertext, Recipient={"AttestationDocument": document})
    error = info.value.response["Error"]
    assert error == {"Code": "ValidationException", "Message": "1 validation error detected: Value null at 'recipient.keyEncryptionAlgorithm' failed to satisfy constraint: Member must not be null"}


def test_moto_failures_become_json(model, front, ca_file, keys):
    # moto crashes (an HTML 500 page) on a GenerateRandom without NumberOfBytes; the front answers
    # AWS's words before moto is asked, and anything else moto cannot answer in JSON is KMSInternalException.
    from emulator.kms.server import _json_only

    html = HttpResponse(500, b"<!doctype html><title>500 Internal Server Error</title>", "text/html")
    assert json.loads(_json_only(html).body) == {"__type": "KMSInternalException", "message": "The KMS emulator failed to process the request."}
    status, _, body = http_post(front.endpoint_url, *request("TrentService.GenerateRandom", b"{}"), ca_file=ca_file[1])
    assert (status, json.loads(body)) == (400, recorded("test_generate_random_invalid_number_of_bytes[None]", "generate-random-exc"))


_printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
# What an HTTP header can carry beyond ASCII: http.client sends str headers as Latin-1.
_latin1 = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
_header_values = _printable | _latin1
_beyond_ascii = st.text(alphabet=st.characters(min_codepoint=0xA0, max_codepoint=0xFF), min_size=1, max_size=20)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
    | st.sampled_from(["aGk=", "alias/fidelity", "RSAES_OAEP_SHA_256", "ECDH", "AES_256", "", "=", "a" * 2049]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12) | st.sampled_from(["KeyEncryptionAlgorithm", "AttestationDocument", "TagKey", "TagValue"]), children, max_size=3),
    max_leaves=12,
)  # fmt: skip
_operations = st.sampled_from(sorted(service_model.operation_names()))


def _signed_shape(text: str) -> str:
    """An Authorization header of the right shape whose credential and signature are ``text``."""
    return f"AWS4-HMAC-SHA256 Credential={EMULATOR_ACCESS_KEY}/20250101/{REGION}/kms/aws4_request, SignedHeaders=host, Signature={text or 'x'}"


@st.composite
def _garbage_requests(draw: Any) -> SimpleNamespace:
    operation = draw(_operations)
    members = service_model.input_members(operation)
    return SimpleNamespace(
        target=draw(st.one_of(st.just(f"TrentService.{operation}"), _printable, st.none(), st.just(f"TrentService.{operation.lower()}"))),
        body=draw(
            st.one_of(
                st.binary(max_size=300),
                _json_values.map(lambda value: json.dumps(value).encode()),
                st.dictionaries(st.sampled_from(members) if members else st.text(max_size=5), _json_values, max_size=5).map(lambda value: json.dumps(value).encode()),
            )
        ),
        who=draw(st.sampled_from(["root", "nobody", "unknown", "wrong secret"])),
        authorization=draw(st.one_of(st.just("signed"), _header_values, st.none(), (_header_values | _beyond_ascii).map(_signed_shape))),
        extra=draw(st.dictionaries(st.sampled_from(["X-Amz-Date", "Content-Type", "X-Amz-Security-Token", "Expect", "X-Junk"]), _header_values, max_size=2)),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(garbage=_garbage_requests())
# Always tried, whatever the draw: a well-formed request whose signature is not ASCII (once a 500).
@example(garbage=SimpleNamespace(target="TrentService.ListKeys", body=b"{}", who="root", authorization=_signed_shape("\u00e9"), extra={}))
@example(garbage=SimpleNamespace(target="TrentService.ListKeys", body=b"{}", who="nobody", authorization="signed", extra={"X-Junk": "caf\u00e9"}))
# Found by this test in CI: a RetireGrant naming no grant reached moto, which answered 500.
@example(garbage=SimpleNamespace(target="TrentService.RetireGrant", body=b"{}", who="root", authorization="signed", extra={}))
def test_garbage_gets_json_with_an_aws_error_type(front, ca_file, nobody, garbage):
    creds = {"root": ROOT, "nobody": nobody, "unknown": Creds("AKIAIOSFODNN7EXAMPLE"), "wrong secret": Creds(ROOT.access_key)}[garbage.who]
    headers, body = request(garbage.target, garbage.body, creds)
    if garbage.authorization is None:
        del headers["Authorization"]
    elif garbage.authorization != "signed":
        headers["Authorization"] = garbage.authorization
    headers.update(garbage.extra)
    status, content_type, answer = http_post(front.endpoint_url, headers, body, ca_file=ca_file[1])
    assert content_type == JSON_TYPE
    parsed = json.loads(answer)
    assert isinstance(parsed, dict)
    assert status < 500, parsed  # garbage is the caller's fault: never a KMSInternalException
    if status >= 400:
        assert parsed.get("__type") in allowed_errors(garbage.target), (garbage.target, parsed)
        assert set(parsed) <= {"__type", "message", "Message"}, parsed
        assert "Traceback" not in answer.decode(errors="replace")


# --- operations moto lacks: what an account without custom key stores or ML-KEM keys is answered ---
MISSING_ID = "cks-1234567890abcdef0"
# A well-formed request for every operation of the model that moto itself does not implement, and
# what AWS answers an account that has no custom key store and no ML-KEM key: HTTP 200 with these
# output members, or this error (each in the operation's model).
LACKING = {
    "DescribeCustomKeyStores": ({}, 200, {"CustomKeyStores", "Truncated"}),
    "ConnectCustomKeyStore": ({"CustomKeyStoreId": MISSING_ID}, 400, "CustomKeyStoreNotFoundException"),
    "DisconnectCustomKeyStore": ({"CustomKeyStoreId": MISSING_ID}, 400, "CustomKeyStoreNotFoundException"),
    "DeleteCustomKeyStore": ({"CustomKeyStoreId": MISSING_ID}, 400, "CustomKeyStoreNotFoundException"),
    "UpdateCustomKeyStore": ({"CustomKeyStoreId": MISSING_ID, "NewCustomKeyStoreName": "x"}, 400, "CustomKeyStoreNotFoundException"),
    "CreateCustomKeyStore": ({"CustomKeyStoreName": "hsm", "CloudHsmClusterId": "cluster-abcdefghijk"}, 400, "CloudHsmClusterNotFoundException"),
    "Encapsulate": ({"KeyId": "SYMMETRIC", "EncapsulationAlgorithm": "ML_KEM"}, 400, "InvalidKeyUsageException"),
    "Decapsulate": ({"KeyId": "SYMMETRIC", "EncapsulationAlgorithm": "ML_KEM", "SharedSecretCiphertextBlob": b64(b"x" * 32)}, 400, "InvalidKeyUsageException"),
    "GetKeyLastUsage": ({"KeyId": "SYMMETRIC"}, 200, {"KeyId", "KeyCreationDate", "TrackingStartDate"}),
    "DeleteImportedKeyMaterial": ({"KeyId": "SYMMETRIC"}, 400, "UnsupportedOperationException"),
    "GetParametersForImport": ({"KeyId": "SYMMETRIC", "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"}, 400, "UnsupportedOperationException"),
    "ImportKeyMaterial": ({"KeyId": "SYMMETRIC", "ImportToken": b64(b"t"), "EncryptedKeyMaterial": b64(b"m")}, 400, "UnsupportedOperationException"),
    "UpdatePrimaryRegion": ({"KeyId": "SYMMETRIC", "PrimaryRegion": "us-west-2"}, 400, "UnsupportedOperationException"),
    "GenerateDataKeyPair": ({"KeyId": "SYMMETRIC", "KeyPairSpec": "ECC_NIST_P256"}, 200, {"KeyId", "KeyPairSpec", "PublicKey", "PrivateKeyCiphertextBlob", "PrivateKeyPlaintext"}),
    "GenerateDataKeyPairWithoutPlaintext": ({"KeyId": "SYMMETRIC", "KeyPairSpec": "ECC_NIST_P256"}, 200, {"KeyId", "KeyPairSpec", "PublicKey", "PrivateKeyCiphertextBlob"}),
    "DeriveSharedSecret": ({"KeyId": "SYMMETRIC", "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(b"x")}, 400, "InvalidKeyUsageException"),
}


def _moto_lacks() -> set[str]:
    from moto.core.utils import camelcase_to_underscores
    from moto.kms.responses import KmsResponse

    return {operation for operation in service_model.operation_names() if not hasattr(KmsResponse, camelcase_to_underscores(operation))}


def _output_members(operation: str) -> set[str]:
    import botocore.session

    return set(botocore.session.get_session().get_service_model("kms").operation_model(operation).output_shape.members)


def test_every_operation_moto_lacks_has_an_answer_here():
    """A botocore with a new KMS operation makes this fail until the emulator answers it faithfully."""
    assert _moto_lacks() == set(LACKING)


@pytest.mark.parametrize("operation", sorted(LACKING))
def test_an_operation_moto_lacks_answers_as_aws_answers_an_account_without_the_resource(operation, front, ca_file, keys):
    params, status, expected = LACKING[operation]
    params = {name: keys.sym if value == "SYMMETRIC" else value for name, value in params.items()}
    headers, body = request(f"TrentService.{operation}", params)
    answered, content_type, answer = http_post(front.endpoint_url, headers, body, ca_file=ca_file[1])
    parsed = json.loads(answer)
    assert (answered, content_type) == (status, JSON_TYPE), parsed
    if status == 200:
        assert set(parsed) == expected and set(parsed) <= _output_members(operation), parsed
    else:
        assert parsed["__type"] == expected and expected in allowed_errors(f"TrentService.{operation}"), parsed


def test_custom_key_store_lookups_by_id_or_name_find_none(front, ca_file):
    for params in ({"CustomKeyStoreId": MISSING_ID}, {"CustomKeyStoreName": "hsm"}):
        headers, body = request("TrentService.DescribeCustomKeyStores", params)
        status, _, answer = http_post(front.endpoint_url, headers, body, ca_file=ca_file[1])
        assert (status, json.loads(answer)["__type"]) == (400, "CustomKeyStoreNotFoundException")
    headers, body = request("TrentService.DescribeCustomKeyStores", {})
    assert json.loads(http_post(front.endpoint_url, headers, body, ca_file=ca_file[1])[2]) == {"CustomKeyStores": [], "Truncated": False}


@pytest.mark.parametrize("params", [{}, {"KeyId": "SYMMETRIC"}, {"GrantId": "0" * 64}])
def test_a_retire_grant_naming_no_grant_is_a_validation_error(params, front, ca_file, keys):
    params = {name: keys.sym if value == "SYMMETRIC" else value for name, value in params.items()}
    headers, body = request("TrentService.RetireGrant", params)
    status, content_type, answer = http_post(front.endpoint_url, headers, body, ca_file=ca_file[1])
    assert (status, json.loads(answer)["__type"]) == (400, "ValidationException"), answer


@pytest.mark.parametrize("operation", sorted(service_model.operation_names()))
def test_every_operation_with_an_empty_body_gets_an_aws_error_not_a_500(operation, front, ca_file):
    """The smallest garbage, for every operation at once (the hypothesis test above samples them):
    the account root's signed ``{}`` gets an answer of the operation's model, never a 500."""
    headers, body = request(f"TrentService.{operation}", {})
    status, content_type, answer = http_post(front.endpoint_url, headers, body, ca_file=ca_file[1])
    parsed = json.loads(answer)
    assert content_type == JSON_TYPE and status < 500, (operation, parsed)
    if status >= 400:
        assert parsed.get("__type") in allowed_errors(f"TrentService.{operation}"), (operation, parsed)
