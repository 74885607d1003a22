"""Every parser that sees untrusted bytes, as a fuzz target: seeds, a generator, a call, its typed errors.

A target's ``open(stack)`` returns a :class:`Harness`; anything it starts (the emulator, moto) is
registered on the ``ExitStack`` and stopped when the run ends. An input that makes the call raise
anything but the target's typed errors — or, for the KMS front, answer 5xx — is a crash.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .mutate import json_bytes, mutate_bytes, mutate_json

__all__ = ["TARGETS", "Harness", "Target"]

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


@dataclass
class Harness:
    generate: Callable[[random.Random], bytes]
    run: Callable[[bytes], Any]
    crashed: Callable[[Any], str | None] = lambda result: None  # a result that is itself a crash


@dataclass
class Target:
    name: str
    what: str
    typed: tuple[type[BaseException], ...]
    open: Callable[[ExitStack], Harness] = field(repr=False)


def _bytes_harness(seeds: list[bytes], run: Callable[[bytes], Any]) -> Harness:
    return Harness(lambda rnd: mutate_bytes(rnd, seeds), run)


def _json_or_bytes(seeds: list[Any]) -> Callable[[random.Random], bytes]:
    encoded = [json_bytes(seed) for seed in seeds]

    def generate(rnd: random.Random) -> bytes:
        if rnd.random() < 0.5:
            return json_bytes(mutate_json(rnd, rnd.choice(seeds)))
        return mutate_bytes(rnd, encoded)

    return generate


# -- CBOR ---------------------------------------------------------------------------------------------


def _cbor_seeds() -> list[bytes]:
    from enclave.protocol import cbor

    values = [{"nonce": b"\x01" * 32}, {"keys": [{"name": "k", "scheme": "hmac-sha256"}]}, [1, -2, "x", None, True], {1: -35}]
    seeds = [cbor.dumps(value) for value in values]
    return seeds + [bytes.fromhex("bf61610161629f0203ffff"), bytes.fromhex("5f42010243030405ff")]


def _open_cbor(any_encoding: bool) -> Callable[[ExitStack], Harness]:
    def open_(stack: ExitStack) -> Harness:
        from enclave.protocol import cbor

        seeds = _cbor_seeds() + [_real_documents()[0][0]]
        return _bytes_harness(seeds, lambda data: cbor.loads(data, top_level_tags=frozenset({18}), any_encoding=any_encoding))

    return open_


# -- wire frames ----------------------------------------------------------------------------------------


def _open_frames(stack: ExitStack) -> Harness:
    from enclave.protocol import NEED_DATA, Connection, ControlRequest, HttpSignRequest, MessageType, Role, SignRequest

    client = Connection(Role.CLIENT)
    events = [
        SignRequest(1, "binance-main", b"symbol=BTCUSDT&side=BUY"),
        HttpSignRequest(2, "binance-main", "POST", "/api/v3/order", (("symbol", "BTCUSDT"), ("quantity", "1")), b""),
        ControlRequest(3, MessageType.ATTEST, {"nonce": b"\x00" * 32}),
        ControlRequest(4, MessageType.KEYS, {}),
    ]
    seeds = [b"".join(client.send(event) for event in events)] + [client.send(event) for event in events]

    def run(data: bytes) -> int:
        server = Connection(Role.SERVER)
        server.receive_data(data)
        count = 0
        while count < 1000 and server.next_event() is not NEED_DATA:
            count += 1
        return count

    return _bytes_harness(seeds, run)


def _open_sealed_frames(stack: ExitStack) -> Harness:
    """Frames on an attested session, as the enclave reads them. Whatever the bytes, the events that
    come out are a prefix of what the client sealed — a mutation never opens as something else."""
    from enclave.protocol import NEED_DATA, Connection, ControlRequest, MessageType, Role, SignRequest
    from enclave.protocol.session import Session

    to_enclave, to_client = bytes(range(32)), bytes(range(32, 64))  # what a handshake would derive
    plain = Connection(Role.CLIENT)
    events = [SignRequest(1, "k", b"payload"), ControlRequest(2, MessageType.KEYS, {}), SignRequest(3, "k", b"more")]
    sealer = Session(to_enclave, to_client)
    seeds = [b"".join(sealer.seal_frame(plain.send(event)) for event in events)]

    def run(data: bytes) -> list:
        server = _server_in_session(Session(to_client, to_enclave))  # a new connection's counters
        server.receive_data(data)
        opened = []
        while len(opened) < 1000 and (event := server.next_event()) is not NEED_DATA:
            opened.append(event)
        return opened

    def crashed(opened: Any) -> str | None:
        return None if opened == events[: len(opened)] else f"opened {len(opened)} event(s) that are not what was sealed"

    return Harness(lambda rnd: mutate_bytes(rnd, seeds), run, crashed)


def _server_in_session(session: Any) -> Any:
    """A server connection that has answered OPEN_SESSION, so everything it reads next is sealed."""
    from enclave.protocol import Connection, ControlRequest, MessageType, Role, SessionAccepted

    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(ControlRequest(99, MessageType.OPEN_SESSION, {"suite": "x", "nonce": bytes(32), "public_key": bytes(32)})))
    server.next_event()
    server.send(SessionAccepted(99, bytes(32), b"document", session))
    return server


# -- attestation documents ---------------------------------------------------------------------------


def _real_documents() -> list[tuple[bytes, dt.datetime]]:
    from zerocopy.attestation import document_time

    documents = []
    for name in ("nitro-2024-09-07", "nitro-2025-09-16-indefinite-map", "nitro-debug-2024-09-07"):
        raw = base64.b64decode((DATA / "attestation" / f"{name}.b64").read_bytes())
        documents.append((raw, document_time(raw)))
    return documents


def _open_attestation(stack: ExitStack) -> Harness:
    from zerocopy.attestation import verify

    documents = _real_documents()
    at = documents[1][1]
    return _bytes_harness([raw for raw, _ in documents], lambda data: verify(data, now=at, allow_debug=True))


# -- KMS CiphertextForRecipient (CMS, BER) -------------------------------------------------------------


def _open_cms(stack: ExitStack) -> Harness:
    from enclave.cms import parse_ciphertext_for_recipient

    vectors = json.loads((DATA / "kms" / "ciphertext-for-recipient.json").read_text())["vectors"]
    seeds = [bytes.fromhex(vector["ciphertext_for_recipient_ber"]) for vector in vectors]
    return _bytes_harness(seeds, parse_ciphertext_for_recipient)


# -- sealed bundles ------------------------------------------------------------------------------------


def _open_bundle(stack: ExitStack) -> Harness:
    from enclave.protocol.bundle import SealedBundle

    bundle = SealedBundle(
        name="binance-main", scheme="binance-hmac", api_key="vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
        policy={"allow": ["POST /api/v3/order"], "symbols": ["BTCUSDT"], "max_quantity": "1"},
        kms_key_id="arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        encrypted_data_key=bytes(184), nonce=bytes(12), ciphertext=bytes(80),
    )  # fmt: skip
    seed = json.loads(bundle.to_json())
    return Harness(_json_or_bytes([seed]), SealedBundle.from_json)


# -- signing policies and the requests they judge ----------------------------------------------------


def _policy_texts() -> list[str]:
    return [path.read_text() for path in sorted((DATA / "policies").glob("*.toml"))]


def _open_policy(stack: ExitStack) -> Harness:
    from zerocopy.policy import checked_policy, parse_policy_text

    texts = [text.encode() for text in _policy_texts()]
    schemes = ["binance-hmac", "bybit-hmac", "okx-hmac", "kraken", "coinbase-jwt", "hmac-sha256"]

    def run(data: bytes) -> Any:
        document = parse_policy_text(data.decode("utf-8", "replace"))
        return [checked_policy(document, scheme) for scheme in schemes]

    def generate(rnd: random.Random) -> bytes:
        if rnd.random() < 0.3:
            return json_bytes(mutate_json(rnd, {"allow": ["POST /api/v3/order"], "symbols": ["BTCUSDT"], "max_quantity": "1"}))
        return mutate_bytes(rnd, texts)

    return Harness(generate, run)


_REQUEST_SEEDS = [
    {"scheme": "binance-hmac", "method": "POST", "path": "/api/v3/order", "body": "",
     "params": [["symbol", "BTCUSDT"], ["side", "BUY"], ["type", "LIMIT"], ["timeInForce", "GTC"], ["quantity", "0.5"], ["price", "100"], ["timestamp", "1700000000000"]]},
    {"scheme": "bybit-hmac", "method": "POST", "path": "/v5/order/create", "params": [],
     "body": '{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.5","price":"100"}'},
    {"scheme": "okx-hmac", "method": "POST", "path": "/api/v5/trade/order", "params": [],
     "body": '{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"limit","sz":"0.5","px":"100"}'},
    {"scheme": "kraken", "method": "POST", "path": "/0/private/AddOrder", "body": "",
     "params": [["pair", "XBTUSD"], ["type", "buy"], ["ordertype", "limit"], ["price", "100"], ["volume", "0.5"]]},
    {"scheme": "binance-hmac", "method": "POST", "path": "/sapi/v1/capital/withdraw/apply", "body": "",
     "params": [["coin", "BTC"], ["address", "x"], ["amount", "1"], ["timestamp", "1700000000000"]]},
]  # fmt: skip


def _open_sign_request(stack: ExitStack) -> Harness:
    from enclave.protocol.policy import PolicyState
    from zerocopy.policy import checked_policy, parse_policy_text

    sealed = {"binance-hmac": "binance-spot", "bybit-hmac": "bybit-linear", "okx-hmac": "okx-spot"}
    states: dict[tuple[str, bool], PolicyState] = {}

    def state_for(scheme: str, defaults: bool) -> PolicyState:
        # The safe defaults, or the operator's policy from tests/data/policies where there is one.
        if (scheme, defaults) not in states:
            name = sealed.get(scheme)
            document = None if defaults or name is None else parse_policy_text((DATA / "policies" / f"{name}.toml").read_text())
            states[scheme, defaults] = PolicyState(checked_policy(document, scheme))
        return states[scheme, defaults]

    def run(data: bytes) -> Any:
        request = _request_from(data)
        if request is None:
            return None  # not a request the frame decoder would deliver: nothing to judge
        scheme, method, path, params, body = request
        state = state_for(scheme, defaults=len(data) % 2 == 0)
        return state.authorize_request(method, path, params, body, 1_700_000_000_000)

    def generate(rnd: random.Random) -> bytes:
        return json_bytes(mutate_json(rnd, rnd.choice(_REQUEST_SEEDS)))

    return Harness(generate, run)


def _request_from(data: bytes) -> tuple[str, str, str, tuple[tuple[str, str], ...], bytes] | None:
    """The harness's own JSON envelope, decoded leniently: its mistakes are not the engine's."""
    try:
        request = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(request, dict) or not isinstance(request.get("scheme"), str):
        return None
    if request["scheme"] not in {"binance-hmac", "bybit-hmac", "okx-hmac", "kraken"}:
        return None
    raw_params = request.get("params")
    pairs = raw_params if isinstance(raw_params, list) else []
    params = tuple((str(p[0]), str(p[1])) for p in pairs if isinstance(p, list) and len(p) == 2)
    body = str(request.get("body") or "").encode("utf-8", "surrogatepass")
    return request["scheme"], str(request.get("method")), str(request.get("path")), params, body


# -- EIF images ------------------------------------------------------------------------------------------


def _open_eif(stack: ExitStack) -> Harness:
    from zerocopy.eif import parse_eif, write_eif

    seeds = [
        write_eif(b"kernel" * 50, b"console=ttyS0", [b"ramdisk-1" * 40, b"ramdisk-2" * 40], metadata={"ImageName": "x"}),
        write_eif(b"k", b"", [b"r"]),
    ]
    return _bytes_harness(seeds, parse_eif)


# -- audit logs -----------------------------------------------------------------------------------------


def _open_audit(stack: ExitStack) -> Harness:
    from emulator import Emulator
    from zerocopy.audit import fetch_into, verify_log

    emulator = stack.enter_context(Emulator())
    lines = _fetched_log(stack, emulator, fetch_into)
    roots, pcrs = [emulator.root_certificate], {0: emulator.pcrs[0]}

    def run(data: bytes) -> Any:
        return verify_log(data.splitlines(), roots=roots, expected_pcrs=pcrs)

    def generate(rnd: random.Random) -> bytes:
        if rnd.random() < 0.5:
            mutated = list(lines)
            index = rnd.randrange(len(mutated))
            try:
                mutated[index] = json_bytes(mutate_json(rnd, json.loads(mutated[index])))
            except ValueError:
                pass
            return b"\n".join(mutated)
        return mutate_bytes(rnd, [b"\n".join(lines)])

    return Harness(generate, run)


def _fetched_log(stack: ExitStack, emulator: Any, fetch_into: Callable[..., Any]) -> list[bytes]:
    from pytest_zerocopy.keys import KeyMaker

    signer = stack.enter_context(emulator.signer())
    key_arn = emulator.kms.create_key(Description="fuzz")["KeyMetadata"]["Arn"]
    maker = KeyMaker(kms=emulator.kms, kms_key_id=key_arn, signer=signer, credentials=lambda: emulator.credentials, region=emulator.region)
    key = maker("hmac-sha256")
    for payload in (b"one", b"two", b"three"):
        signer.sign(key.name, payload)
    directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zc-fuzz-")))
    fetch_into(signer, directory / "audit.jsonl")
    signer.sign(key.name, b"four")
    fetch_into(signer, directory / "audit.jsonl")
    return (directory / "audit.jsonl").read_bytes().splitlines()


# -- the emulated KMS front ----------------------------------------------------------------------------


def _open_kms_front(stack: ExitStack) -> Harness:
    from emulator.kms.models import AttestingKms
    from emulator.kms.moto_process import MotoProcess
    from emulator.kms.responses import dispatch
    from emulator.pki import AttestationPki

    directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zc-fuzz-kms-")))
    moto = stack.enter_context(MotoProcess(directory / "moto.log"))
    credentials = ("fuzz-root", "fuzz-root-secret")
    pki = AttestationPki()
    model = AttestingKms(moto.endpoint_url, attestation_roots=[pki.root_pem], root_credentials=dict([credentials]))
    stack.callback(model.close)
    key_id = _moto_key(model)
    document = base64.b64encode(_recipient_document(pki)).decode()
    seeds = [
        ("Decrypt", {"CiphertextBlob": _moto_ciphertext(model, key_id), "Recipient": {"AttestationDocument": document, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}),
        ("GenerateRandom", {"NumberOfBytes": 32, "Recipient": {"AttestationDocument": document, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}),
        ("Encrypt", {"KeyId": key_id, "Plaintext": base64.b64encode(b"secret").decode()}),
        ("DescribeKey", {"KeyId": key_id}),
        ("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256", "EncryptionContext": {"a": "b"}}),
        ("Decrypt", {"CiphertextBlob": base64.b64encode(bytes(64)).decode(), "Recipient": {"AttestationDocument": "AAAA", "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}),
        ("CreateKey", {"Policy": json.dumps({"Version": "2012-10-17", "Statement": []})}),
    ]

    def generate(rnd: random.Random) -> bytes:
        operation, params = rnd.choice(seeds)
        if rnd.random() < 0.1:
            operation = rnd.choice(["decrypt", "Nope", "", "TrentService", operation + "X"])
        roll = rnd.random()
        if roll < 0.15:
            body = json_bytes(params)  # well-formed: reaches authorization, key state and moto
        elif roll < 0.85:
            body = json_bytes(mutate_json(rnd, params))
        else:
            body = mutate_bytes(rnd, [json_bytes(params)])
        headers = _signed_headers(operation, body, credentials, tamper=rnd.random() < 0.1)
        return json_bytes({"headers": headers, "body": body.decode("latin-1")})

    def run(data: bytes) -> Any:
        request = json.loads(data)
        answer = dispatch(model, request["headers"], request["body"].encode("latin-1"))
        status = getattr(answer, "status", 200)  # Passthrough: authorized, moto would perform it
        if 400 <= status < 500:
            raise KmsErrorAnswer(answer.body[:200])
        return answer

    def crashed(result: Any) -> str | None:
        status = getattr(result, "status", 200)
        return f"HTTP {status}: {result.body[:200]!r}" if status >= 500 else None

    return Harness(generate, run, crashed)


class KmsErrorAnswer(Exception):
    """The emulated KMS answered a typed AWS error (4xx JSON): the outcome garbage should get."""


def _signed_headers(operation: str, body: bytes, credentials: tuple[str, str], *, tamper: bool = False) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url="https://kms.us-east-1.amazonaws.com/", data=body, headers={
        "X-Amz-Target": f"TrentService.{operation}", "Content-Type": "application/x-amz-json-1.1",
    })  # fmt: skip
    SigV4Auth(Credentials(*credentials), "kms", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    headers["Host"] = "kms.us-east-1.amazonaws.com"  # signed; sent as is
    if tamper:
        headers["Authorization"] = headers["Authorization"][:-8] + "deadbeef"
    return headers


def _recipient_document(pki: Any) -> bytes:
    """An emulated enclave's attestation document carrying an RSA-2048 recipient key, as KMS takes it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from emulator.nsm import EmulatedNsm
    from emulator.pki import new_module_id

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    nsm = EmulatedNsm(pki, module_id=new_module_id(pki.instance_id), pcrs={i: bytes([i + 1]) * 48 for i in range(16)})
    return nsm.attestation_document(public_key=spki)


def _moto_ciphertext(model: Any, key_id: str) -> str:
    import boto3

    session = boto3.session.Session(aws_access_key_id="fuzz", aws_secret_access_key="fuzz", region_name=model.region)
    client = session.client("kms", endpoint_url=model.moto_endpoint)
    try:
        return base64.b64encode(client.encrypt(KeyId=key_id, Plaintext=b"fuzz")["CiphertextBlob"]).decode()
    finally:
        client.close()


def _moto_key(model: Any) -> str:
    """A key to aim requests at, made on moto directly (the front passes CreateKey through to it)."""
    import boto3

    session = boto3.session.Session(aws_access_key_id="fuzz", aws_secret_access_key="fuzz", region_name=model.region)
    client = session.client("kms", endpoint_url=model.moto_endpoint)
    try:
        return client.create_key(Description="fuzz")["KeyMetadata"]["Arn"]
    finally:
        client.close()


def _typed_errors() -> dict[str, tuple[type[BaseException], ...]]:
    from enclave.cms import RecipientCiphertextError
    from enclave.protocol import ProtocolError
    from enclave.protocol.bundle import BundleError
    from enclave.protocol.cbor import CborError
    from enclave.protocol.policy import PolicyError, Refusal
    from zerocopy.attestation import AttestationError
    from zerocopy.audit import AuditError
    from zerocopy.eif import EifError

    return {
        "cbor": (CborError,), "cbor-aws": (CborError,), "frames": (ProtocolError,), "sealed-frames": (ProtocolError,), "attestation": (AttestationError,),
        "cms": (RecipientCiphertextError,), "bundle": (BundleError,), "policy": (PolicyError,),
        "sign-request": (Refusal, PolicyError, json.JSONDecodeError), "eif": (EifError,), "audit-log": (AuditError,), "kms-front": (KmsErrorAnswer,),
    }  # fmt: skip


def _targets() -> list[Target]:
    typed = _typed_errors()
    opens = {
        "cbor": ("strict CBOR (our own wire)", _open_cbor(False)),
        "cbor-aws": ("CBOR as AWS may encode it", _open_cbor(True)),
        "frames": ("wire frames, as the enclave reads them", _open_frames),
        "sealed-frames": ("frames on an attested session", _open_sealed_frames),
        "attestation": ("attestation documents", _open_attestation),
        "cms": ("KMS CiphertextForRecipient (BER CMS)", _open_cms),
        "bundle": ("sealed bundles", _open_bundle),
        "policy": ("signing policies (TOML/JSON)", _open_policy),
        "sign-request": ("requests the policy engine judges", _open_sign_request),
        "eif": ("enclave image files", _open_eif),
        "audit-log": ("audit logs (zerocopy audit verify)", _open_audit),
        "kms-front": ("requests to the emulated KMS", _open_kms_front),
    }
    return [Target(name, what, typed[name], open_) for name, (what, open_) in opens.items()]


TARGETS = _targets()
