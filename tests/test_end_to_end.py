"""The whole path on the emulator: real processes, sockets, moto, attestation documents and CMS.

Uses the plugin's session emulator (``--zerocopy`` is in the suite's addopts), as a strategy
team's tests would.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import socket
import struct
import threading

import boto3
import pytest
from botocore.exceptions import ClientError

from enclave.protocol import NEED_DATA, VERSION, Connection, ErrorCode, ErrorResponse, MessageType, Role, Signature, SignRequest
from enclave.protocol.frames import HEADER
from enclave.protocol.bundle import SealedBundle
from zerocopy import ConnectionClosed, Signer, UnknownKey, ZeroCopyError
from zerocopy.attestation import CertificateChainInvalid, PCRMismatch, verify
from zerocopy.kms_policy import attested_key_policy
from zerocopy.sealing import seal

pytestmark = pytest.mark.zerocopy

BINANCE_SECRET = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
BINANCE_PARAMS = [
    ("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
    ("quantity", "1"), ("price", "0.1"), ("recvWindow", "5000"), ("timestamp", "1499827319559"),
]


@pytest.fixture(scope="module")
def pinned_key(zerocopy_emulator):
    policy = attested_key_policy(zerocopy_emulator.account_id, image_sha384=zerocopy_emulator.pcrs[0])
    return zerocopy_emulator.kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]


@pytest.fixture(scope="module")
def other_key(zerocopy_emulator):
    policy = attested_key_policy(zerocopy_emulator.account_id, image_sha384=zerocopy_emulator.pcrs[0])
    return zerocopy_emulator.kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]


def _seal(emulator, key_arn, name, *, scheme="hmac-sha256", secret=b"s3cr3t-value-for-tests", api_key="", policy=None):
    return seal(emulator.kms, key_id=key_arn, name=name, scheme=scheme, secret=secret, api_key=api_key, policy=policy)


def _provision(signer, emulator, *bundles):
    return signer.provision([bundle if isinstance(bundle, bytes) else bundle.to_json() for bundle in bundles], credentials=emulator.credentials)


def _raw_connection(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(address.removeprefix("unix://"))
    return sock


def _read_events(sock: socket.socket, count: int) -> list:
    conn = Connection(Role.CLIENT)
    events = []
    while len(events) < count:
        event = conn.next_event()
        if event is NEED_DATA:
            data = sock.recv(65536)
            assert data, "the enclave closed the connection"
            conn.receive_data(data)
            continue
        events.append(event)
    return events


# -- signing ----------------------------------------------------------------------------------
def test_binance_documentation_example_signs_to_the_published_signature(zerocopy_key, zerocopy_signer):
    # The example's timestamp is from 2017: only a policy without the freshness rule signs it.
    key = zerocopy_key("binance-hmac", secret=BINANCE_SECRET, api_key="vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A", policy="[freshness]\nenabled = false\n")
    signed = zerocopy_signer.sign_request(key.name, "POST", "/api/v3/order", params=BINANCE_PARAMS)
    assert signed.query.endswith("&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71")
    assert signed.headers == {"X-MBX-APIKEY": key.api_key}


def test_raw_hmac_signature_matches_an_independent_computation(zerocopy_key, zerocopy_signer):
    key = zerocopy_key("hmac-sha256")
    payload = b"symbol=BTCUSDT&side=SELL&quantity=0.5"
    assert zerocopy_signer.sign(key.name, payload) == hmac.new(key.secret, payload, hashlib.sha256).digest()


def test_pipelined_signatures_come_back_in_order(zerocopy_key, zerocopy_signer):
    key = zerocopy_key("hmac-sha512")
    payloads = [os.urandom(n) for n in range(0, 300, 3)]
    signatures = zerocopy_signer.sign_many((key.name, payload) for payload in payloads)
    assert signatures == [hmac.new(key.secret, payload, hashlib.sha512).digest() for payload in payloads]


def test_concurrent_clients_each_get_their_own_answers(zerocopy_key, zerocopy_emulator):
    key = zerocopy_key("hmac-sha256")
    failures = []

    def client(seed: int) -> None:
        with Signer(zerocopy_emulator.address) as signer:
            for i in range(50):
                payload = f"{seed}:{i}".encode()
                if signer.sign(key.name, payload) != hmac.new(key.secret, payload, hashlib.sha256).digest():
                    failures.append((seed, i))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_unknown_key_is_a_typed_error_naming_the_key(zerocopy_signer):
    with pytest.raises(UnknownKey, match="no-such-key"):
        zerocopy_signer.sign("no-such-key", b"payload")


def test_test_key_repr_hides_the_secret(zerocopy_key):
    key = zerocopy_key("hmac-sha256", secret=b"do-not-print-me-0123456789")
    assert "do-not-print-me" not in repr(key)
    assert key.scheme in repr(key)


# -- provisioning ---------------------------------------------------------------------------
def test_provisioning_the_same_bundle_twice_is_idempotent(zerocopy_emulator, zerocopy_signer, pinned_key):
    bundle = _seal(zerocopy_emulator, pinned_key, "twice")
    first, second = _provision(zerocopy_signer, zerocopy_emulator, bundle, bundle)
    assert first.loaded and second.loaded
    assert [key.name for key in zerocopy_signer.keys()].count("twice") == 1


def test_a_different_key_under_a_loaded_name_is_refused(zerocopy_emulator, zerocopy_signer, pinned_key):
    _provision(zerocopy_signer, zerocopy_emulator, _seal(zerocopy_emulator, pinned_key, "taken", secret=b"first-secret"))
    (result,) = _provision(zerocopy_signer, zerocopy_emulator, _seal(zerocopy_emulator, pinned_key, "taken", secret=b"second-secret"))
    assert not result.loaded
    assert "already loaded" in result.error


def test_a_tampered_ciphertext_is_refused(zerocopy_emulator, zerocopy_signer, pinned_key):
    bundle = _seal(zerocopy_emulator, pinned_key, "tampered")
    flipped = bytearray(bundle.ciphertext)
    flipped[0] ^= 1
    (result,) = _provision(zerocopy_signer, zerocopy_emulator, dataclasses.replace(bundle, ciphertext=bytes(flipped)))
    assert not result.loaded
    assert "does not match the bundle's fields" in result.error


@pytest.mark.parametrize(
    "change",
    [
        {"scheme": "hmac-sha512"},
        {"api_key": "someone-elses-key"},
        {"policy": {"raw_signing": True}},
        {"name": "renamed"},
    ],
    ids=["relabelled-scheme", "swapped-api-key", "edited-policy", "renamed"],
)
def test_editing_a_sealed_field_makes_kms_refuse_the_data_key(zerocopy_emulator, zerocopy_signer, pinned_key, change):
    bundle = _seal(zerocopy_emulator, pinned_key, "edited-" + next(iter(change)))
    (result,) = _provision(zerocopy_signer, zerocopy_emulator, dataclasses.replace(bundle, **change))
    assert not result.loaded
    assert "KMS refused Decrypt: InvalidCiphertextException" in result.error


def test_a_bundle_naming_another_kms_key_is_incorrect_key(zerocopy_emulator, zerocopy_signer, pinned_key, other_key):
    bundle = _seal(zerocopy_emulator, pinned_key, "wrong-key")
    (result,) = _provision(zerocopy_signer, zerocopy_emulator, dataclasses.replace(bundle, kms_key_id=other_key))
    assert not result.loaded
    assert "IncorrectKeyException" in result.error


def test_a_malformed_bundle_is_reported_and_the_others_still_load(zerocopy_emulator, zerocopy_signer, pinned_key):
    good = _seal(zerocopy_emulator, pinned_key, "next-to-garbage")
    bad, loaded = _provision(zerocopy_signer, zerocopy_emulator, b'{"format": "zerocopy-sealed-v1"', good)
    assert not bad.loaded and "not valid JSON" in bad.error
    assert loaded.loaded


def test_provisioning_without_credentials_is_a_bad_request(zerocopy_emulator, zerocopy_signer, pinned_key):
    bundle = _seal(zerocopy_emulator, pinned_key, "no-credentials")
    with pytest.raises(ZeroCopyError, match="credentials"):
        zerocopy_signer.provision([bundle.to_json()], credentials={})


def test_the_hosts_own_credentials_cannot_decrypt_a_bundle_but_moto_alone_would(zerocopy_emulator, pinned_key):
    bundle = _seal(zerocopy_emulator, pinned_key, "host-decrypt", secret=b"host must not see this")
    with pytest.raises(ClientError) as refused:
        zerocopy_emulator.kms.decrypt(CiphertextBlob=bundle.encrypted_data_key, EncryptionContext=bundle.encryption_context())
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    # The same call straight to moto, which does not evaluate key policies:
    moto = boto3.client("kms", region_name="us-east-1", endpoint_url=zerocopy_emulator.moto_endpoint_url, aws_access_key_id="x", aws_secret_access_key="x")
    data_key = moto.decrypt(CiphertextBlob=bundle.encrypted_data_key, EncryptionContext=bundle.encryption_context())["Plaintext"]
    assert len(data_key) == 32


def test_an_enclave_with_modified_code_is_refused_by_kms(zerocopy_emulator, pinned_key, tmp_path):
    import shutil

    bundle = _seal(zerocopy_emulator, pinned_key, "for-the-real-image")
    modified = tmp_path / "enclave"
    shutil.copytree(zerocopy_emulator.enclave.enclave_source, modified, ignore=shutil.ignore_patterns("__pycache__"))
    (modified / "keyring.py").write_text((modified / "keyring.py").read_text() + "\n# changed\n")
    with zerocopy_emulator.launch(enclave_dir=modified) as other:
        assert other.pcrs[0] != zerocopy_emulator.pcrs[0]
        assert other.pcrs[1] == zerocopy_emulator.pcrs[1]  # same runtime, different application
        with Signer(other.address) as signer:
            (result,) = _provision(signer, zerocopy_emulator, bundle)
    assert not result.loaded
    # In AWS's words: KMS names the kind of deny, not the statement (the emulator's log header does).
    assert "AccessDeniedException" in result.error and "with an explicit deny in a resource-based policy" in result.error


# -- attestation from the bot's side ----------------------------------------------------------
def test_signer_insisting_on_the_right_pcr0_connects(zerocopy_emulator):
    with Signer(zerocopy_emulator.address, expected_pcrs={0: zerocopy_emulator.pcrs[0]}, roots=[zerocopy_emulator.root_certificate]) as signer:
        assert signer.attestation.pcrs[0] == zerocopy_emulator.pcrs[0]


def test_signer_refuses_an_enclave_with_unexpected_pcrs(zerocopy_emulator):
    with pytest.raises(PCRMismatch, match="PCR0"):
        Signer(zerocopy_emulator.address, expected_pcrs={0: bytes(47) + b"\x01"}, roots=[zerocopy_emulator.root_certificate])


def test_signer_refuses_an_enclave_not_rooted_in_aws(zerocopy_emulator):
    # roots=None with expected PCRs means the pinned AWS root: the emulator's chain is not it.
    with pytest.raises(CertificateChainInvalid):
        Signer(zerocopy_emulator.address, expected_pcrs={0: zerocopy_emulator.pcrs[0]})


def test_attestation_user_data_lists_the_loaded_keys_and_policies(zerocopy_emulator, zerocopy_key, zerocopy_signer):
    import cbor2

    from enclave.protocol import cbor as wire_cbor

    key = zerocopy_key("hmac-sha256")
    nonce = os.urandom(16)
    document = verify(zerocopy_signer.attest(nonce), roots=[zerocopy_emulator.root_certificate], nonce=nonce)
    summary = cbor2.loads(document.user_data)
    infos = zerocopy_signer.keys()
    (listed,) = [info for info in infos if info.name == key.name]
    assert listed.sealed_by.startswith("arn:aws:kms:")  # the KMS key that sealed it, in KEYS and user_data alike
    # user_data lists what KEYS lists, or past 1024 bytes commits to it by its hash and still names every sealing key.
    sealers = sorted({info.sealed_by for info in infos})
    expected = {"keys": [[info.name, info.scheme, info.policy_sha256, sealers.index(info.sealed_by)] for info in infos], "sealed_by": sealers}
    if "keys" in summary:
        assert summary == expected and [key.name, "hmac-sha256", key.policy_sha256, sealers.index(listed.sealed_by)] in summary["keys"]
    else:
        assert summary == {"keys_sha256": hashlib.sha256(wire_cbor.dumps(expected)).digest(), "count": len(infos), "sealed_by": sealers}


# -- bad input over real sockets --------------------------------------------------------------
def test_bad_frames_get_error_frames_and_the_connection_keeps_serving(zerocopy_emulator, zerocopy_key):
    key = zerocopy_key("hmac-sha256")
    client = Connection(Role.CLIENT)
    frames = [
        struct.pack(">IBBI", 0, VERSION + 7, MessageType.SIGN, 11),  # unknown version
        struct.pack(">IBBI", 0, VERSION, 0x55, 12),  # unknown type
        struct.pack(">IBBI", 3, VERSION, MessageType.SIGN, 13) + b"\x09ab",  # key length beyond body
        struct.pack(">IBBI", 2, VERSION, MessageType.ATTEST, 14) + b"\xa1\x00",  # truncated CBOR
        client.send(SignRequest(15, key.name, b"still here")),
    ]
    with _raw_connection(zerocopy_emulator.address) as sock:
        sock.sendall(b"".join(frames))
        events = _read_events(sock, 5)
    codes = [(event.request_id, getattr(event, "code", None)) for event in events]
    assert codes[:4] == [
        (11, ErrorCode.UNSUPPORTED_VERSION),
        (12, ErrorCode.UNKNOWN_MESSAGE_TYPE),
        (13, ErrorCode.BAD_REQUEST),
        (14, ErrorCode.BAD_REQUEST),
    ]
    assert isinstance(events[4], Signature)
    assert events[4].signature == hmac.new(key.secret, b"still here", hashlib.sha256).digest()


def test_an_oversized_frame_is_refused_without_dropping_the_connection(zerocopy_emulator, zerocopy_key):
    key = zerocopy_key("hmac-sha256")
    size = (1 << 20) + 1
    with _raw_connection(zerocopy_emulator.address) as sock:
        sock.sendall(HEADER.pack(size, VERSION, MessageType.SIGN, 21))
        sock.sendall(b"\0" * size)
        sock.sendall(Connection(Role.CLIENT).send(SignRequest(22, key.name, b"after")))
        too_large, signed = _read_events(sock, 2)
    assert isinstance(too_large, ErrorResponse) and too_large.code is ErrorCode.FRAME_TOO_LARGE and too_large.request_id == 21
    assert isinstance(signed, Signature) and signed.request_id == 22


def test_a_client_vanishing_mid_request_does_not_disturb_others(zerocopy_emulator, zerocopy_key):
    key = zerocopy_key("hmac-sha256")
    frame = Connection(Role.CLIENT).send(SignRequest(1, key.name, b"x" * 100))
    with Signer(zerocopy_emulator.address) as steady:
        for _ in range(20):
            half_open = _raw_connection(zerocopy_emulator.address)
            half_open.sendall(frame[: len(frame) // 2])
            half_open.close()
            assert steady.sign(key.name, b"ping") == hmac.new(key.secret, b"ping", hashlib.sha256).digest()
        stalled = _raw_connection(zerocopy_emulator.address)
        stalled.sendall(frame[:7])  # holds a partial header open while others are served
        try:
            assert steady.sign(key.name, b"pong") == hmac.new(key.secret, b"pong", hashlib.sha256).digest()
        finally:
            stalled.close()


def test_a_server_closing_mid_request_is_connection_closed(tmp_path):
    """The Signer retries once on a fresh connection (the enclave may have restarted); a server
    that closes on it again is a ConnectionClosed, and nothing hangs."""
    path = str(tmp_path / "closing.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    accepted = []

    def accept_read_and_close() -> None:
        for _ in range(4):
            conn, _ = listener.accept()
            accepted.append(conn.recv(65536))  # the whole request, so the close is a clean end of stream
            conn.close()

    thread = threading.Thread(target=accept_read_and_close)
    thread.start()
    try:
        signer = Signer(f"unix://{path}")
        with pytest.raises(ConnectionClosed, match="closed the connection"):
            signer.sign("any", b"payload")
        with pytest.raises(ConnectionClosed, match="closed the connection"):
            signer.sign("any", b"again")
    finally:
        thread.join(timeout=30)
        listener.close()
    assert len(accepted) == 4 and all(b"payload" in request for request in accepted[:2])


# -- hygiene -------------------------------------------------------------------------------
def test_no_secret_reaches_the_enclave_log_or_the_bundle_file(zerocopy_emulator, zerocopy_key):
    secret = b"LOG-CANARY-" + os.urandom(8).hex().encode()
    key = zerocopy_key("hmac-sha256", secret=secret)
    zerocopy_emulator.signer().sign(key.name, b"payload")
    log = zerocopy_emulator.enclave.log_path.read_bytes()
    assert key.name.encode() in log  # the log is there and names the key
    assert secret not in log and base64.b64encode(secret) not in log
    bundle = seal(zerocopy_emulator.kms, key_id=zerocopy_emulator.kms.create_key()["KeyMetadata"]["Arn"], name="canary", scheme="hmac-sha256", secret=secret)
    assert secret not in bundle.to_json() and secret not in repr(bundle).encode()
    assert SealedBundle.from_json(bundle.to_json()) == bundle


def test_an_emulator_leaves_no_process_or_file_behind():
    from emulator import Emulator

    with Emulator() as emulator:
        run_dir = emulator.run_dir
        enclave_pid = emulator.enclave.pid
        moto_pid = emulator._moto.pid  # the moto process
        assert run_dir.is_dir() and (run_dir.stat().st_mode & 0o777) == 0o700
        assert any(path.name.endswith(".sock") for path in run_dir.iterdir())
    assert not run_dir.exists()
    for pid in (enclave_pid, moto_pid):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_failed_start_cleans_up_too(tmp_path):
    from emulator import Emulator, EmulatorError

    broken = tmp_path / "enclave"
    broken.mkdir()
    (broken / "__main__.py").write_text("raise SystemExit('this image does not start')\n")
    emulator = Emulator(enclave_dir=broken)
    with pytest.raises(EmulatorError, match="this image does not start"):
        emulator.start()
    assert emulator.run_dir is None


# -- policy, generated keys, clock --------------------------------------------------------------
def test_policy_refusals_are_typed_and_name_the_rule(zerocopy_key, zerocopy_signer):
    from zerocopy import PolicyRefused

    key = zerocopy_key("binance-hmac")  # no policy: the scheme's safe default
    with pytest.raises(PolicyRefused) as refused:
        zerocopy_signer.sign(key.name, b"symbol=BTCUSDT&side=BUY")
    assert refused.value.rule == "raw_signing"
    with pytest.raises(PolicyRefused) as refused:
        zerocopy_signer.sign_request(key.name, "POST", "/sapi/v1/capital/withdraw/apply", params={"coin": "BTC", "address": "x", "amount": "1"})
    assert refused.value.rule == "funds" and "withdraw" in str(refused.value)
    with pytest.raises(PolicyRefused) as refused:
        zerocopy_signer.sign_request(key.name, "POST", "/api/v3/order", params={**dict(BINANCE_PARAMS)})
    assert refused.value.rule == "freshness"  # the 2017 timestamp, under the default policy


def test_a_current_order_signs_under_the_default_policy(zerocopy_key, zerocopy_signer):
    key = zerocopy_key("binance-hmac")
    params = [(name, value) for name, value in BINANCE_PARAMS if name != "timestamp"]
    signed = zerocopy_signer.sign_request(key.name, "POST", "/api/v3/order", params=params)
    query, _, signature = signed.query.rpartition("&signature=")
    assert "&timestamp=" in query  # added by the enclave, from its own clock
    assert signature == hmac.new(key.secret, query.encode(), hashlib.sha256).hexdigest()


def test_a_key_generated_inside_the_enclave_survives_a_restart(zerocopy_emulator):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    with zerocopy_emulator.signer() as signer:
        bundle, public_pem = signer.generate("made-inside", "ed25519", credentials=zerocopy_emulator.credentials)  # sealed to the measured seal key
        public_key = load_pem_public_key(public_pem.encode())
        public_key.verify(signer.sign("made-inside", b"first boot"), b"first boot")
        assert b"PRIVATE KEY" not in bundle
    with zerocopy_emulator.launch() as next_boot:  # same image, so the same PCR0 unseals it
        assert next_boot.pcrs[0] == zerocopy_emulator.pcrs[0]
        with Signer(next_boot.address) as signer:
            (loaded,) = signer.provision([bundle], credentials=zerocopy_emulator.credentials)
            assert loaded.loaded
            public_key.verify(signer.sign("made-inside", b"next boot"), b"next boot")


def test_generating_refuses_symmetric_schemes(zerocopy_emulator):
    from zerocopy import ProvisioningError

    with zerocopy_emulator.signer() as signer, pytest.raises(ProvisioningError, match="not an asymmetric scheme"):
        signer.generate("hmac-inside", "hmac-sha256", credentials=zerocopy_emulator.credentials)


def test_a_pinned_clock_is_a_measured_launch_option(zerocopy_emulator, pinned_key):
    """The documentation's 2017 order signs with freshness ON when the enclave's clock is pinned
    to that time — and the pinned clock changes PCR0, so a key bound to the real image refuses it."""
    with zerocopy_emulator.launch(clock="fixed:1499827319000") as pinned:
        assert pinned.pcrs[0] != zerocopy_emulator.pcrs[0]
        assert pinned.pcrs[2] == zerocopy_emulator.pcrs[2]  # same code
        bundle = _seal(zerocopy_emulator, pinned_key, "clock-test", scheme="binance-hmac", secret=BINANCE_SECRET, api_key="AK")
        with Signer(pinned.address) as signer:
            (result,) = _provision(signer, zerocopy_emulator, bundle)
        assert not result.loaded and "AccessDeniedException" in result.error
        open_key = zerocopy_emulator.kms.create_key()["KeyMetadata"]["Arn"]  # no attestation pin
        with Signer(pinned.address) as signer:
            (result,) = _provision(signer, zerocopy_emulator, _seal(zerocopy_emulator, open_key, "clock-test", scheme="binance-hmac", secret=BINANCE_SECRET, api_key="AK"))
            assert result.loaded
            signed = signer.sign_request("clock-test", "POST", "/api/v3/order", params=BINANCE_PARAMS)
    assert signed.query.endswith("signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71")


def test_busy_polling_is_a_measured_launch_option_that_signs_the_same(zerocopy_emulator, zerocopy_key):
    key = zerocopy_key("hmac-sha256")
    bundle_key = zerocopy_emulator.kms.create_key()["KeyMetadata"]["Arn"]
    bundle = _seal(zerocopy_emulator, bundle_key, key.name, secret=key.secret)
    with zerocopy_emulator.launch(busy_poll_us=200) as polling:
        assert polling.pcrs[0] != zerocopy_emulator.pcrs[0] and polling.pcrs[2] == zerocopy_emulator.pcrs[2]
        with Signer(polling.address) as signer:
            assert _provision(signer, zerocopy_emulator, bundle)[0].loaded
            for payload in (b"a", b"b" * 1000):
                assert signer.sign(key.name, payload) == hmac.new(key.secret, payload, hashlib.sha256).digest()


def test_after_an_enclave_restart_the_signer_reconnects_and_keys_need_provisioning(zerocopy_emulator, pinned_key):
    bundle = _seal(zerocopy_emulator, pinned_key, "survives-restart")
    with zerocopy_emulator.launch() as enclave:
        with Signer(enclave.address, expected_pcrs={0: enclave.pcrs[0]}, roots=[zerocopy_emulator.root_certificate]) as signer:
            assert _provision(signer, zerocopy_emulator, bundle)[0].loaded
            before = signer.sign("survives-restart", b"x")
            enclave.restart()
            with pytest.raises(UnknownKey, match="not provisioned"):
                signer.sign("survives-restart", b"x")  # reconnected (and re-attested) by itself
            assert _provision(signer, zerocopy_emulator, bundle)[0].loaded
            assert signer.sign("survives-restart", b"x") == before
            enclave.stop()
            with pytest.raises(ZeroCopyError, match="cannot connect|closed"):
                signer.sign("survives-restart", b"x")
            enclave.start()
            with pytest.raises(UnknownKey):  # the next call finds the enclave again, empty as after any boot
                signer.sign("survives-restart", b"x")
    with pytest.raises(ConnectionClosed, match="closed"):
        signer.sign("survives-restart", b"x")  # a Signer closed by its user stays closed
