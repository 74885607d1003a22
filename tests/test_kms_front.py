"""The attesting KMS (emulator/kms/), at three levels as moto's own KMS tests are laid out.

1. the model (``AttestingKms``): Decrypt with a Recipient attestation document, key policies;
2. the HTTP app (``emulator.kms.responses.dispatch``): request parsing and error rendering;
3. boto3 through the TLS front (``KmsFrontServer``), as the enclave and the host's tools call it.

moto runs in a process of its own (one per module), as the emulator runs it; documents come from
an ``EmulatedNsm`` on this module's ``AttestationPki``, with the test's RSA-2048 key inside.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from attestation_builder import make_chain, sample_pcrs, timestamp_ms
from botocore.config import Config
from botocore.exceptions import ClientError, SSLError
from emulator_helpers import (
    ACCOUNT_ID,
    EMULATOR_ACCESS_KEY,
    EMULATOR_SECRET_KEY,
    REGION,
    join_new_threads,
    moto_process,
    recipient,
    rsa_recipient,
    signed_headers,
    spki_der,
)

from emulator.kms.exceptions import (
    AccessDeniedException,
    IncorrectKeyException,
    KmsException,
    MalformedPolicyDocumentException,
    ValidationException,
)
from emulator.kms.models import AttestingKms, MotoError
from emulator.kms.responses import MAX_BODY, HttpResponse, Passthrough, dispatch
from emulator.kms.server import KmsFrontServer
from emulator.nsm import EmulatedNsm
from emulator.pki import AttestationPki, TlsAuthority
from enclave.cms import decrypt_ciphertext_for_recipient
from zerocopy.kms_policy import attested_key_policy

CONTEXT = {"zerocopy:name": "binance-main", "zerocopy:format": "1"}
MODULE_ID = "i-0123456789abcdef0-enc0123456789abcdef"
KMS_HOST = f"kms.{REGION}.amazonaws.com"
ADMIN = {
    "Sid": "KeyAdministrationByTheAccount",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
    "Action": "kms:*",
    "Resource": "*",
}
_NO_RETRIES = Config(retries={"total_max_attempts": 1})
ROOT_KEY = EMULATOR_ACCESS_KEY  # the access key the emulator gives its own clients: the account root
# An unclosed socket or file anywhere in these tests is a leak: fail on it.
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [ADMIN, *statements]})


# --- module fixtures: moto, the PKI, an enclave, keys -----------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kms")


@pytest.fixture(scope="module")
def moto_endpoint(workdir: Path) -> Iterator[str]:
    with moto_process(workdir) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def moto(moto_endpoint: str) -> Iterator[Any]:
    """A boto3 client straight to moto: what the emulator adds is measured against it."""
    client = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
    ).client("kms", endpoint_url=moto_endpoint, config=_NO_RETRIES)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def pki() -> AttestationPki:
    return AttestationPki(REGION)


@pytest.fixture(scope="module")
def model(moto_endpoint: str, pki: AttestationPki) -> Iterator[AttestingKms]:
    kms = AttestingKms(moto_endpoint, attestation_roots=[pki.root_pem], account_id=ACCOUNT_ID, region=REGION, root_credentials={ROOT_KEY: EMULATOR_SECRET_KEY})
    try:
        yield kms
    finally:
        kms.close()


@pytest.fixture(scope="module")
def enclave_key():
    return rsa_recipient()


@pytest.fixture(scope="module")
def nsm(pki: AttestationPki) -> EmulatedNsm:
    return EmulatedNsm(pki, module_id=MODULE_ID, pcrs=sample_pcrs(b"zerocopy-enclave"))


@pytest.fixture(scope="module")
def document(nsm: EmulatedNsm, enclave_key) -> bytes:
    """The enclave's attestation document with its RSA key: PCR0 matches the pinned keys."""
    return nsm.attestation_document(public_key=spki_der(enclave_key), nonce=b"kms")


@pytest.fixture(scope="module")
def pinned_key(moto, nsm: EmulatedNsm) -> str:
    created = moto.create_key(Policy=json.dumps(attested_key_policy(ACCOUNT_ID, image_sha384=nsm.pcrs[0])))
    return created["KeyMetadata"]["Arn"]


@pytest.fixture(scope="module")
def default_key(moto) -> str:
    return moto.create_key(Description="moto's default key policy")["KeyMetadata"]["Arn"]


@pytest.fixture(scope="module")
def data_key(moto, pinned_key: str) -> tuple[bytes, bytes]:
    """(CiphertextBlob, Plaintext) of a data key under the pinned key, bound to CONTEXT."""
    generated = moto.generate_data_key(KeyId=pinned_key, KeySpec="AES_256", EncryptionContext=CONTEXT)
    return generated["CiphertextBlob"], generated["Plaintext"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decrypt_params(ciphertext: bytes, context: dict | None = CONTEXT, **extra: Any) -> dict:
    params: dict[str, Any] = {"CiphertextBlob": b64(ciphertext), **extra}
    if context is not None:
        params["EncryptionContext"] = context
    return params


@contextlib.contextmanager
def raises_kms(exc_type: type[KmsException], code: str, word: str) -> Iterator[None]:
    with pytest.raises(exc_type) as info:
        yield
    assert info.value.code == code
    assert info.value.status == 400
    assert word.lower() in info.value.message.lower(), info.value.message


EXPLICIT_DENY = "with an explicit deny in a resource-based policy"


@contextlib.contextmanager
def denied(ending: str, reason: str) -> Iterator[None]:
    """AccessDeniedException in AWS's words (``ending``); the deciding statement is in ``.reason``."""
    with pytest.raises(AccessDeniedException) as info:
        yield
    assert info.value.status == 400
    assert info.value.message.startswith("User: arn:aws:") and " is not authorized to perform: kms:" in info.value.message
    assert info.value.message.endswith(ending), info.value.message
    assert reason in info.value.reason, info.value.reason


# --- level 1: the model ------------------------------------------------------------------------


class TestModel:
    def test_decrypt_with_recipient_seals_the_data_key_to_the_enclave(self, model, data_key, document, enclave_key, pinned_key):
        ciphertext, plaintext = data_key
        response = model.decrypt(decrypt_params(ciphertext, Recipient=recipient(document)), model.root)
        assert "Plaintext" not in response
        assert response["KeyId"] == pinned_key
        sealed = base64.b64decode(response["CiphertextForRecipient"])
        assert decrypt_ciphertext_for_recipient(sealed, enclave_key) == plaintext

    def test_key_id_naming_the_right_key_is_accepted(self, model, data_key, document, enclave_key, pinned_key):
        ciphertext, plaintext = data_key
        key_id = pinned_key.rsplit("/", 1)[1]
        response = model.decrypt(decrypt_params(ciphertext, KeyId=key_id, Recipient=recipient(document)), model.root)
        assert decrypt_ciphertext_for_recipient(base64.b64decode(response["CiphertextForRecipient"]), enclave_key) == plaintext

    def test_pcr0_mismatch_is_access_denied(self, model, pki, data_key, enclave_key):
        other_image = EmulatedNsm(pki, module_id=MODULE_ID, pcrs=sample_pcrs(b"another image"))
        document = other_image.attestation_document(public_key=spki_der(enclave_key))
        with denied(EXPLICIT_DENY, "DenyUnlessAttestedImageSha384"):
            model.decrypt(decrypt_params(data_key[0], Recipient=recipient(document)), model.root)

    def test_debug_document_is_accepted_but_fails_the_pinned_policy(self, model, pki, data_key, enclave_key):
        debug = EmulatedNsm(pki, module_id=MODULE_ID, pcrs=sample_pcrs(b"zerocopy-enclave", debug=True))
        document = debug.attestation_document(public_key=spki_der(enclave_key))
        with denied(EXPLICIT_DENY, "explicitly denied"):
            model.decrypt(decrypt_params(data_key[0], Recipient=recipient(document)), model.root)

    def test_document_from_another_root_is_invalid(self, model, nsm, data_key, enclave_key):
        now = dt.datetime.now(dt.timezone.utc)
        foreign = make_chain(now).document(
            pcrs=dict(nsm.pcrs), public_key=spki_der(enclave_key), timestamp_ms=timestamp_ms(now)
        )  # the right PCR0, the wrong root
        with raises_kms(ValidationException, "ValidationException", "not valid"):
            model.decrypt(decrypt_params(data_key[0], Recipient=recipient(foreign)), model.root)

    def test_document_without_public_key_is_invalid(self, model, nsm, data_key):
        with raises_kms(ValidationException, "ValidationException", "public key"):
            model.decrypt(decrypt_params(data_key[0], Recipient=recipient(nsm.attestation_document())), model.root)

    @pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_1", "rsaes_oaep_sha_256", ""])
    def test_wrong_key_encryption_algorithm(self, model, data_key, document, algorithm):
        with raises_kms(ValidationException, "ValidationException", "KeyEncryptionAlgorithm"):
            model.decrypt(decrypt_params(data_key[0], Recipient=recipient(document, algorithm)), model.root)

    @pytest.mark.parametrize(
        ("bad", "word"),
        [("not a dict", "structure"), ({"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}, "AttestationDocument"),
         ({"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": "!!"}, "base64")],
    )
    def test_malformed_recipient(self, model, data_key, bad, word):
        with raises_kms(ValidationException, "ValidationException", word):
            model.decrypt(decrypt_params(data_key[0], Recipient=bad), model.root)

    def test_garbage_document_is_invalid(self, model, data_key):
        with raises_kms(ValidationException, "ValidationException", "not valid"):
            model.decrypt(decrypt_params(data_key[0], Recipient=recipient(b"\xa0not cose")), model.root)

    def test_key_id_naming_another_key(self, model, data_key, document, default_key):
        with raises_kms(IncorrectKeyException, "IncorrectKeyException", "key ID"):
            model.decrypt(decrypt_params(data_key[0], KeyId=default_key, Recipient=recipient(document)), model.root)

    def test_wrong_encryption_context_is_moto_error_passed_on(self, model, data_key, document):
        with pytest.raises(MotoError) as info:
            model.decrypt(decrypt_params(data_key[0], context={**CONTEXT, "zerocopy:name": "other"}, Recipient=recipient(document)), model.root)
        assert info.value.code == "InvalidCiphertextException" and info.value.status == 400
        assert info.value.message == ""  # moto (like KMS) says no more than the code; passed on verbatim

    def test_plain_decrypt_of_pinned_key_denied_though_moto_allows_it(self, model, moto, data_key):
        ciphertext, plaintext = data_key
        # moto alone hands the plaintext to anyone who asks: the gap the emulator closes.
        assert moto.decrypt(CiphertextBlob=ciphertext, EncryptionContext=CONTEXT)["Plaintext"] == plaintext
        with denied(EXPLICIT_DENY, "explicitly denied"):
            model.decrypt(decrypt_params(ciphertext), model.root)

    def test_default_policy_allows_plain_decrypt(self, model, moto, default_key):
        generated = moto.generate_data_key(KeyId=default_key, KeySpec="AES_256", EncryptionContext=CONTEXT)
        response = model.decrypt(decrypt_params(generated["CiphertextBlob"]), model.root)
        assert base64.b64decode(response["Plaintext"]) == generated["Plaintext"]
        assert response["KeyId"] == default_key and "CiphertextForRecipient" not in response

    def test_default_policy_with_recipient_returns_no_plaintext(self, model, moto, default_key, document, enclave_key):
        generated = moto.generate_data_key(KeyId=default_key, KeySpec="AES_256")
        response = model.decrypt(decrypt_params(generated["CiphertextBlob"], context=None, Recipient=recipient(document)), model.root)
        assert "Plaintext" not in response
        sealed = base64.b64decode(response["CiphertextForRecipient"])
        assert decrypt_ciphertext_for_recipient(sealed, enclave_key) == generated["Plaintext"]

    @pytest.mark.parametrize(
        ("text", "word"),
        [
            ("not json", "not JSON"),
            ("[]", "JSON object"),
            (None, "empty"),
            (json.dumps({"Version": "2012-10-17", "Statement": [{**ADMIN, "Effect": "Maybe"}]}), "Effect"),
            (json.dumps({"Version": "2012-10-17", "Statement": [{**ADMIN, "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]}), "operator"),
        ],
    )
    def test_validate_policy_refuses_unparseable(self, model, text, word):
        with raises_kms(MalformedPolicyDocumentException, "MalformedPolicyDocumentException", word):
            model.validate_policy(text)

    def test_validate_policy_refuses_unknown_condition_keys(self, model):
        text = policy({**ADMIN, "Sid": "Tagged", "Effect": "Deny", "Condition": {"StringEquals": {"aws:PrincipalTag/team": "ops"}}})
        with raises_kms(MalformedPolicyDocumentException, "MalformedPolicyDocumentException", "aws:principaltag/team"):
            model.validate_policy(text)

    def test_validate_policy_accepts_zerocopy_policies(self, model, nsm):
        model.validate_policy(json.dumps(attested_key_policy(ACCOUNT_ID, image_sha384=nsm.pcrs[0], pcrs={1: nsm.pcrs[1]})))
        model.authorize_request("CreateKey", {"Policy": policy()}, model.root)

    def test_create_key_with_malformed_policy_refused_though_moto_takes_it(self, model, moto):
        with raises_kms(MalformedPolicyDocumentException, "MalformedPolicyDocumentException", "not JSON"):
            model.authorize_request("CreateKey", {"Policy": "{not json"}, model.root)
        key = moto.create_key(Policy="{not json")["KeyMetadata"]["Arn"]  # moto's validator fails open
        with denied("because no resource-based policy allows the kms:Encrypt action", "cannot be evaluated"):
            model.authorize("kms:Encrypt", key, {}, model.root)  # and a policy we cannot evaluate allows nothing

    def test_encryption_context_condition_is_enforced(self, model, moto):
        text = policy(
            {
                "Sid": "OnlyTheAlphaSecret",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringNotEquals": {"kms:EncryptionContext:zerocopy:name": "alpha"}},
            }
        )
        model.validate_policy(text)
        key = moto.create_key(Policy=text)["KeyMetadata"]["Arn"]
        alpha = moto.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"zerocopy:name": "alpha"})
        beta = moto.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"zerocopy:name": "beta"})
        bare = moto.generate_data_key(KeyId=key, KeySpec="AES_256")
        allowed = model.decrypt(decrypt_params(alpha["CiphertextBlob"], context={"zerocopy:name": "alpha"}), model.root)
        assert base64.b64decode(allowed["Plaintext"]) == alpha["Plaintext"]
        with denied(EXPLICIT_DENY, "OnlyTheAlphaSecret"):
            model.decrypt(decrypt_params(beta["CiphertextBlob"], context={"zerocopy:name": "beta"}), model.root)
        with denied(EXPLICIT_DENY, "OnlyTheAlphaSecret"):
            model.decrypt(decrypt_params(bare["CiphertextBlob"], context=None), model.root)

    def test_passthrough_authorization(self, model, pinned_key):
        model.authorize_request("GenerateDataKey", {"KeyId": pinned_key, "KeySpec": "AES_256"}, model.root)
        model.authorize_request("ListKeys", {}, model.root)
        with denied(EXPLICIT_DENY, "DenyUnlessAttestedImageSha384"):
            model.authorize_request("CreateGrant", {"KeyId": pinned_key, "GranteePrincipal": "x", "Operations": ["Decrypt"]}, model.root)
        with pytest.raises(MotoError) as info:
            model.authorize_request("GenerateDataKey", {"KeyId": "alias/does-not-exist"}, model.root)
        assert info.value.code == "NotFoundException" and "alias" in info.value.message


# --- level 2: the HTTP app ---------------------------------------------------------------------


def post(model: AttestingKms, operation: str | None, body: bytes | dict) -> HttpResponse | Passthrough:
    """``dispatch`` as the front calls it, signed as the account root: ``operation`` is a model name, a raw target or None."""
    target = None if operation is None else operation if "." in operation or not operation else f"TrentService.{operation}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return dispatch(model, signed_headers(target, raw), raw)


def rendered(result: HttpResponse | Passthrough) -> tuple[int, dict]:
    assert isinstance(result, HttpResponse), result
    assert result.content_type == "application/x-amz-json-1.1"
    return result.status, json.loads(result.body)


def message(body: dict) -> str:
    """KMS writes ``message``, or ``Message`` for AccessDeniedException and SerializationException."""
    return body.get("message", body.get("Message", ""))


class TestHttpApp:
    @pytest.mark.parametrize(
        "target",
        [None, "", "Decrypt", "TrentService.", "TrentService.Decrypt!", "OtherService.Decrypt", "TrentService.Get/Key",
         "TrentService.decrypt", "TrentService.DECRYPT", "trentservice.Decrypt", "TrentService.Decrypt ", " TrentService.Decrypt",
         "TrentService.EmulatorCiphertextKeyId", "TrentService.__class__", "TrentService.GenerateDataKeyPairs"],
    )  # fmt: skip
    def test_unknown_or_mis_cased_target(self, model, target):
        # AWS's JSON 1.1 front end: HTTP 400 and a body with only the type (kinesalite records it).
        status, body = rendered(dispatch(model, signed_headers(target, b"{}"), b"{}"))
        assert (status, body) == (400, {"__type": "UnknownOperationException"})

    @pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b"NaN}", b"{\"a\": NaN}", b"[" * 100_000])
    def test_non_json_body(self, model, raw):
        status, body = rendered(post(model, "ListKeys", raw))
        assert (status, body) == (400, {"__type": "SerializationException"})

    @pytest.mark.parametrize(("raw", "words"), [(b"[]", "Start of list found where not expected"), (b"1", "Expected null"), (b'"Decrypt"', "Expected null"), (b"null", "Expected null")])
    def test_non_object_json(self, model, raw, words):
        status, body = rendered(post(model, "Decrypt", raw))
        assert (status, body) == (400, {"__type": "SerializationException", "Message": words})

    def test_oversize_body(self, model):
        status, body = rendered(post(model, "ListKeys", b" " * (MAX_BODY + 1)))
        assert status == 400 and body["__type"] == "SerializationException" and "too large" in message(body)

    def test_empty_body(self, model):
        # Like AWS: no body is a SerializationException for a known operation, unknown otherwise.
        assert rendered(post(model, "ListKeys", b"")) == (400, {"__type": "SerializationException"})
        assert rendered(post(model, "ListKeyz", b"")) == (400, {"__type": "UnknownOperationException"})

    def test_decrypt_is_answered_directly(self, model, data_key, document, enclave_key, pinned_key):
        ciphertext, plaintext = data_key
        status, answer = rendered(post(model, "Decrypt", decrypt_params(ciphertext, Recipient=recipient(document))))
        assert status == 200 and answer["KeyId"] == pinned_key and "Plaintext" not in answer
        assert decrypt_ciphertext_for_recipient(base64.b64decode(answer["CiphertextForRecipient"]), enclave_key) == plaintext

    def test_decrypt_errors_are_rendered(self, model, data_key, nsm, default_key, document):
        cases = [
            (decrypt_params(data_key[0]), "AccessDeniedException", EXPLICIT_DENY),
            (decrypt_params(data_key[0], Recipient=recipient(nsm.attestation_document())), "ValidationException", "public key"),
            (decrypt_params(data_key[0], KeyId=default_key, Recipient=recipient(document)), "IncorrectKeyException", "key ID"),
            ({"Recipient": recipient(document)}, "ValidationException", "CiphertextBlob"),  # optional in the model (DryRunModifiers)
        ]
        for params, code, word in cases:
            status, body = rendered(post(model, "Decrypt", params))
            assert (status, body["__type"]) == (400, code)
            assert word in message(body)

    def test_moto_errors_keep_their_code(self, model, data_key, document):
        # Authorized (attested), then moto finds the context wrong: AWS authorizes before it decrypts.
        params = decrypt_params(data_key[0], context={"zerocopy:name": "forged"}, Recipient=recipient(document))
        status, body = rendered(post(model, "Decrypt", params))
        assert (status, body) == (400, {"__type": "InvalidCiphertextException"})  # KMS says no more

    @pytest.mark.parametrize(
        ("operation", "params"),
        [
            ("GenerateDataKey", {"KeySpec": "AES_256", "EncryptionContext": CONTEXT}),
            ("Encrypt", {"Plaintext": "aGVsbG8="}),
            ("DescribeKey", {}),
            ("ListKeys", {}),
        ],
    )
    def test_other_calls_pass_through_after_authorization(self, model, pinned_key, operation, params):
        if operation != "ListKeys":
            params = {**params, "KeyId": pinned_key}
        assert post(model, operation, params) == Passthrough()

    def test_passed_on_body_is_the_validated_request(self, model, pinned_key):
        # Unknown members dropped, nulls dropped, numbers truncated: what moto sees is what AWS reads.
        result = post(model, "GenerateDataKey", {"KeyId": pinned_key, "NumberOfBytes": 32.9, "Extra": [1], "EncryptionContext": None})
        assert isinstance(result, Passthrough) and json.loads(result.body) == {"KeyId": pinned_key, "NumberOfBytes": 32}

    def test_create_key_passes_through_only_with_a_valid_policy(self, model, nsm):
        good = {"Policy": json.dumps(attested_key_policy(ACCOUNT_ID, image_sha384=nsm.pcrs[0]))}
        assert post(model, "CreateKey", good) == Passthrough()
        status, body = rendered(post(model, "CreateKey", {"Policy": "{"}))
        assert (status, body["__type"]) == (400, "MalformedPolicyDocumentException") and "not JSON" in body["message"]

    def test_denied_passthrough(self, model, moto):
        text = policy({"Sid": "NoDataKeys", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:GenerateDataKey*", "Resource": "*"})
        key = moto.create_key(Policy=text)["KeyMetadata"]["KeyId"]
        status, body = rendered(post(model, "GenerateDataKey", {"KeyId": key, "KeySpec": "AES_256"}))
        assert (status, body["__type"]) == (400, "AccessDeniedException")
        assert message(body).endswith(f"kms:GenerateDataKey on resource: arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{key} {EXPLICIT_DENY}")
        assert post(model, "Encrypt", {"KeyId": key, "Plaintext": "eA=="}) == Passthrough()

    def test_reencrypt_is_authorized_on_the_source_key(self, model, data_key, default_key):
        params = {"CiphertextBlob": b64(data_key[0]), "SourceEncryptionContext": CONTEXT, "DestinationKeyId": default_key}
        status, body = rendered(post(model, "ReEncrypt", params))
        assert (status, body["__type"]) == (400, "AccessDeniedException") and "kms:ReEncryptFrom" in message(body)


# --- level 3: boto3 through the TLS front ------------------------------------------------------


@pytest.fixture(scope="module")
def tls_ca(workdir: Path) -> TlsAuthority:
    return TlsAuthority()


@pytest.fixture(scope="module")
def ca_path(workdir: Path, tls_ca: TlsAuthority) -> Path:
    path = workdir / "tls-ca.pem"
    path.write_bytes(tls_ca.root_pem)
    return path


@pytest.fixture(scope="module")
def front(workdir: Path, tls_ca: TlsAuthority, model: AttestingKms) -> Iterator[KmsFrontServer]:
    served = tls_ca.server_certificate(KMS_HOST)
    cert, key = workdir / "kms-cert.pem", workdir / "kms-key.pem"
    cert.write_bytes(served.pem)
    key.touch(0o600)
    key.write_bytes(TlsAuthority.key_pem(served))
    before = set(threading.enumerate())
    server = KmsFrontServer(model, certfile=str(cert), keyfile=str(key))
    try:
        yield server.start()
    finally:
        server.stop()
        assert join_new_threads(before) == []  # the accept loop and every connection handler


def front_client(front: KmsFrontServer, verify: Any) -> Any:
    return boto3.session.Session(
        aws_access_key_id="zerocopy-emulator", aws_secret_access_key="zerocopy-emulator-secret", region_name=REGION
    ).client("kms", endpoint_url=front.endpoint_url, verify=verify, config=_NO_RETRIES)


@pytest.fixture(scope="module")
def kms(front: KmsFrontServer, ca_path: Path) -> Iterator[Any]:
    client = front_client(front, str(ca_path))
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def client_error(code: str, word: str) -> Iterator[None]:
    with pytest.raises(ClientError) as info:
        yield
    error = info.value.response["Error"]
    assert error["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert word.lower() in error["Message"].lower(), error["Message"]


def test_stop_closes_open_connections_and_joins_their_handlers(workdir, tls_ca, ca_path, model):
    """A keep-alive client, and one that never starts TLS, must not keep handler threads alive."""
    served = tls_ca.server_certificate(KMS_HOST)
    cert, key = workdir / "stop-cert.pem", workdir / "stop-key.pem"
    cert.write_bytes(served.pem)
    key.write_bytes(TlsAuthority.key_pem(served))
    before = set(threading.enumerate())
    server = KmsFrontServer(model, certfile=str(cert), keyfile=str(key)).start()
    context = ssl.create_default_context(cafile=str(ca_path))
    keep_alive = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=30)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        headers = signed_headers("TrentService.ListKeys", b"{}")  # the account root's credentials
        keep_alive.request("POST", "/", body=b"{}", headers=headers)
        response = keep_alive.getresponse()
        assert response.status == 200 and "Keys" in json.loads(response.read())
        assert not response.will_close  # the connection stays open; its handler waits for more
        server.stop()
        assert [t for t in threading.enumerate() if t not in before] == [], "stop() left handler threads behind"
        assert keep_alive.sock.recv(1) == b""  # the server closed its end of both connections
        assert silent.recv(1) == b""
    finally:
        server.stop()  # idempotent enough for a second call after a failed assertion
        keep_alive.close()
        silent.close()
        join_new_threads(before)


class TestBoto3:
    @pytest.fixture(scope="class")
    @classmethod
    def front_key(cls, kms, nsm) -> str:
        """A pinned key created through the front, as ``zerocopy seal`` does."""
        created = kms.create_key(Policy=json.dumps(attested_key_policy(ACCOUNT_ID, image_sha384=nsm.pcrs[0])))
        return created["KeyMetadata"]["Arn"]

    def test_calls_pass_through(self, kms, front_key):
        assert front_key in {key["KeyArn"] for key in kms.list_keys()["Keys"]}
        generated = kms.generate_data_key(KeyId=front_key, KeySpec="AES_256", EncryptionContext=CONTEXT)
        assert len(generated["Plaintext"]) == 32 and generated["KeyId"] == front_key
        encrypted = kms.encrypt(KeyId=front_key, Plaintext=b"api-secret", EncryptionContext=CONTEXT)
        assert encrypted["KeyId"] == front_key and encrypted["CiphertextBlob"]
        assert kms.describe_key(KeyId=front_key)["KeyMetadata"]["Arn"] == front_key

    def test_decrypt_with_recipient(self, kms, front_key, document, enclave_key):
        generated = kms.generate_data_key(KeyId=front_key, KeySpec="AES_256", EncryptionContext=CONTEXT)
        encrypted = kms.encrypt(KeyId=front_key, Plaintext=b"api-secret", EncryptionContext=CONTEXT)
        for ciphertext, plaintext in ((generated["CiphertextBlob"], generated["Plaintext"]), (encrypted["CiphertextBlob"], b"api-secret")):
            response = kms.decrypt(
                CiphertextBlob=ciphertext,
                EncryptionContext=CONTEXT,
                KeyId=front_key,
                Recipient={"AttestationDocument": document, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"},
            )
            assert "Plaintext" not in response and response["KeyId"] == front_key
            assert decrypt_ciphertext_for_recipient(response["CiphertextForRecipient"], enclave_key) == plaintext

    def test_plain_decrypt_is_access_denied(self, kms, front_key):
        ciphertext = kms.encrypt(KeyId=front_key, Plaintext=b"api-secret", EncryptionContext=CONTEXT)["CiphertextBlob"]
        with client_error("AccessDeniedException", "not authorized"):
            kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext=CONTEXT)

    def test_pcr0_mismatch_is_access_denied(self, kms, front_key, pki, enclave_key):
        ciphertext = kms.encrypt(KeyId=front_key, Plaintext=b"x", EncryptionContext=CONTEXT)["CiphertextBlob"]
        other = EmulatedNsm(pki, module_id=MODULE_ID, pcrs=sample_pcrs(b"patched enclave"))
        document = other.attestation_document(public_key=spki_der(enclave_key))
        with client_error("AccessDeniedException", EXPLICIT_DENY):
            kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext=CONTEXT,
                        Recipient={"AttestationDocument": document, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"})

    def test_incorrect_key(self, kms, front_key, default_key, document):
        ciphertext = kms.encrypt(KeyId=front_key, Plaintext=b"x", EncryptionContext=CONTEXT)["CiphertextBlob"]
        with client_error("IncorrectKeyException", "key ID"):
            kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext=CONTEXT, KeyId=default_key,
                        Recipient={"AttestationDocument": document, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"})

    def test_validation_error_for_a_foreign_document(self, kms, front_key, nsm, enclave_key):
        ciphertext = kms.encrypt(KeyId=front_key, Plaintext=b"x", EncryptionContext=CONTEXT)["CiphertextBlob"]
        now = dt.datetime.now(dt.timezone.utc)
        foreign = make_chain(now).document(pcrs=dict(nsm.pcrs), public_key=spki_der(enclave_key), timestamp_ms=timestamp_ms(now))
        with client_error("ValidationException", "not valid"):
            kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext=CONTEXT,
                        Recipient={"AttestationDocument": foreign, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"})

    def test_wrong_encryption_context(self, kms, front_key, document):
        ciphertext = kms.encrypt(KeyId=front_key, Plaintext=b"x", EncryptionContext=CONTEXT)["CiphertextBlob"]
        with pytest.raises(ClientError) as info:
            kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext={"zerocopy:name": "relabelled"},
                        Recipient={"AttestationDocument": document, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
        assert info.value.response["Error"]["Code"] == "InvalidCiphertextException"

    def test_create_key_with_malformed_policy(self, kms):
        with client_error("MalformedPolicyDocumentException", "not JSON"):
            kms.create_key(Policy="{this is not a policy")

    def test_denied_passthrough(self, kms):
        text = policy({"Sid": "NoDataKeys", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:GenerateDataKey", "Resource": "*"})
        key = kms.create_key(Policy=text)["KeyMetadata"]["KeyId"]
        with client_error("AccessDeniedException", "kms:GenerateDataKey"):
            kms.generate_data_key(KeyId=key, KeySpec="AES_256")

    @pytest.mark.parametrize("trust", ["botocore default bundle", "system bundle file"])
    def test_tls_without_the_emulator_ca_fails(self, front, monkeypatch, trust):
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
        if trust == "botocore default bundle":
            verify: Any = None
        else:
            paths = ssl.get_default_verify_paths()
            verify = next((p for p in (paths.cafile, paths.openssl_cafile) if p and Path(p).is_file()), None)
            if verify is None:
                pytest.skip("no system CA bundle file on this machine")
        client = front_client(front, verify)
        try:
            with pytest.raises(SSLError, match="(?i)certificate verify failed"):
                client.list_keys()
        finally:
            client.close()
