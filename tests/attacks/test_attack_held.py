"""The attacks that held (issue 8, "Suites anyone can rerun"): the compromised host tries them again.

The attacker is root on the parent instance: it has the sealed bundles on its disk, the host role's
AWS credentials (``Emulator.credentials``), the vsock (here: the emulator's Unix sockets, reached
with a plain, unattested connection or raw frames) and can put a listener of its own where the bot
connects. It runs everything against the real enclave code on the emulator. Each test does one
family of attacks the way that attacker would and asserts it gets nothing: no signature, no secret
byte, only a typed refusal naming the rule (``PolicyRefused.rule``, the enclave's provisioning
error, the KMS error code, the exact ``zerocopy.attestation`` error type). Where a request is
signed anyway — the path is not covered by the exchange's signature, a body is canonicalised — the
test checks with the independent reference signers that the bytes signed are exactly the ones the
policy judged, so the disguise bought nothing.

1. bundle edits on disk, and the host's own KMS calls on a bundle's data key;
2. path disguises;  3. parameter smuggling;  4. JSON tricks;  5. replay;
6. a debug-mode enclave;  7. forged and replayed attestation documents.

Most of these attacks have older, narrower tests elsewhere (named in comments); here they are
written end to end, as the attacker does them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import cbor2
import pytest
from botocore.exceptions import ClientError

import reference_signers as reference
from attestation_builder import make_chain, timestamp_ms
from emulator import HOST_ROLE_ARN
from enclave.protocol import NEED_DATA, Connection, ErrorCode, ErrorResponse, HttpSignature, MessageType, Role
from enclave.protocol import session as session_crypto
from enclave.protocol.bundle import SealedBundle, policy_digest
from zerocopy import PolicyRefused, Signer, UnknownKey, ZeroCopyError
from zerocopy.attestation import (
    AttestationError,
    CertificateChainInvalid,
    DebugModeRefused,
    NonceMismatch,
    PCRMismatch,
    SignatureInvalid,
    verify,
)
from zerocopy.errors import ProvisioningError, SessionError, UnsupportedOperation
from zerocopy.kms_policy import attested_key_policy
from zerocopy.sealing import seal

pytestmark = pytest.mark.zerocopy

RATE = {"per_second": "1000", "burst": 1000}  # so the rate rule never answers for another rule here
HEADER = struct.Struct(">IBBI")  # length, version, type, request id (docs/protocol.md)
HTTP_REQUEST = struct.Struct(">BBHII")  # key, method, path, params and body lengths
VERSION = 1

BINANCE_ORDER = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "0.01"), ("price", "30000")]
BYBIT_ORDER = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01", "price": "30000"}
OKX_ORDER = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "0.01", "px": "30000"}
KRAKEN_ORDER = [("ordertype", "limit"), ("type", "buy"), ("volume", "0.01"), ("pair", "XBTUSD"), ("price", "30000")]
COINBASE_ORDER = json.dumps({"client_order_id": "a1", "product_id": "BTC-USD", "side": "BUY", "order_configuration": {"limit_limit_gtc": {"base_size": "0.01", "limit_price": "30000"}}})
ORDER_PATHS = {"binance-hmac": "/api/v3/order", "bybit-hmac": "/v5/order/create", "okx-hmac": "/api/v5/trade/order", "kraken": "/0/private/AddOrder", "coinbase-jwt": "/api/v3/brokerage/orders"}


def compact(fields: dict) -> str:
    return json.dumps(fields, separators=(",", ":"))


def now_ms() -> int:
    return int(time.time() * 1000)


def refused(host: Signer, key, method: str, path: str, *, params=None, body=None) -> PolicyRefused:
    """The attacker's request; the test fails if anything but a policy refusal comes back."""
    try:
        signed = host.sign_request(key.name, method, path, params=params, body=body)
    except PolicyRefused as refusal:
        return refusal
    pytest.fail(f"the enclave signed the attacker's {method} {path!r}: query={signed.query[:200]!r} body={str(signed.body)[:200]!r}")


# == the attacker's tools ==========================================================================
@pytest.fixture(scope="module")
def host(zerocopy_emulator):
    """The attacker's own connection to the enclave: plain, unattested (the enclave does not
    authenticate its clients; SECURITY.md "Talk to the enclave itself")."""
    with Signer(zerocopy_emulator.address) as signer:
        yield signer


@pytest.fixture(scope="module")
def keys(zerocopy_key):
    """The bot's keys, sealed by the operator with tight policies (freshness on, as by default)."""
    return {
        "binance-hmac": zerocopy_key("binance-hmac", policy={"symbols": ["BTCUSDT"], "max_quantity": "0.01", "rate": RATE}),
        "bybit-hmac": zerocopy_key("bybit-hmac", policy={"symbols": ["BTCUSDT"], "max_quantity": "0.01", "rate": RATE}),
        "okx-hmac": zerocopy_key("okx-hmac", policy={"symbols": ["BTC-USDT"], "max_quantity": "0.01", "rate": RATE}),
        "kraken": zerocopy_key("kraken", policy={"symbols": ["XBTUSD"], "max_quantity": "0.01", "rate": RATE}),
        "coinbase-jwt": zerocopy_key("coinbase-jwt", policy={"rate": RATE}),
    }


def _frame(type_code: int, request_id: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), VERSION, type_code, request_id) + body


def _read_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _read_frame(sock: socket.socket) -> tuple[int, int, bytes]:
    length, _, type_code, request_id = HEADER.unpack(_read_exact(sock, HEADER.size))
    return type_code, request_id, _read_exact(sock, length)


@contextlib.contextmanager
def raw_connection(address: str) -> Iterator[socket.socket]:
    """A bare socket to an enclave, as the host opens one (no Signer, no checks of its own)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(address.removeprefix("unix://"))
    try:
        yield sock
    finally:
        sock.close()


def raw_sign_http(address: str, key: str, method: str, path: bytes, params_block: bytes, body: bytes = b"") -> Any:
    """One SIGN_HTTP frame built by hand (the Signer would refuse to send these), and the enclave's answer."""
    head = HTTP_REQUEST.pack(len(key), len(method), len(path), len(params_block), len(body))
    frame = _frame(MessageType.SIGN_HTTP, 7, head + key.encode() + method.encode() + path + params_block + body)
    decoder = Connection(Role.CLIENT)
    with raw_connection(address) as sock:
        sock.sendall(frame)
        while True:
            event = decoder.next_event()
            if event is not NEED_DATA:
                return event
            data = sock.recv(65536)
            assert data, "the enclave closed the connection instead of answering"
            decoder.receive_data(data)


# == 1. bundle edits ===============================================================================
@pytest.fixture(scope="module")
def pinned_key(zerocopy_emulator) -> str:
    policy = attested_key_policy(zerocopy_emulator.account_id, image_sha384=zerocopy_emulator.pcrs[0])
    return zerocopy_emulator.kms.create_key(Policy=json.dumps(policy), Description="the operator's key, pinned to PCR0")["KeyMetadata"]["Arn"]


@pytest.fixture(scope="module")
def other_pinned_key(zerocopy_emulator) -> str:
    policy = attested_key_policy(zerocopy_emulator.account_id, image_sha384=zerocopy_emulator.pcrs[0])
    return zerocopy_emulator.kms.create_key(Policy=json.dumps(policy), Description="another key of the operator's")["KeyMetadata"]["Arn"]


@pytest.fixture(scope="module")
def hosts_own_key(zerocopy_emulator) -> str:
    """A KMS key with the account's default policy: the host role's kms:Decrypt reaches it."""
    return zerocopy_emulator.kms.create_key(Description="the host's own key, permissive")["KeyMetadata"]["Arn"]


VICTIM_SECRET = b"victim-binance-secret-" + bytes(range(48, 58)) * 4
VICTIM_POLICY = {"symbols": ["BTCUSDT"], "max_quantity": "0.01"}


@pytest.fixture(scope="module")
def bundles(zerocopy_emulator, pinned_key) -> dict[str, bytes]:
    """Bundle files as the operator's `zerocopy seal` writes them to the host's disk: the victim
    (a tightly limited Binance key), its twin under another name (the control), and another key
    under the same KMS key with raw signing allowed (for swaps)."""
    kms = zerocopy_emulator.kms
    victim = seal(kms, key_id=pinned_key, name="held-victim", scheme="binance-hmac", secret=VICTIM_SECRET, api_key="victim-api-key", policy=VICTIM_POLICY)
    twin = seal(kms, key_id=pinned_key, name="held-victim-control", scheme="binance-hmac", secret=VICTIM_SECRET, api_key="victim-api-key", policy=VICTIM_POLICY)
    loose = seal(kms, key_id=pinned_key, name="held-loose", scheme="hmac-sha256", secret=b"another-secret-0123456789", api_key="", policy={"raw_signing": True})
    return {"victim": victim.to_json(), "control": twin.to_json(), "loose": loose.to_json()}


def _flip(field: str) -> Callable[[dict, dict], None]:
    def edit(doc: dict, _other: dict) -> None:
        raw = bytearray(base64.b64decode(doc[field]))
        raw[len(raw) // 2] ^= 0x01
        doc[field] = base64.b64encode(bytes(raw)).decode()

    return edit


def _set(**fields: Any) -> Callable[[dict, dict], None]:
    def edit(doc: dict, _other: dict) -> None:
        doc.update(fields)

    return edit


def _loosen_and_rewrite_context(doc: dict, _other: dict) -> None:
    # The file's own "encryption_context" is for people reading it: nothing reads it back.
    doc["policy"] = {"allow": ["POST /api/v3/order", "POST /sapi/v1/capital/withdraw/apply"], "raw_signing": True}
    doc["encryption_context"]["zerocopy:policy-sha256"] = policy_digest(doc["policy"])


def _take_from_other(*fields: str) -> Callable[[dict, dict], None]:
    def edit(doc: dict, other: dict) -> None:
        for field in fields:
            doc[field] = other[field]
        if "name" in fields:  # the labels, and the (unread) context that goes with them
            doc["encryption_context"] = other["encryption_context"]

    return edit


DECRYPT_REFUSED = "KMS refused Decrypt: InvalidCiphertextException"
TAMPERED = "the sealed secret does not match the bundle's fields"
INCORRECT_KEY = "KMS refused Decrypt: IncorrectKeyException"

BUNDLE_EDITS = [
    # older tests: tests/test_end_to_end.py::test_editing_a_sealed_field_makes_kms_refuse_the_data_key,
    # ::test_a_bundle_naming_another_kms_key_is_incorrect_key, ::test_a_tampered_ciphertext_is_refused
    pytest.param(_set(policy={"allow": ["POST /api/v3/order", "POST /sapi/v1/capital/withdraw/apply"], "raw_signing": True}), DECRYPT_REFUSED, id="policy-loosened"),
    pytest.param(_loosen_and_rewrite_context, DECRYPT_REFUSED, id="policy-loosened-and-context-rewritten"),
    pytest.param(_set(policy=None), DECRYPT_REFUSED, id="policy-stripped"),
    pytest.param(_set(scheme="binance-ws-hmac"), DECRYPT_REFUSED, id="scheme-relabelled"),
    pytest.param(_set(scheme="hmac-sha256", policy=None), DECRYPT_REFUSED, id="scheme-relabelled-to-raw-hmac"),
    pytest.param(_set(api_key="the-hosts-own-api-key"), DECRYPT_REFUSED, id="api-key-swapped"),
    pytest.param(lambda doc, _other: doc.update(name=doc["name"] + "-renamed"), DECRYPT_REFUSED, id="renamed"),
    pytest.param("other_pinned_key", INCORRECT_KEY, id="kms-key-another-pinned-key"),
    pytest.param("hosts_own_key", INCORRECT_KEY, id="kms-key-the-hosts-own"),
    pytest.param(_flip("ciphertext"), TAMPERED, id="ciphertext-bit-flipped"),
    pytest.param(_flip("nonce"), TAMPERED, id="nonce-bit-flipped"),
    pytest.param(_flip("encrypted_data_key"), DECRYPT_REFUSED, id="data-key-bit-flipped"),
    # bundles swapped between keys: one key's labels with another's sealed secret, or mixed halves
    pytest.param(_take_from_other("encrypted_data_key", "nonce", "ciphertext"), DECRYPT_REFUSED, id="swapped-victim-labels-other-secret"),
    pytest.param(_take_from_other("name", "scheme", "api_key", "policy"), DECRYPT_REFUSED, id="swapped-other-labels-victim-secret"),
    pytest.param(_take_from_other("nonce", "ciphertext"), TAMPERED, id="swapped-ciphertext-only"),
]


@pytest.mark.parametrize(("edit", "expected"), BUNDLE_EDITS)
def test_an_edited_bundle_file_is_refused_at_provisioning(edit, expected, request, zerocopy_emulator, host, pinned_key, bundles, tmp_path):
    # A victim of its own per edit (same secret, scheme and policy), so one edit that got through
    # does not leave a loaded key behind for the others.
    name = f"held-victim-{request.node.callspec.id}"
    victim = seal(zerocopy_emulator.kms, key_id=pinned_key, name=name, scheme="binance-hmac", secret=VICTIM_SECRET, api_key="victim-api-key", policy=VICTIM_POLICY)
    victim_file, other_file = tmp_path / f"{name}.json", tmp_path / "held-loose.json"
    victim_file.write_bytes(victim.to_json())
    other_file.write_bytes(bundles["loose"])
    doc, other = json.loads(victim_file.read_bytes()), json.loads(other_file.read_bytes())
    if isinstance(edit, str):  # point kms_key_id elsewhere
        doc["kms_key_id"] = request.getfixturevalue(edit)
    else:
        edit(doc, other)
    victim_file.write_text(json.dumps(doc, indent=2))
    name = doc["name"]

    (result,) = host.provision([victim_file.read_bytes()], credentials=zerocopy_emulator.credentials)
    assert not result.loaded, f"the enclave loaded the edited bundle as {name!r}"
    assert expected in (result.error or ""), result.error
    assert name not in {info.name for info in host.keys()}
    with pytest.raises(UnknownKey):
        host.sign_request(name, "POST", "/api/v3/order", params=BINANCE_ORDER)


def test_the_unedited_twin_of_the_victims_bundle_loads(zerocopy_emulator, host, bundles):
    """The control: the same fields, the same KMS key and the host's credentials load; only the edits are refused."""
    (result,) = host.provision([bundles["control"]], credentials=zerocopy_emulator.credentials)
    assert result.loaded, result.error
    with pytest.raises(PolicyRefused) as refusal:  # and the key signs under its sealed policy
        host.sign_request("held-victim-control", "POST", "/api/v3/order", params=[*BINANCE_ORDER[:4], ("quantity", "5"), ("price", "30000")])
    assert refusal.value.rule == "max_quantity"


def _host_kms(emulator) -> Any:
    """boto3 with the host role's session credentials, against the emulated KMS endpoint and its CA."""
    credentials = emulator.credentials
    return boto3.session.Session(
        aws_access_key_id=credentials["access_key_id"],
        aws_secret_access_key=credentials["secret_access_key"],
        aws_session_token=credentials.get("session_token"),
        region_name=emulator.region,
    ).client("kms", endpoint_url=emulator.kms_endpoint_url, verify=str(emulator.tls_ca_path))


def test_the_hosts_own_credentials_get_nothing_from_kms_for_a_bundle(zerocopy_emulator, host, bundles, hosts_own_key):
    # older: tests/test_end_to_end.py::test_the_hosts_own_credentials_cannot_decrypt_a_bundle_but_moto_alone_would
    # (there with the operator's credentials), tests/test_kms_fidelity.py::test_the_host_role_can_provision_but_not_decrypt
    bundle = SealedBundle.from_json(bundles["victim"])
    context = bundle.encryption_context()
    genuine_document = host.attest(os.urandom(32))  # a genuine, fresh document of the pinned image
    kms = _host_kms(zerocopy_emulator)
    try:
        attempts: dict[str, Callable[[], dict]] = {
            "Decrypt": lambda: kms.decrypt(CiphertextBlob=bundle.encrypted_data_key, EncryptionContext=context),
            "Decrypt naming the key": lambda: kms.decrypt(CiphertextBlob=bundle.encrypted_data_key, EncryptionContext=context, KeyId=bundle.kms_key_id),
            "ReEncrypt to the host's key": lambda: kms.re_encrypt(CiphertextBlob=bundle.encrypted_data_key, SourceEncryptionContext=context, DestinationKeyId=hosts_own_key),
            "CreateGrant to the host role": lambda: kms.create_grant(KeyId=bundle.kms_key_id, GranteePrincipal=HOST_ROLE_ARN, Operations=["Decrypt"]),
        }
        for what, call in attempts.items():
            with pytest.raises(ClientError) as denied:
                answer = call()
                pytest.fail(f"{what} answered: {sorted(answer)}")
            assert denied.value.response["Error"]["Code"] == "AccessDeniedException", (what, denied.value.response["Error"])
        # The enclave's own genuine document as Recipient: its public key is the enclave's identity
        # key, not a key the host holds (and not an RSA key, so KMS refuses it outright).
        with pytest.raises(ClientError) as refused_recipient:
            answer = kms.decrypt(
                CiphertextBlob=bundle.encrypted_data_key, EncryptionContext=context,
                Recipient={"AttestationDocument": genuine_document, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"},
            )
            pytest.fail(f"Decrypt with the enclave's document answered: {sorted(answer)}")
        assert refused_recipient.value.response["Error"]["Code"] == "ValidationException", refused_recipient.value.response["Error"]
        assert "RSA public key" in refused_recipient.value.response["Error"]["Message"]
        # The control: the same credentials decrypt a bundle under a key whose policy lets them.
        permissive = seal(zerocopy_emulator.kms, key_id=hosts_own_key, name="held-under-hosts-key", scheme="hmac-sha256", secret=b"x" * 32)
        assert len(kms.decrypt(CiphertextBlob=permissive.encrypted_data_key, EncryptionContext=permissive.encryption_context())["Plaintext"]) == 32
    finally:
        kms.close()


# == 2. path disguises =============================================================================
WITHDRAWALS = [
    # older: tests/test_signing_properties.py::test_generated_fund_moving_requests_are_always_refused (policy level)
    ("binance-hmac", "POST", "/api/v3/order", {"coin": "BTC", "address": "bc1qattacker", "amount": "1"}, None, "funds", "withdraw"),
    ("binance-hmac", "POST", "/api/v3/order/test", {"coin": "BTC", "address": "bc1qattacker", "amount": "1"}, None, "funds", "withdraw"),
    ("binance-hmac", "POST", "/sapi/v1/margin/order", {"coin": "BTC", "address": "bc1qattacker", "amount": "1"}, None, "funds", "withdraw"),
    ("binance-hmac", "POST", "/api/v3/order", {"type": "MAIN_UMFUTURE", "asset": "USDT", "amount": "1000"}, None, "funds", "transfer"),
    ("binance-hmac", "POST", "/api/v3/order", {}, None, "security", "FastWithdrawSwitch"),  # a bare timestamp
    ("bybit-hmac", "POST", "/v5/order/create", None, {"coin": "BTC", "address": "bc1qattacker", "amount": "1", "timestamp": "1"}, "funds", "withdraw"),
    ("bybit-hmac", "POST", "/v5/order/create", None, {"transferId": "t1", "coin": "USDT", "amount": "1000", "fromAccountType": "UNIFIED", "toAccountType": "FUND"}, "funds", "transfer"),
    ("okx-hmac", "POST", "/api/v5/trade/order", None, {"ccy": "BTC", "amt": "1", "dest": "4", "toAddr": "bc1qattacker"}, "unknown_parameter", "does not take"),
    ("kraken", "POST", "/0/private/AddOrder", {"asset": "XBT", "key": "attacker", "amount": "1"}, None, "unknown_parameter", "AddOrder"),
]


@pytest.mark.parametrize(("scheme", "method", "path", "params", "body", "rule", "words"), WITHDRAWALS, ids=[f"{w[0]}:{w[2]}:{w[6]}" for w in WITHDRAWALS])
def test_a_withdrawals_parameters_sent_to_an_allowed_order_path_are_refused(scheme, method, path, params, body, rule, words, keys, host):
    found = refused(host, keys[scheme], method, path, params=params, body=compact(body) if body is not None else None)
    assert found.rule == rule and words in str(found), found


DISGUISES = ["case", "trailing-slash", "dot-dot", "percent-encoded", "query-in-path", "double-slash"]


def disguise(path: str, how: str, target: str) -> str:
    """``path`` written another way an HTTP server might still route (or route to ``target``)."""
    head, _, last = path.rpartition("/")
    return {
        "case": path.upper(),
        "trailing-slash": path + "/",
        "dot-dot": path + "/.." * path.count("/") + target if target else f"{head}/x/../{last}",
        "percent-encoded": f"{head}/%{ord(last[0]):02X}{last[1:]}",
        "query-in-path": path + "?quantity=100",
        "double-slash": f"{head}//{last}",
    }[how]


SIGNED_PATH = [
    # (scheme, body or params, a fund-moving path to traverse to)
    ("okx-hmac", compact(OKX_ORDER), "/api/v5/asset/withdrawal"),
    ("kraken", KRAKEN_ORDER, "/0/private/Withdraw"),
    ("coinbase-jwt", COINBASE_ORDER, "/api/v3/brokerage/portfolios/move_funds"),
]


@pytest.mark.parametrize("how", DISGUISES)
@pytest.mark.parametrize(("scheme", "fields", "target"), SIGNED_PATH, ids=[s[0] for s in SIGNED_PATH])
def test_an_order_under_a_disguised_path_is_refused_where_the_signature_covers_the_path(scheme, fields, target, how, keys, host):
    """OKX, Kraken and Coinbase sign the path: only the exact catalogued path is judged, anything
    an HTTP server might normalise differently is an endpoint the engine does not know."""
    # older, at the policy level: tests/test_policy.py::test_okx_endpoints_are_decided_by_method_and_path,
    # ::test_coinbase_templated_paths_match_one_plain_segment
    path = disguise(ORDER_PATHS[scheme], how, target)
    params, body = (fields, None) if isinstance(fields, list) else (None, fields)
    found = refused(host, keys[scheme], "POST", path, params=params, body=body)
    assert found.rule == "endpoint" and "is not an endpoint the policy engine knows" in str(found), found
    # the same order on the exact path signs: the path, not the order, was refused
    assert host.sign_request(keys[scheme].name, "POST", ORDER_PATHS[scheme], params=params, body=body)


@pytest.mark.parametrize("how", [*DISGUISES[:4], DISGUISES[5], "withdraw-path"])
def test_a_binance_order_under_a_disguised_path_signs_exactly_the_bytes_of_the_order(how, keys, host):
    """Binance signs only the parameters, so the engine judges the parameter set and ignores the
    path (SECURITY.md): a disguised path — even the withdrawal path — changes nothing in what is
    signed, which is byte for byte the allowed order's signature; the limits still apply."""
    key = keys["binance-hmac"]
    path = "/sapi/v1/capital/withdraw/apply" if how == "withdraw-path" else disguise("/api/v3/order", how, "/sapi/v1/capital/withdraw/apply")
    params = [*BINANCE_ORDER, ("timestamp", str(now_ms()))]
    signed = host.sign_request(key.name, "POST", path, params=params)
    expected = reference.binance_rest("binance-hmac", key.secret, key.api_key, params, b"", 0)
    assert (signed.query, signed.body) == (expected.query, ""), "a disguised path changed what was signed"
    over_cap = [(name, "5" if name == "quantity" else value) for name, value in BINANCE_ORDER]
    assert refused(host, key, "POST", path, params=over_cap).rule == "max_quantity"


def test_a_path_with_a_query_or_fragment_is_refused_by_the_scheme_where_the_path_is_not_judged(keys, host):
    """Where the policy does not judge the path (Binance, Bybit), the scheme still takes only a
    plain absolute path: nothing rides along in it to the exchange."""
    for path in ("/api/v3/order?quantity=100", "/api/v3/order#x", "api/v3/order", "/api/v3/order\x00/sapi/v1/capital/withdraw/apply"):
        with pytest.raises(UnsupportedOperation, match="without '\\?' or '#'"):
            host.sign_request(keys["binance-hmac"].name, "POST", path, params=BINANCE_ORDER)
    for path in ("/v5/order/create?qty=100", "/v5/order/create#x"):
        with pytest.raises(UnsupportedOperation, match="without '\\?' or '#'"):
            host.sign_request(keys["bybit-hmac"].name, "POST", path, body=compact(BYBIT_ORDER))


@pytest.mark.parametrize("how", [*DISGUISES[:4], DISGUISES[5]])
def test_a_bybit_order_under_a_disguised_path_signs_exactly_the_bytes_of_the_order(how, keys, host):
    key = keys["bybit-hmac"]
    body = compact(BYBIT_ORDER)
    signed = host.sign_request(key.name, "POST", disguise("/v5/order/create", how, "/v5/asset/withdraw/create"), body=body)
    headers = signed.headers
    expected = reference.bybit("bybit-hmac", key.secret, key.api_key, "POST", (), body.encode(), int(headers["X-BAPI-TIMESTAMP"]))
    assert signed.body == body and tuple(headers.items()) == expected.headers
    over_cap = compact({**BYBIT_ORDER, "qty": "5"})
    assert refused(host, key, "POST", disguise("/v5/order/create", how, ""), body=over_cap).rule == "max_quantity"


# == 3. parameter smuggling ========================================================================
def _with(**changes: str | None) -> list[tuple[str, str]]:
    pairs = [(name, changes.get(name, value)) for name, value in BINANCE_ORDER if changes.get(name, value) is not None]
    return pairs + [(name, value) for name, value in changes.items() if name not in dict(BINANCE_ORDER) and value is not None]


SMUGGLED = [
    # older, at the policy level: tests/test_policy.py::test_unknown_and_duplicate_parameters,
    # ::test_non_canonical_values_are_refused, ::test_non_canonical_names_are_refused
    pytest.param(BINANCE_ORDER + [("quantity", "100")], "duplicate_parameter", id="duplicate-quantity"),
    pytest.param(BINANCE_ORDER + [("timestamp", "1"), ("timestamp", "2")], "duplicate_parameter", id="duplicate-timestamp"),
    pytest.param(BINANCE_ORDER + [("Quantity", "100")], "unknown_parameter", id="same-name-other-case"),
    pytest.param(BINANCE_ORDER + [("sideEffectTypo", "MARGIN_BUY")], "unknown_parameter", id="unknown"),
    pytest.param(BINANCE_ORDER + [("signature", "ab" * 32)], "unknown_parameter", id="signature-supplied"),
    pytest.param(_with(symbol="BTCUSDT&quantity=100"), "non_canonical", id="ampersand-in-value"),
    pytest.param(_with(quantity="0.01&quantity=100"), "non_canonical", id="ampersand-in-decimal"),
    pytest.param(_with(symbol="BTCUSDT=="), "non_canonical", id="equals-in-value"),
    pytest.param([("symbol=BTCUSDT&quantity", "100"), *BINANCE_ORDER[1:]], "non_canonical", id="ampersand-in-name"),
    pytest.param(_with(symbol="BTCUSDT\x01quantity"), "non_canonical", id="separator-in-value"),
    pytest.param(_with(symbol="ＢＴＣＵＳＤＴ"), "non_canonical", id="fullwidth-unicode-value"),
    pytest.param([("ѕymbol", "BTCUSDT"), *BINANCE_ORDER[1:]], "non_canonical", id="cyrillic-name"),
    pytest.param(_with(quantity="０.０１"), "non_canonical", id="unicode-digits"),
    pytest.param(_with(symbol="BTC%55SDT"), "non_canonical", id="percent-encoded-value"),
    pytest.param(_with(symbol="BTC USDT"), "non_canonical", id="space-in-value"),
    pytest.param(BINANCE_ORDER + [("", "1")], "non_canonical", id="empty-name"),
    pytest.param(_with(timeInForce=""), "non_canonical", id="empty-enumerated-value"),
    pytest.param(_with(quantity=""), "non_canonical", id="empty-quantity"),
    pytest.param(_with(symbol=""), "symbol", id="empty-symbol"),
    pytest.param(BINANCE_ORDER + [("timestamp", "")], "non_canonical", id="empty-timestamp"),
    pytest.param(BINANCE_ORDER + [("recvWindow", "")], "recv_window", id="empty-recv-window"),
]


@pytest.mark.parametrize(("params", "rule"), SMUGGLED)
def test_smuggled_binance_parameters_are_refused(params, rule, keys, host):
    found = refused(host, keys["binance-hmac"], "POST", "/api/v3/order", params=params)
    assert found.rule == rule, found


BOTH_PLACES = [
    pytest.param("binance-hmac", "/api/v3/order", BINANCE_ORDER[:3], "timeInForce=GTC&quantity=0.01&price=30000", id="binance-query-and-form-body"),
    pytest.param("binance-hmac", "/api/v3/order", None, "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=100&price=30000", id="binance-form-body"),
    pytest.param("bybit-hmac", "/v5/order/create", [("qty", "100")], compact(BYBIT_ORDER), id="bybit-query-and-json-body"),
    pytest.param("okx-hmac", "/api/v5/trade/order", [("sz", "100")], compact(OKX_ORDER), id="okx-query-and-json-body"),
    pytest.param("kraken", "/0/private/AddOrder", KRAKEN_ORDER, "volume=100", id="kraken-params-and-body"),
]


@pytest.mark.parametrize(("scheme", "path", "params", "body"), BOTH_PLACES)
def test_parameters_in_both_the_query_and_the_body_are_refused_as_non_canonical(scheme, path, params, body, keys, host):
    found = refused(host, keys[scheme], "POST", path, params=params, body=body)
    assert found.rule == "non_canonical", found


def test_a_nul_in_a_parameter_only_ever_splits_it_into_parameters_the_policy_sees(zerocopy_emulator, keys):
    """Raw SIGN_HTTP frames, which the Signer refuses to build: NUL separates names and values on
    the wire, so a "value" with NULs in it is more parameters — judged like any other."""
    key = keys["binance-hmac"].name
    address = zerocopy_emulator.address

    def block(pairs: list[tuple[str, str]]) -> bytes:
        return "\0".join(item for pair in pairs for item in pair).encode()

    # quantity = "0.01\0quantity\0100": the enclave sees quantity twice
    answer = raw_sign_http(address, key, "POST", b"/api/v3/order", block(_with(quantity="0.01\0quantity\x00100")))
    assert isinstance(answer, ErrorResponse) and (answer.code, answer.rule) == (ErrorCode.POLICY_REFUSED, "duplicate_parameter"), answer
    # side = "BUY\0type\0MARKET" (issue 12; the Signer refuses it now): the enclave sees type twice
    answer = raw_sign_http(address, key, "POST", b"/api/v3/order", block(_with(side="BUY\0type\0MARKET")))
    assert isinstance(answer, ErrorResponse) and (answer.code, answer.rule) == (ErrorCode.POLICY_REFUSED, "duplicate_parameter"), answer
    # quantity = "0.01\0100": the pairs no longer pair up
    answer = raw_sign_http(address, key, "POST", b"/api/v3/order", block(_with(quantity="0.01\x00100")))
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.BAD_REQUEST and "pairs" in answer.message, answer
    # a value that is not UTF-8
    answer = raw_sign_http(address, key, "POST", b"/api/v3/order", block(BINANCE_ORDER[:-1]) + b"\0price\x0030000\xff")
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.BAD_REQUEST and "UTF-8" in answer.message, answer
    # a NUL in the path of a key whose signature covers the path
    answer = raw_sign_http(address, keys["okx-hmac"].name, "POST", b"/api/v5/trade/order\x00/../../asset/withdrawal", b"", compact(OKX_ORDER).encode())
    assert isinstance(answer, ErrorResponse) and (answer.code, answer.rule) == (ErrorCode.POLICY_REFUSED, "endpoint"), answer
    # the control: the honest order, framed by hand the same way, signs
    answer = raw_sign_http(address, key, "POST", b"/api/v3/order", block(BINANCE_ORDER))
    assert isinstance(answer, HttpSignature), answer


def test_an_empty_free_form_value_is_signed_exactly_as_judged(keys, host):
    """Not refused (the value has no meaning to any rule), but signed as the policy saw it: once,
    in the enclave's own encoding."""
    key = keys["binance-hmac"]
    params = [*BINANCE_ORDER, ("newClientOrderId", ""), ("timestamp", str(now_ms()))]
    signed = host.sign_request(key.name, "POST", "/api/v3/order", params=params)
    assert signed.query == reference.binance_rest("binance-hmac", key.secret, key.api_key, params, b"", 0).query
    assert signed.query.count("newClientOrderId=") == 1


# == 4. JSON tricks (Bybit and OKX bodies) =========================================================
JSON_EXCHANGES = {
    "bybit-hmac": (BYBIT_ORDER, "qty", "price", "Buy"),
    "okx-hmac": (OKX_ORDER, "sz", "px", "buy"),
}


def _trick(order: dict, size: str, price: str, side: str, trick: str) -> bytes:
    """The order's JSON body written with ``trick``."""
    text = compact(order)
    quoted_size = f'"{size}":"{order[size]}"'
    free = "clOrdId" if size == "sz" else "orderLinkId"  # a free-form text field of the order

    def extra(field: str) -> str:
        return text[:-1] + "," + field + "}"

    if trick == "not-utf8":
        return text.replace(f'"{side}"', f'"{side}\x00"').encode().replace(b"\x00", b"\xe9")
    return {
        "duplicate-key": extra(f'"{size}":"100"'),
        "duplicate-key-escaped": extra(f'"{size[0]}\\u{ord(size[1]):04x}{size[2:]}":"100"'),
        "float": text.replace(quoted_size, f'"{size}":0.01'),
        "exponent": text.replace(quoted_size, f'"{size}":1e-2'),
        "nan": text.replace(quoted_size, f'"{size}":NaN'),
        "infinity": text.replace(quoted_size, f'"{size}":Infinity'),
        "huge-number": text.replace(quoted_size, f'"{size}":' + "9" * 40),
        "enormous-number": text.replace(quoted_size, f'"{size}":' + "9" * 5000),
        "negative": text.replace(quoted_size, f'"{size}":-1'),
        "nested-object": extra(f'"{free}":{{"a":"1"}}'),
        "nested-array": extra(f'"{free}":["a"]'),
        "null": extra(f'"{free}":null'),
        "nul-in-string": extra(f'"{free}":"a\\u0000b"'),
        "lone-surrogate": extra(f'"{free}":"\\ud800"'),
        "bom": "\ufeff" + text,
        "trailing-object": text + f'{{"{size}":"100"}}',
        "trailing-nul": text + "\x00",
        "top-level-array": f"[{text}]",
        "deep-nesting": '{"a":' * 5000 + "1" + "}" * 5000,
        "comment": text[:-1] + "/*x*/}",
        "single-quotes": text.replace('"', "'"),
        # canonicalised, not refused:
        "spacing": json.dumps(order, indent=2),
        "trailing-whitespace": text + " \n",
        "escaped-value": text.replace(f'"{side}"', f'"\\u{ord(side[0]):04x}{side[1:]}"'),
        "number-price": text.replace(f'"{price}":"{order[price]}"', f'"{price}":{order[price]}'),
    }[trick].encode()


JSON_REFUSED = {
    "duplicate-key": "duplicate_parameter", "duplicate-key-escaped": "duplicate_parameter",
    "float": "non_canonical", "exponent": "non_canonical", "nan": "non_canonical", "infinity": "non_canonical",
    "huge-number": "non_canonical", "enormous-number": "non_canonical", "negative": "non_canonical",
    "nested-object": "non_canonical", "nested-array": "non_canonical", "null": "non_canonical",
    "nul-in-string": "non_canonical", "lone-surrogate": "non_canonical", "bom": "non_canonical",
    "trailing-object": "non_canonical", "trailing-nul": "non_canonical", "top-level-array": "non_canonical",
    "deep-nesting": "non_canonical", "comment": "non_canonical", "single-quotes": "non_canonical", "not-utf8": "non_canonical",
}
JSON_CANONICALISED = ["spacing", "trailing-whitespace", "escaped-value", "number-price"]


# OKX reads a null field as absent (issue 10): judged and signed without it — see the test below.
JSON_REFUSED_CASES = [(scheme, trick) for scheme in sorted(JSON_EXCHANGES) for trick in sorted(JSON_REFUSED) if (scheme, trick) != ("okx-hmac", "null")]


@pytest.mark.parametrize(("scheme", "trick"), JSON_REFUSED_CASES)
def test_a_json_trick_in_an_order_body_is_refused(scheme, trick, keys, host):
    # older, at the policy level: tests/test_policy_properties.py::test_garbage_json_bodies_raise_only_refusal,
    # tests/test_policy.py (duplicate JSON keys, floats); tests/attacks/test_attack_policy.py (isLeverage spellings)
    body = _trick(*JSON_EXCHANGES[scheme], trick)
    found = refused(host, keys[scheme], "POST", ORDER_PATHS[scheme], body=body)
    assert found.rule == JSON_REFUSED[trick], found


def _reference_headers(scheme: str, key, body: bytes, headers: dict[str, str]) -> tuple:
    if scheme == "bybit-hmac":
        return reference.bybit(scheme, key.secret, key.api_key, "POST", (), body, int(headers["X-BAPI-TIMESTAMP"])).headers
    stamp = dt.datetime.strptime(headers["OK-ACCESS-TIMESTAMP"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return reference.okx(key.secret, key.api_key, "POST", ORDER_PATHS[scheme], (), body, timestamp_ms(stamp)).headers


@pytest.mark.parametrize("trick", JSON_CANONICALISED)
@pytest.mark.parametrize("scheme", sorted(JSON_EXCHANGES))
def test_a_json_body_in_another_spelling_is_signed_only_in_its_canonical_form(scheme, trick, keys, host):
    """The enclave signs the body it re-serialised from what it judged, and returns that body to
    send: the host's spelling is never what is signed."""
    key = keys[scheme]
    sent = _trick(*JSON_EXCHANGES[scheme], trick)
    signed = host.sign_request(key.name, "POST", ORDER_PATHS[scheme], body=sent)
    canonical = json.dumps(json.loads(sent), separators=(",", ":"), ensure_ascii=False).encode()
    assert signed.body == canonical
    if trick != "number-price":
        assert canonical == compact(JSON_EXCHANGES[scheme][0]).encode()
    assert tuple(signed.headers.items()) == _reference_headers(scheme, key, canonical, signed.headers)


def test_an_okx_null_field_is_signed_as_absent(keys, host):
    """OKX reads ``null`` as absent: the enclave drops the field, so the body it signs (and returns
    to send) is the order without it, exactly what the policy judged."""
    key = keys["okx-hmac"]
    signed = host.sign_request(key.name, "POST", ORDER_PATHS["okx-hmac"], body=_trick(*JSON_EXCHANGES["okx-hmac"], "null"))
    canonical = compact(OKX_ORDER).encode()
    assert signed.body == canonical
    assert tuple(signed.headers.items()) == _reference_headers("okx-hmac", key, canonical, signed.headers)


# == 5. replay =====================================================================================
def _replays() -> list:
    in_2017 = "1499827319559"
    return [
        # older: tests/test_end_to_end.py::test_policy_refusals_are_typed_and_name_the_rule (the 2017 order),
        # tests/test_policy.py::test_freshness_of_the_client_timestamp, ::test_bybit_recv_window_rides_in_the_header_and_is_capped
        pytest.param("binance-hmac", lambda: BINANCE_ORDER + [("timestamp", in_2017)], "freshness", id="binance-2017-timestamp"),
        pytest.param("binance-hmac", lambda: BINANCE_ORDER + [("timestamp", str(now_ms() - 60_000))], "freshness", id="binance-a-minute-old"),
        pytest.param("binance-hmac", lambda: BINANCE_ORDER + [("timestamp", str(now_ms() + 60_000))], "freshness", id="binance-a-minute-ahead"),
        pytest.param("binance-hmac", lambda: BINANCE_ORDER + [("timestamp", "".join(chr(0xFF10 + int(d)) for d in str(now_ms())))], "non_canonical", id="binance-fullwidth-digits"),
        pytest.param("binance-hmac", lambda: BINANCE_ORDER + [("timestamp", "0" * 20)], "non_canonical", id="binance-overlong-timestamp"),
        pytest.param("binance-hmac", lambda: BINANCE_ORDER + [("recvWindow", "60000")], "recv_window", id="binance-recv-window-above-cap"),
        pytest.param("binance-hmac", lambda: BINANCE_ORDER + [("timestamp", str(now_ms() - 60_000)), ("recvWindow", "60000")], "freshness", id="binance-old-with-wide-window"),
        pytest.param("bybit-hmac", lambda: [("recv_window", "60000")], "recv_window", id="bybit-recv-window-above-cap"),
        pytest.param("kraken", lambda: [("nonce", "1"), *KRAKEN_ORDER], "freshness", id="kraken-nonce-1"),
        pytest.param("kraken", lambda: [("nonce", str(10**18)), *KRAKEN_ORDER], "freshness", id="kraken-nonce-far-ahead"),
        pytest.param("kraken", lambda: [("nonce", str(now_ms())), *KRAKEN_ORDER], "freshness", id="kraken-nonce-looking-fresh"),
    ]


@pytest.mark.parametrize(("scheme", "make_params", "rule"), _replays())
def test_a_request_made_to_be_replayed_later_is_refused(scheme, make_params, rule, keys, host):
    body = compact(BYBIT_ORDER) if scheme == "bybit-hmac" else None
    found = refused(host, keys[scheme], "POST", ORDER_PATHS[scheme], params=make_params(), body=body)
    assert found.rule == rule, found


def test_the_same_orders_with_the_enclaves_own_time_sign(keys, host):
    """The control for the replay refusals: a current timestamp, the capped window, no nonce."""
    key = keys["binance-hmac"]
    params = BINANCE_ORDER + [("recvWindow", "5000"), ("timestamp", str(now_ms()))]
    assert host.sign_request(key.name, "POST", "/api/v3/order", params=params).query == reference.binance_rest("binance-hmac", key.secret, key.api_key, params, b"", 0).query
    kraken = host.sign_request(keys["kraken"].name, "POST", "/0/private/AddOrder", params=KRAKEN_ORDER)
    nonce = int(kraken.body.split("&", 1)[0].removeprefix("nonce="))
    assert abs(nonce - now_ms()) < 10_000  # the enclave's clock, not the host's choice


# == 6. a debug-mode enclave =======================================================================
@pytest.fixture(scope="module")
def debug_enclave(zerocopy_emulator):
    """The host launches the same image in debug mode (its memory readable by the host)."""
    with zerocopy_emulator.launch(debug=True) as enclave:
        assert enclave.pcrs[0] == bytes(48) and enclave.pcrs[1] == bytes(48) and enclave.pcrs[2] == bytes(48)
        yield enclave


def test_a_debug_enclave_gets_nothing_from_kms_for_the_production_image(zerocopy_emulator, debug_enclave, bundles):
    # older: tests/test_cli.py::test_kms_policy_refuses_a_debug_measurement, tests/test_nsm.py (debug PCRs);
    # tests/test_end_to_end.py::test_an_enclave_with_modified_code_is_refused_by_kms (another image, same refusal)
    with Signer(debug_enclave.address) as debug:
        (result,) = debug.provision([bundles["victim"]], credentials=zerocopy_emulator.credentials)
        assert not result.loaded, "a debug-mode enclave (memory readable by the host) unsealed the production bundle"
        assert "KMS refused Decrypt: AccessDeniedException" in (result.error or ""), result.error
        assert "held-victim" not in {info.name for info in debug.keys()}
        # GENERATE into the measured seal key, to get a bundle of the operator's whose private key
        # the host reads from the debug enclave's memory: the seal key is pinned to production too.
        with pytest.raises(ProvisioningError, match="KMS refused GenerateDataKey: AccessDeniedException"):
            debug.generate("held-debug-generated", "ed25519", credentials=zerocopy_emulator.credentials)
        assert "held-debug-generated" not in {info.name for info in debug.keys()}


def test_an_attesting_signer_refuses_a_debug_enclave_unless_allow_debug(zerocopy_emulator, debug_enclave):
    # older: tests/test_attestation.py::test_debug_document_is_refused_by_default, ::test_debug_is_refused_before_pcrs_are_compared
    # (built documents); tests/attacks/test_attack_session.py::test_a_debug_emulators_signer_pins_the_zero_pcr0_it_attests
    root = [zerocopy_emulator.root_certificate]
    production = zerocopy_emulator.pcrs[0]
    for pins in ({0: production}, {0: bytes(48)}):
        with pytest.raises(AttestationError) as info:
            Signer(debug_enclave.address, expected_pcrs=pins, roots=root).close()
        assert type(info.value) is DebugModeRefused, info.value
    with pytest.raises(AttestationError) as info:  # a bot that allows debug still pins the production PCR0
        Signer(debug_enclave.address, expected_pcrs={0: production}, roots=root, allow_debug=True).close()
    assert type(info.value) is PCRMismatch and info.value.index == 0
    with Signer(debug_enclave.address) as plain:
        nonce = os.urandom(32)
        document = plain.attest(nonce)
    with pytest.raises(AttestationError) as info:
        verify(document, roots=root, nonce=nonce)
    assert type(info.value) is DebugModeRefused
    assert verify(document, roots=root, nonce=nonce, allow_debug=True).debug  # the control: genuine, and debug


# == 7. forged and replayed attestation ============================================================
class FakeEnclave:
    """The host's listener where the bot connects (on Nitro, a vsock listener of its own). It
    answers the bot's OPEN_SESSION with ``answer(fields)`` and records anything the bot sends after."""

    def __init__(self, answer: Callable[[dict], dict]) -> None:
        self.answer = answer
        self.after_handshake: list[int] = []
        self.handshakes = 0
        self._dir = tempfile.mkdtemp(prefix="zc-fake-")
        path = os.path.join(self._dir, "enclave.sock")
        self.address = "unix://" + path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(4)
        self._thread = threading.Thread(target=self._serve, name="fake-enclave")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with client, contextlib.suppress(OSError, EOFError):
                client.settimeout(10)
                while True:
                    type_code, request_id, body = _read_frame(client)
                    if type_code != MessageType.OPEN_SESSION:
                        self.after_handshake.append(type_code)
                        break
                    self.handshakes += 1
                    client.sendall(_frame(MessageType.SESSION, request_id, cbor2.dumps(self.answer(cbor2.loads(body)))))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(10)
        shutil.rmtree(self._dir, ignore_errors=True)


def bot_connects_through(emulator, answer: Callable[[dict], dict]) -> object:
    """The bot's attesting Signer (pinned PCR0, the emulator's root) at the fake's address: the
    Signer, or the error it raised. Nothing may reach the fake after the handshake."""
    fake = FakeEnclave(answer)
    try:
        try:
            outcome: object = Signer(fake.address, expected_pcrs={0: emulator.pcrs[0]}, roots=[emulator.root_certificate])
        except ZeroCopyError as exc:
            outcome = exc
        if isinstance(outcome, Signer):
            with contextlib.suppress(ZeroCopyError):
                outcome.sign("held-victim-control", b"the bot's order")
            outcome.close()
    finally:
        fake.close()
    assert fake.handshakes == 1
    assert fake.after_handshake == [], "the bot sent requests to the fake enclave"
    assert not isinstance(outcome, Signer), "the bot's attesting Signer accepted the fake enclave"
    return outcome


def control_exchange(address: str, message_type: int, fields: dict) -> dict:
    """One control request on a fresh raw connection to a real enclave: the answer's fields."""
    with raw_connection(address) as sock:
        sock.sendall(_frame(message_type, 1, cbor2.dumps(fields)))
        type_code, _, body = _read_frame(sock)
    assert type_code == message_type | 0x80, f"the enclave answered {type_code:#x}"
    return cbor2.loads(body)


def with_pcrs(document: bytes, pcrs: dict[int, bytes]) -> bytes:
    """The document with some PCRs rewritten and everything else — the signature too — kept."""
    outer = cbor2.loads(document)
    items = list(outer.value if isinstance(outer, cbor2.CBORTag) else outer)
    payload = cbor2.loads(items[2])
    payload["pcrs"] = {**payload["pcrs"], **pcrs}
    items[2] = cbor2.dumps(payload)
    return cbor2.dumps(items)


def test_an_old_genuine_session_document_replayed_to_the_bot_is_nonce_mismatch(zerocopy_emulator):
    # older: tests/test_attestation.py::test_nonce_mismatch (a built document);
    # tests/attacks/test_attack_session.py::test_a_fake_enclave_running_its_own_handshake_with_the_real_one_is_refused_before_anything_is_sent
    recorded = control_exchange(zerocopy_emulator.address, MessageType.OPEN_SESSION, session_crypto.ClientHandshake().fields())
    genuine = verify(recorded["document"], roots=[zerocopy_emulator.root_certificate], expected_pcrs={0: zerocopy_emulator.pcrs[0]})
    assert genuine.pcrs[0] == zerocopy_emulator.pcrs[0]  # genuine, the right image, just not this session's
    outcome = bot_connects_through(zerocopy_emulator, lambda fields: recorded)
    assert type(outcome) is NonceMismatch, outcome


def test_a_genuine_document_over_the_bots_own_nonce_does_not_bind_the_session(zerocopy_emulator):
    """The fake asks the real enclave to ATTEST the nonce the bot sent: a fresh genuine document
    carrying the bot's nonce, but not the binding of the bot's key exchange."""

    def answer(fields: dict) -> dict:
        attested = control_exchange(zerocopy_emulator.address, MessageType.ATTEST, {"nonce": fields["nonce"]})
        return {"public_key": session_crypto.accept(fields).public_key, "document": attested["document"]}

    outcome = bot_connects_through(zerocopy_emulator, answer)
    assert type(outcome) is NonceMismatch, outcome


def test_a_genuine_document_over_the_fakes_own_binding_is_refused_by_its_user_data(zerocopy_emulator):
    # older: tests/attacks/test_attack_session.py::test_a_relay_that_has_the_real_enclave_attest_its_own_binding_is_refused
    def answer(fields: dict) -> dict:
        mine = session_crypto.accept(fields)  # the fake's own keys: it would read the whole session
        attested = control_exchange(zerocopy_emulator.address, MessageType.ATTEST, {"nonce": mine.binding})
        return {"public_key": mine.public_key, "document": attested["document"]}

    outcome = bot_connects_through(zerocopy_emulator, answer)
    assert type(outcome) is SessionError and "user_data" in str(outcome), outcome


def test_a_document_from_another_root_is_certificate_chain_invalid(zerocopy_emulator):
    """Everything right — the production PCRs, the session's binding in nonce and user_data — but
    signed under a root of the host's own."""
    # older: tests/test_end_to_end.py::test_signer_refuses_an_enclave_not_rooted_in_aws, tests/test_attestation.py (built chains)
    now = dt.datetime.now(dt.timezone.utc)
    chain = make_chain(now, name="the host's own")

    def answer(fields: dict) -> dict:
        mine = session_crypto.accept(fields)
        document = chain.document(
            pcrs={index: zerocopy_emulator.pcrs.get(index, bytes(48)) for index in range(16)},
            timestamp_ms=timestamp_ms(now), nonce=mine.binding, public_key=os.urandom(32),
            user_data=cbor2.dumps({"keys": [], "sealed_by": [], session_crypto.USER_DATA_FIELD: mine.binding}),
        )
        return {"public_key": mine.public_key, "document": document}

    outcome = bot_connects_through(zerocopy_emulator, answer)
    assert type(outcome) is CertificateChainInvalid, outcome


def test_a_debug_enclaves_document_relayed_to_the_bot_is_refused_as_is_and_with_pcr0_edited(zerocopy_emulator, debug_enclave):
    """The fake relays the bot's handshake to a debug enclave of the same image (so the binding is
    right and the session would really be with an enclave the host can read) and hands back its
    genuine document — as it is (all-zero PCR0–2), or with the production PCR0–2 written in."""
    production = {index: zerocopy_emulator.pcrs[index] for index in (0, 1, 2)}

    def relayed(edit: bool) -> Callable[[dict], dict]:
        def answer(fields: dict) -> dict:
            genuine = control_exchange(debug_enclave.address, MessageType.OPEN_SESSION, fields)
            return {**genuine, "document": with_pcrs(genuine["document"], production) if edit else genuine["document"]}

        return answer

    outcome = bot_connects_through(zerocopy_emulator, relayed(edit=False))
    assert type(outcome) is DebugModeRefused, outcome
    outcome = bot_connects_through(zerocopy_emulator, relayed(edit=True))
    assert type(outcome) is SignatureInvalid, outcome


def test_a_production_document_with_pcr0_edited_breaks_its_signature(zerocopy_emulator, host):
    """The other direction: a genuine production document (fresh, over the verifier's nonce) with
    PCR0 rewritten — say, to pass it off as another image an operator pinned."""
    # older: tests/test_attestation.py (tampered payloads of built and recorded documents)
    nonce = os.urandom(32)
    document = host.attest(nonce)
    root = [zerocopy_emulator.root_certificate]
    assert verify(document, roots=root, nonce=nonce, expected_pcrs={0: zerocopy_emulator.pcrs[0]})  # the control
    other_image = bytes(range(48))
    with pytest.raises(AttestationError) as info:
        verify(with_pcrs(document, {0: other_image}), roots=root, nonce=nonce, expected_pcrs={0: other_image})
    assert type(info.value) is SignatureInvalid
