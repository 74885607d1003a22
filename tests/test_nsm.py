"""The emulated Nitro Secure Module (emulator/nsm.py, emulator/pki.py, emulator/measure.py).

Three levels, as for the KMS: the device model (``EmulatedNsm.handle`` on decoded CBOR, compared
with the request and response shapes of aws-nitro-enclaves-nsm-api), the documents it signs
(checked by ``zerocopy.attestation.verify`` and compared with the real sample in
``tests/data/attestation``), and the device over a socket pair with the enclave's own client
(``enclave.nsm.Nsm`` on a ``SocketDevice``), as the launcher wires it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from attestation_builder import load_vector
from cbor_encodings import DEFINITE, INDEFINITE, NARROW, encode, top_level_map_indefinite
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import SignatureAlgorithmOID
from hypothesis import given, settings
from hypothesis import strategies as st

import emulator.measure
from emulator.measure import ZERO, extend, measure
from emulator.nsm import PCR_COUNT, EmulatedNsm, NsmDeviceServer
from emulator.pki import AttestationPki
from enclave.nsm import REQUEST_MAX, Nsm, NsmError, SocketDevice
from enclave.protocol import cbor
from zerocopy.attestation import CertificateChainInvalid, DebugModeRefused, NonceMismatch, verify

REAL_SAMPLE = "attestation/nitro-2024-09-07.b64"
MODULE_ID = "i-0123456789abcdef0-enc0123456789abcdef"
ROLE_ARN = "arn:aws:iam::123456789012:role/zerocopy-emulator"
INSTANCE_ID = "i-0123456789abcdef0"
ARGV = ["python", "-I", "<image>", "--listen", "vsock://16:5000"]
ENV = {"LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
ERROR_NAMES = {
    "InvalidIndex", "ReadOnlyIndex", "InvalidArgument", "InvalidOperation", "InputTooLarge",
    "InvalidResponse", "BufferTooSmall", "InternalError",
}
_LENGTH = struct.Struct(">I")
_DEVICE_TIMEOUT = 30  # keeps a broken server from hanging the suite; nothing is timed
# An unclosed socket or file anywhere in these tests is a leak: fail on it.
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")


# --- fixtures ---------------------------------------------------------------------------------


def _write_image(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "__main__.py").write_text("from pkg import app\napp.run()\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "app.py").write_text("def run():\n    return 'signed'\n")
    return root


@pytest.fixture(scope="module")
def pki() -> AttestationPki:
    return AttestationPki()


@pytest.fixture(scope="module")
def launch_pcrs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    image = _write_image(tmp_path_factory.mktemp("image"))
    return measure(image, ARGV, ENV, role_arn=ROLE_ARN, instance_id=INSTANCE_ID)


@pytest.fixture
def nsm(pki: AttestationPki, launch_pcrs: dict[int, bytes]) -> EmulatedNsm:
    return EmulatedNsm(pki, module_id=MODULE_ID, pcrs=launch_pcrs)


@pytest.fixture
def device(nsm: EmulatedNsm) -> Iterator[tuple[NsmDeviceServer, socket.socket]]:
    """The device server on one end of a socket pair; the raw client end (closed afterwards)."""
    server_end, client_end = socket.socketpair()
    client_end.settimeout(_DEVICE_TIMEOUT)
    server = NsmDeviceServer(nsm, server_end)
    try:
        server.start()
        yield server, client_end
    finally:
        client_end.close()
        server.stop()
        assert not server._thread.is_alive()


@pytest.fixture
def client(device: tuple[NsmDeviceServer, socket.socket]) -> Nsm:
    return Nsm(SocketDevice(device[1]))


def call(nsm: EmulatedNsm, name: str, **body: object) -> object:
    return nsm.handle({name: body})


def attestation_request(user_data=None, nonce=None, public_key=None) -> dict:
    return {"Attestation": {"user_data": user_data, "nonce": nonce, "public_key": public_key}}


# --- the model: request and response shapes -------------------------------------------------


class TestModel:
    def test_describe_nsm(self, nsm):
        response = nsm.handle("DescribeNSM")
        assert list(response) == ["DescribeNSM"]
        body = response["DescribeNSM"]
        assert set(body) == {
            "version_major", "version_minor", "version_patch", "module_id", "max_pcrs", "locked_pcrs", "digest",
        }
        assert all(isinstance(body[k], int) for k in ("version_major", "version_minor", "version_patch"))
        assert body["module_id"] == MODULE_ID
        assert body["max_pcrs"] == PCR_COUNT == 32
        assert body["locked_pcrs"] == list(range(16))
        assert body["digest"] == "SHA384"

    def test_get_random(self, nsm):
        first, second = nsm.handle("GetRandom"), nsm.handle("GetRandom")
        assert set(first) == {"GetRandom"} and set(first["GetRandom"]) == {"random"}
        assert isinstance(first["GetRandom"]["random"], bytes) and len(first["GetRandom"]["random"]) >= 32
        assert first["GetRandom"]["random"] != second["GetRandom"]["random"]

    def test_describe_pcr_every_index(self, nsm, launch_pcrs):
        for index in range(PCR_COUNT):
            response = call(nsm, "DescribePCR", index=index)
            assert set(response) == {"DescribePCR"} and set(response["DescribePCR"]) == {"lock", "data"}
            assert response["DescribePCR"]["lock"] is (index < 16)
            assert response["DescribePCR"]["data"] == launch_pcrs.get(index, ZERO)
            assert len(response["DescribePCR"]["data"]) == 48

    def test_extend_is_sha384_of_old_and_data_from_zeros(self, nsm):
        first = call(nsm, "ExtendPCR", index=16, data=b"measurement one")
        assert first == {"ExtendPCR": {"data": hashlib.sha384(bytes(48) + b"measurement one").digest()}}
        second = call(nsm, "ExtendPCR", index=16, data=b"two")
        expected = hashlib.sha384(first["ExtendPCR"]["data"] + b"two").digest()
        assert second == {"ExtendPCR": {"data": expected}}
        assert call(nsm, "DescribePCR", index=16) == {"DescribePCR": {"lock": False, "data": expected}}
        assert call(nsm, "DescribePCR", index=17)["DescribePCR"]["data"] == ZERO  # others untouched

    @pytest.mark.parametrize("index", [0, 4, 8, 15])
    def test_pcrs_0_to_15_are_locked_at_launch(self, nsm, launch_pcrs, index):
        assert call(nsm, "ExtendPCR", index=index, data=b"x") == {"Error": "ReadOnlyIndex"}
        assert call(nsm, "DescribePCR", index=index)["DescribePCR"]["data"] == launch_pcrs[index]

    def test_lock_pcr_then_extend_is_refused(self, nsm):
        before = call(nsm, "ExtendPCR", index=20, data=b"app")["ExtendPCR"]["data"]
        assert call(nsm, "LockPCR", index=20) == "LockPCR"
        assert call(nsm, "ExtendPCR", index=20, data=b"more") == {"Error": "ReadOnlyIndex"}
        assert call(nsm, "DescribePCR", index=20) == {"DescribePCR": {"lock": True, "data": before}}
        assert 20 in nsm.handle("DescribeNSM")["DescribeNSM"]["locked_pcrs"]
        # Locking again is refused: the real device refuses it for PCR0-15, and is untested for the
        # rest; the emulator takes the strict reading so nothing passes here that fails on Nitro.
        assert call(nsm, "LockPCR", index=20) == {"Error": "ReadOnlyIndex"}

    def test_lock_pcrs_locks_zero_to_range_minus_one(self, nsm):
        assert call(nsm, "LockPCRs", range=20) == "LockPCRs"
        assert nsm.handle("DescribeNSM")["DescribeNSM"]["locked_pcrs"] == list(range(20))
        assert call(nsm, "ExtendPCR", index=19, data=b"x") == {"Error": "ReadOnlyIndex"}
        assert "ExtendPCR" in call(nsm, "ExtendPCR", index=20, data=b"x")
        assert call(nsm, "LockPCRs", range=PCR_COUNT) == "LockPCRs"
        assert call(nsm, "ExtendPCR", index=31, data=b"x") == {"Error": "ReadOnlyIndex"}

    @pytest.mark.parametrize(
        "request_",
        [
            {"DescribePCR": {"index": 32}},
            {"DescribePCR": {"index": -1}},
            {"DescribePCR": {"index": True}},  # a CBOR bool is not index 1
            {"DescribePCR": {"index": "1"}},
            {"ExtendPCR": {"index": 32, "data": b"x"}},
            {"LockPCR": {"index": 2**40}},
            {"LockPCRs": {"range": 33}},
            {"LockPCRs": {"range": -1}},
        ],
    )
    def test_out_of_range_index(self, nsm, request_):
        assert nsm.handle(request_) == {"Error": "InvalidIndex"}

    @pytest.mark.parametrize("field", ["user_data", "nonce", "public_key"])
    def test_attestation_fields_over_1024_bytes(self, nsm, field):
        assert nsm.handle(attestation_request(**{field: bytes(1025)})) == {"Error": "InputTooLarge"}
        response = nsm.handle(attestation_request(**{field: bytes(1024)}))
        assert set(response) == {"Attestation"} and set(response["Attestation"]) == {"document"}

    def test_extend_data_over_1024_bytes(self, nsm):
        assert call(nsm, "ExtendPCR", index=16, data=bytes(1025)) == {"Error": "InputTooLarge"}

    @pytest.mark.parametrize(
        "request_",
        [
            {"ExtendPCR": {"index": 16, "data": "text, not bytes"}},
            {"ExtendPCR": {"index": 16}},
            {"DescribePCR": {"index": 1, "extra": 2}},
            {"DescribePCR": [1]},
            {"Attestation": {"user_data": "text", "nonce": None, "public_key": None}},
            {"Attestation": {"user_data": None, "nonce": None, "extra": None}},
            {"Attestation": [None, None, None]},
        ],
    )
    def test_invalid_argument(self, nsm, request_):
        assert nsm.handle(request_) == {"Error": "InvalidArgument"}

    @pytest.mark.parametrize("body", [{}, {"nonce": b"n"}, {"user_data": b"u", "public_key": b"k"}], ids=repr)
    def test_attestation_accepts_omitted_optional_fields(self, nsm, pki, body):
        # serde reads a missing Option as None, so clients that omit null fields work on Nitro too.
        document = nsm.handle({"Attestation": body})["Attestation"]["document"]
        doc = verify(document, roots=[pki.root_pem])
        assert (doc.user_data, doc.nonce, doc.public_key) == (body.get("user_data"), body.get("nonce"), body.get("public_key"))

    @pytest.mark.parametrize("index", [0, 3, 4, 15])
    def test_locking_a_pcr_locked_at_launch_is_an_error(self, nsm, index):
        # aws-nitro-enclaves-nsm-api nsm-test/src/bin/nsm-check.rs: "PCRs [0..16) cannot be locked".
        assert call(nsm, "LockPCR", index=index) == {"Error": "ReadOnlyIndex"}
        assert call(nsm, "DescribePCR", index=index)["DescribePCR"]["lock"] is True

    def test_lock_pcrs_over_the_locked_range_succeeds_as_on_nitro(self, nsm):
        # nsm-check.rs: after locking 16..max one by one, LockPCRs {range: max} succeeds, max + 1 fails
        # (LockPCRs over locked PCRs is accepted, unlike LockPCR on one).
        for index in range(16, PCR_COUNT):
            assert call(nsm, "LockPCR", index=index) == "LockPCR"
        assert call(nsm, "LockPCRs", range=PCR_COUNT) == "LockPCRs"
        assert call(nsm, "LockPCRs", range=PCR_COUNT + 1) == {"Error": "InvalidIndex"}
        assert all(call(nsm, "ExtendPCR", index=i, data=b"x") == {"Error": "ReadOnlyIndex"} for i in range(PCR_COUNT))

    @pytest.mark.parametrize("request_", ["Unknown", 42, b"DescribeNSM", [], {}, {"Unknown": {}}, {"A": {}, "B": {}}])
    def test_invalid_operation(self, nsm, request_):
        assert nsm.handle(request_) == {"Error": "InvalidOperation"}

    def test_attestation_response_shape(self, nsm):
        response = nsm.handle(attestation_request(nonce=b"n"))
        assert list(response) == ["Attestation"] and list(response["Attestation"]) == ["document"]
        assert isinstance(response["Attestation"]["document"], bytes)


# --- hypothesis: nothing a client sends makes the model raise --------------------------------

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.integers(min_value=-2, max_value=40)
    | st.binary(max_size=1100)
    | st.text(max_size=16)
)
_values = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12) | st.integers(-2, 40), children, max_size=4),
    max_leaves=12,
)
_FIELDS = {
    "DescribePCR": ("index",),
    "ExtendPCR": ("index", "data"),
    "LockPCR": ("index",),
    "LockPCRs": ("range",),
    "Attestation": ("user_data", "nonce", "public_key"),
}
_shaped = st.sampled_from(sorted(_FIELDS)).flatmap(
    lambda name: st.fixed_dictionaries({field: _values for field in _FIELDS[name]}).map(lambda body: {name: body})
)
_named = st.sampled_from([*_FIELDS, "DescribeNSM", "GetRandom", "Bogus"])
_requests = _shaped | _named | st.builds(lambda name, body: {name: body}, _named, _values) | _values


@pytest.fixture(scope="module")
def fuzz_nsm(pki, launch_pcrs) -> EmulatedNsm:
    return EmulatedNsm(pki, module_id=MODULE_ID, pcrs=launch_pcrs)


@settings(max_examples=150, deadline=None)
@given(request_=_requests)
def test_handle_never_raises(fuzz_nsm, request_):
    response = fuzz_nsm.handle(request_)
    assert isinstance(response, (dict, str))
    cbor.dumps(response)  # always encodable by the device server
    if isinstance(response, dict):
        assert len(response) == 1
        if "Error" in response:
            assert response["Error"] in ERROR_NAMES


# --- documents ---------------------------------------------------------------------------------


def _decode(document: bytes) -> tuple[list, dict]:
    outer = cbor2.loads(document)
    return outer, cbor2.loads(outer[2])


def _lifetime(cert: x509.Certificate) -> dt.timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def _path_lengths(cabundle: list[bytes]) -> list[int | None]:
    return [
        x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        for der in cabundle
    ]


class TestDocuments:
    def test_verifies_with_the_emulator_root_and_carries_the_fields(self, nsm, pki, launch_pcrs):
        document = nsm.attestation_document(public_key=b"pk" * 100, user_data=b"user", nonce=b"nonce-1")
        doc = verify(document, roots=[pki.root_pem], nonce=b"nonce-1", expected_pcrs={0: launch_pcrs[0]})
        assert (doc.public_key, doc.user_data, doc.nonce) == (b"pk" * 100, b"user", b"nonce-1")
        assert doc.module_id == MODULE_ID
        assert dict(doc.pcrs) == {index: launch_pcrs[index] for index in range(16)}
        assert not doc.debug
        with pytest.raises(NonceMismatch, match="nonce"):
            verify(document, roots=[pki.root_pem], nonce=b"nonce-2")

    def test_document_through_handle_verifies(self, nsm, pki):
        document = nsm.handle(attestation_request(public_key=b"k"))["Attestation"]["document"]
        assert verify(document, roots=[pki.root_pem]).public_key == b"k"

    def test_absent_fields_stay_absent(self, nsm, pki):
        doc = verify(nsm.attestation_document(), roots=[pki.root_pem])
        assert (doc.public_key, doc.user_data, doc.nonce) == (None, None, None)

    def test_refused_under_the_aws_root(self, nsm):
        with pytest.raises(CertificateChainInvalid):
            verify(nsm.attestation_document(nonce=b"n"))

    def test_refused_under_another_emulator_root(self, nsm):
        with pytest.raises(CertificateChainInvalid):
            verify(nsm.attestation_document(), roots=[AttestationPki().root_pem])

    def test_debug_mode(self, pki, tmp_path):
        image = _write_image(tmp_path / "image")
        production = measure(image, ARGV, ENV, role_arn=ROLE_ARN, instance_id=INSTANCE_ID)
        debug = measure(image, ARGV, ENV, role_arn=ROLE_ARN, instance_id=INSTANCE_ID, debug=True)
        assert [debug[i] for i in (0, 1, 2, 8)] == [ZERO] * 4
        assert debug[3] == production[3] != ZERO and debug[4] == production[4] != ZERO
        document = EmulatedNsm(pki, module_id=MODULE_ID, pcrs=debug).attestation_document(nonce=b"n")
        with pytest.raises(DebugModeRefused, match="debug"):
            verify(document, roots=[pki.root_pem])
        doc = verify(document, roots=[pki.root_pem], allow_debug=True)
        assert doc.debug and doc.pcrs[0] == ZERO and doc.pcrs[3] == production[3]

    @pytest.mark.parametrize("hours", [23.5, 24.1, 6 * 24 + 2, 21 * 24, 400 * 24])
    def test_an_emulator_running_for_days_keeps_signing_valid_documents(self, launch_pcrs, hours):
        # The CAs below the root live 20 days, 6 days and 1 day, as AWS's: they are renewed as needed.
        start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        clock = [start]
        pki = AttestationPki(clock=lambda: clock[0])
        nsm = EmulatedNsm(pki, module_id=MODULE_ID, pcrs=launch_pcrs)
        first = verify(nsm.attestation_document(nonce=b"n"), roots=[pki.root_pem], now=start)
        clock[0] = start + dt.timedelta(hours=hours)
        later = verify(nsm.attestation_document(nonce=b"n"), roots=[pki.root_pem], now=clock[0])
        instance_ca = later.cabundle[-1]
        assert later.certificate.not_valid_after_utc <= instance_ca.not_valid_after_utc  # as in real chains
        assert later.cabundle[0] == first.cabundle[0]  # the root stays
        assert later.cabundle[-1] != first.cabundle[-1]  # the instance CA was renewed
        assert later.timestamp == clock[0]

    def test_pcrs_extended_after_launch_are_not_in_the_document(self, nsm, pki, launch_pcrs):
        call(nsm, "ExtendPCR", index=16, data=b"x")
        doc = verify(nsm.attestation_document(), roots=[pki.root_pem])
        assert sorted(doc.pcrs) == list(range(16)) and doc.pcrs[0] == launch_pcrs[0]


class TestShapeLikeTheRealSample:
    """The emulated document against tests/data/attestation/nitro-2024-09-07.b64."""

    @pytest.fixture(scope="class")
    @classmethod
    def real(cls) -> bytes:
        return load_vector(REAL_SAMPLE)

    @pytest.fixture
    def emulated(self, nsm) -> bytes:
        ones = b"\x01" * 1024  # what the real sample carries in each optional field
        return nsm.attestation_document(public_key=ones, user_data=ones, nonce=ones)

    def test_cose_structure(self, real, emulated):
        for document in (real, emulated):
            outer = cbor2.loads(document)
            assert document[0] == 0x84  # an untagged array of four
            assert isinstance(outer, list) and len(outer) == 4
            assert outer[0] == bytes.fromhex("a1013822")  # {1: -35}, ES384
            assert outer[1] == {}
            assert isinstance(outer[2], bytes)
            assert isinstance(outer[3], bytes) and len(outer[3]) == 96
        assert cbor2.loads(real)[0] == cbor2.loads(emulated)[0]

    def test_payload_keys_order_and_types(self, real, emulated):
        _, real_payload = _decode(real)
        _, emulated_payload = _decode(emulated)
        assert list(emulated_payload) == list(real_payload) == [
            "module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce",
        ]
        assert {k: type(v) for k, v in emulated_payload.items()} == {k: type(v) for k, v in real_payload.items()}
        assert emulated_payload["digest"] == real_payload["digest"] == "SHA384"
        for payload in (real_payload, emulated_payload):
            assert list(payload["pcrs"]) == list(range(16))
            assert all(isinstance(v, bytes) and len(v) == 48 for v in payload["pcrs"].values())
            assert len(payload["cabundle"]) == 4 and all(isinstance(c, bytes) for c in payload["cabundle"])

    def test_cabundle_is_a_chain_root_first(self, real, emulated, pki):
        for document in (real, emulated):
            _, payload = _decode(document)
            certs = [x509.load_der_x509_certificate(der) for der in payload["cabundle"]]
            certs.append(x509.load_der_x509_certificate(payload["certificate"]))
            assert certs[0].subject == certs[0].issuer  # self-signed root first
            for issuer, subject in zip(certs, certs[1:]):
                assert subject.issuer == issuer.subject
                subject.verify_directly_issued_by(issuer)
        assert _decode(emulated)[1]["cabundle"][0] == pki.root.der

    def test_ca_path_lengths(self, real, emulated):
        assert _path_lengths(_decode(real)[1]["cabundle"]) == [None, 2, 1, 0]
        assert _path_lengths(_decode(emulated)[1]["cabundle"]) == [None, 2, 1, 0]

    def test_leaf_certificate(self, real, emulated):
        for document in (real, emulated):
            leaf = x509.load_der_x509_certificate(_decode(document)[1]["certificate"])
            assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA384
            public_key = leaf.public_key()
            assert isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP384R1)
            with pytest.raises(x509.ExtensionNotFound):
                leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
            assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
            assert dt.timedelta(hours=2, minutes=55) <= _lifetime(leaf) <= dt.timedelta(hours=3, minutes=5)


# --- through the device: NsmDeviceServer and the enclave's client -----------------------------


def send_raw(sock: socket.socket, body: bytes) -> object:
    sock.sendall(_LENGTH.pack(len(body)) + body)
    return cbor.loads(read_frame(sock))


def read_frame(sock: socket.socket) -> bytes:
    (length,) = _LENGTH.unpack(_recv_exactly(sock, 4))
    return _recv_exactly(sock, length)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "device closed the connection"
        data += chunk
    return data


class TestDevice:
    def test_typed_calls(self, client, pki, launch_pcrs):
        described = client.describe_nsm()
        assert described["max_pcrs"] == 32 and described["locked_pcrs"] == list(range(16))
        assert described["module_id"] == MODULE_ID
        assert len(client.get_random()) >= 32
        assert client.describe_pcr(0) == (True, launch_pcrs[0])
        assert client.describe_pcr(16) == (False, ZERO)
        extended = client.extend_pcr(16, b"config")
        assert extended == hashlib.sha384(ZERO + b"config").digest() == extend(ZERO, b"config")
        assert client.describe_pcr(16) == (False, extended)
        assert client.lock_pcr(16) is None
        assert client.describe_pcr(16) == (True, extended)
        assert client.lock_pcrs(18) is None
        assert client.describe_pcr(17)[0] is True and client.describe_pcr(18)[0] is False
        document = client.attestation(public_key=b"spki", user_data=b"u", nonce=b"fresh")
        doc = verify(document, roots=[pki.root_pem], nonce=b"fresh", expected_pcrs={0: launch_pcrs[0]})
        assert (doc.public_key, doc.user_data) == (b"spki", b"u")

    @pytest.mark.parametrize(
        ("method", "args", "code"),
        [
            ("describe_pcr", (32,), "InvalidIndex"),
            ("lock_pcr", (-1,), "InvalidIndex"),
            ("lock_pcrs", (33,), "InvalidIndex"),
            ("extend_pcr", (0, b"x"), "ReadOnlyIndex"),
            ("extend_pcr", (16, bytes(1025)), "InputTooLarge"),
            ("extend_pcr", (16, "not bytes"), "InvalidArgument"),
        ],
    )
    def test_device_errors(self, client, method, args, code):
        with pytest.raises(NsmError, match=code) as info:
            getattr(client, method)(*args)
        assert info.value.code == code
        assert client.describe_nsm()["max_pcrs"] == 32  # still serving

    def test_lock_then_extend_through_the_device(self, client):
        client.lock_pcr(21)
        with pytest.raises(NsmError) as info:
            client.extend_pcr(21, b"late")
        assert info.value.code == "ReadOnlyIndex"

    def test_client_refuses_oversized_optional_fields(self, client):
        with pytest.raises(ValueError, match="user_data"):
            client.attestation(user_data=bytes(1025))

    def test_request_over_the_device_limit(self, client):
        # Like IoctlDevice, SocketDevice refuses before sending; the connection stays usable.
        with pytest.raises(NsmError) as info:
            client.extend_pcr(16, bytes(REQUEST_MAX))
        assert info.value.code == "InputTooLarge"
        assert client.describe_pcr(16) == (False, ZERO)

    @pytest.mark.parametrize(
        "garbage",
        [
            b"",
            b"\xff",
            b"\x1c",  # reserved additional information
            cbor2.dumps("DescribeNSM") + b"\x00",  # trailing bytes
            cbor2.dumps(cbor2.CBORTag(18, "DescribeNSM")),  # a tag
            bytes.fromhex("a2616101616101"),  # duplicate map keys
        ],
    )
    def test_garbage_cbor_gets_invalid_argument_and_the_server_keeps_serving(self, device, garbage):
        server, sock = device
        assert send_raw(sock, garbage) == {"Error": "InvalidArgument"}
        assert send_raw(sock, cbor2.dumps("DescribeNSM"))["DescribeNSM"]["max_pcrs"] == 32
        assert send_raw(sock, cbor2.dumps({"DescribePCR": {"index": 16}})) == {"DescribePCR": {"lock": False, "data": ZERO}}

    def test_oversized_frame_is_refused_and_the_connection_closed(self, device):
        server, sock = device
        sock.sendall(_LENGTH.pack(REQUEST_MAX + 1))
        assert cbor.loads(read_frame(sock)) == {"Error": "InputTooLarge"}
        # The server cannot resynchronise; it says so by closing rather than leaving the peer hanging.
        assert sock.recv(1) == b""

    def test_peer_closing_ends_the_server(self, nsm):
        server_end, client_end = socket.socketpair()
        server = NsmDeviceServer(nsm, server_end).start()
        try:
            client_end.close()
            server._thread.join(_DEVICE_TIMEOUT)
            assert not server._thread.is_alive()
        finally:
            server.stop()

    @pytest.mark.parametrize("choose", [INDEFINITE, top_level_map_indefinite], ids=["all-indefinite", "outer-map"])
    @pytest.mark.parametrize("wide", [NARROW, lambda: True], ids=["narrow", "wide-heads"])
    def test_the_device_reads_any_encoding_of_a_request(self, device, choose, wide):
        server, sock = device
        request = encode({"DescribePCR": {"index": 16}}, choose, wide=wide)
        assert request != cbor2.dumps({"DescribePCR": {"index": 16}})
        assert send_raw(sock, request) == {"DescribePCR": {"lock": False, "data": ZERO}}
        assert send_raw(sock, encode({"Attestation": {"nonce": b"n"}}, choose, wide=wide))["Attestation"]["document"]

    def test_attestation_through_the_device_with_1024_byte_fields(self, client, pki):
        ones = b"\x01" * 1024
        document = client.attestation(public_key=ones, user_data=ones, nonce=ones)
        doc = verify(document, roots=[pki.root_pem])
        assert doc.public_key == doc.user_data == doc.nonce == ones


class _ScriptedDevice:
    """A peer that answers each request frame with the next of ``responses`` (raw bytes).

    Stands in for /dev/nsm's reply encoding, which the emulator's device does not vary: AWS's
    encoders have used both definite and indefinite lengths, and the enclave's client must read both.
    """

    def __init__(self, responses: list[bytes]) -> None:
        self.responses = list(responses)
        self.server_end, self.client_end = socket.socketpair()
        self.client_end.settimeout(_DEVICE_TIMEOUT)
        self.server_end.settimeout(_DEVICE_TIMEOUT)

    def __enter__(self) -> Nsm:
        import threading

        def serve() -> None:
            try:
                for response in self.responses:
                    read_frame(self.server_end)
                    self.server_end.sendall(_LENGTH.pack(len(response)) + response)
            except (AssertionError, OSError):
                return  # the client went away early (its test failed): nothing more to answer

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        return Nsm(SocketDevice(self.client_end))

    def __exit__(self, *exc: object) -> None:
        self.client_end.close()
        self.thread.join(_DEVICE_TIMEOUT)
        self.server_end.close()


class TestClientReadsEveryEncoding:
    DESCRIBED = {
        "DescribeNSM": {
            "version_major": 1, "version_minor": 0, "version_patch": 0, "module_id": MODULE_ID,
            "max_pcrs": 32, "locked_pcrs": list(range(16)), "digest": "SHA384",
        }
    }

    @pytest.mark.parametrize("choose", [DEFINITE, top_level_map_indefinite, INDEFINITE], ids=["definite", "outer-map", "all"])
    def test_responses_with_definite_or_indefinite_lengths(self, choose):
        responses = [encode(self.DESCRIBED, choose), encode({"DescribePCR": {"lock": True, "data": bytes(48)}}, choose, chunk=5)]
        with _ScriptedDevice(responses) as client:
            assert client.describe_nsm() == self.DESCRIBED["DescribeNSM"]
            assert client.describe_pcr(0) == (True, bytes(48))

    @pytest.mark.parametrize(
        "response",
        [
            bytes.fromhex("bf 65 4572726f72 6c 496e76616c6964496e646578 65 4572726f72 6c 496e76616c6964496e646578 ff"),  # duplicate key
            bytes.fromhex("bf 65 4572726f72 6c 496e76616c6964496e646578 ff 00"),  # trailing byte
            bytes.fromhex("bf 65 4572726f72 6c 496e76616c6964496e646578"),  # no break
            bytes.fromhex("bf 65 4572726f72 c1 00 ff"),  # a tag
        ],
        ids=["duplicate", "trailing", "unterminated", "tag"],
    )
    def test_malformed_indefinite_responses_are_refused(self, response):
        with _ScriptedDevice([response]) as client:
            with pytest.raises(NsmError, match="malformed NSM response"):
                client.describe_pcr(0)


# --- measure -----------------------------------------------------------------------------------


class TestMeasure:
    @pytest.fixture
    def image(self, tmp_path) -> Path:
        return _write_image(tmp_path / "image")

    def pcrs(self, image: Path, argv=ARGV, env=ENV, **kwargs) -> dict[int, bytes]:
        kwargs.setdefault("role_arn", ROLE_ARN)
        kwargs.setdefault("instance_id", INSTANCE_ID)
        return measure(image, list(argv), dict(env), **kwargs)

    def test_shape_and_determinism(self, image):
        pcrs = self.pcrs(image)
        assert sorted(pcrs) == list(range(16))
        assert all(len(value) == 48 for value in pcrs.values())
        assert all(pcrs[i] != ZERO for i in (0, 1, 2, 3, 4))
        assert all(pcrs[i] == ZERO for i in range(5, 16))  # PCR8 included: images are not signed
        assert self.pcrs(image) == pcrs

    def test_changing_a_file_changes_pcr0_and_pcr2_only(self, image):
        before = self.pcrs(image)
        (image / "pkg" / "app.py").write_text("def run():\n    return 'withdraw'\n")
        after = self.pcrs(image)
        assert after[0] != before[0] and after[2] != before[2]
        assert after[1] == before[1] and after[3] == before[3] and after[4] == before[4]

    @pytest.mark.parametrize("name", ["extra.py", "pkg/data.json", "pkg/sub/deep.txt", ".hidden"])
    def test_adding_a_file_changes_pcr0_and_pcr2(self, image, name):
        before = self.pcrs(image)
        (image / name).parent.mkdir(parents=True, exist_ok=True)
        (image / name).write_text("")
        after = self.pcrs(image)
        assert after[0] != before[0] and after[2] != before[2] and after[1] == before[1]

    def test_renaming_a_file_changes_pcr0(self, image):
        before = self.pcrs(image)
        (image / "pkg" / "app.py").rename(image / "pkg" / "app2.py")
        assert self.pcrs(image)[0] != before[0]

    def test_file_boundaries_are_unambiguous(self, tmp_path):
        first, second = tmp_path / "a", tmp_path / "b"
        first.mkdir(), second.mkdir()
        (first / "ab").write_text("c")
        (second / "a").write_text("bc")
        assert self.pcrs(first)[0] != self.pcrs(second)[0]

    def test_bytecode_caches_are_not_measured(self, image):
        before = self.pcrs(image)
        (image / "pkg" / "__pycache__").mkdir()
        (image / "pkg" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\x00" * 16)
        (image / "stray.pyc").write_bytes(b"\x00")
        assert self.pcrs(image) == before

    @pytest.mark.parametrize(
        "argv",
        [[*ARGV, "--debug-signing"], ARGV[:-1], ["python", "-I", "<image>", "--listen", "vsock://16:5001"]],
    )
    def test_argv_changes_pcr0_not_pcr1_pcr2(self, image, argv):
        before, after = self.pcrs(image), self.pcrs(image, argv=argv)
        assert after[0] != before[0]
        assert (after[1], after[2]) == (before[1], before[2])

    @pytest.mark.parametrize("env", [{**ENV, "ZEROCOPY_CLOCK": "2025-01-01"}, {"LANG": "C.UTF-8"}, {**ENV, "LANG": "C"}])
    def test_env_changes_pcr0_not_pcr1_pcr2(self, image, env):
        before, after = self.pcrs(image), self.pcrs(image, env=env)
        assert after[0] != before[0]
        assert (after[1], after[2]) == (before[1], before[2])

    def test_env_order_does_not_matter(self, image):
        assert self.pcrs(image, env={"A": "1", "B": "2"}) == self.pcrs(image, env={"B": "2", "A": "1"})

    def test_pcr1_depends_on_the_runtime_only(self, image, tmp_path, monkeypatch):
        other = _write_image(tmp_path / "other")
        (other / "more.py").write_text("x = 1\n")
        base = self.pcrs(image)
        assert self.pcrs(other, argv=["other"], env={}, role_arn="arn:aws:iam::1:role/x", instance_id="i-1")[1] == base[1]
        monkeypatch.setattr(emulator.measure, "DEPENDENCIES", (*emulator.measure.DEPENDENCIES, "hypothesis"))
        changed = self.pcrs(image)
        assert changed[1] != base[1]
        assert (changed[0], changed[2]) == (base[0], base[2])

    def test_pcr3_and_pcr4_are_role_and_instance(self, image):
        base = self.pcrs(image)
        role = self.pcrs(image, role_arn="arn:aws:iam::123456789012:role/other")
        instance = self.pcrs(image, instance_id="i-0fedcba9876543210")
        assert role[3] != base[3] and role[4] == base[4]
        assert instance[4] != base[4] and instance[3] == base[3]
        assert role[0] == base[0] == instance[0]

    def test_pcr3_and_pcr4_are_contiguous_measurements_without_an_inner_hash(self, image):
        # As on Nitro: SHA-384(48 zero bytes || the bytes themselves), computed here with hashlib alone.
        pcrs = self.pcrs(image)
        assert pcrs[3] == hashlib.sha384(bytes(48) + ROLE_ARN.encode()).digest()
        assert pcrs[4] == hashlib.sha384(bytes(48) + INSTANCE_ID.encode()).digest()

    def test_extend(self):
        assert extend(ZERO, b"abc") == hashlib.sha384(bytes(48) + b"abc").digest()
        assert extend(extend(ZERO, b"a"), b"b") != extend(extend(ZERO, b"b"), b"a")  # order matters
        assert extend(extend(ZERO, b"a"), b"b") != extend(ZERO, b"ab")  # so do boundaries
        assert len(extend(ZERO, b"")) == 48

    def test_model_extend_matches_measure_extend(self, nsm):
        value = ZERO
        for data in (b"one", b"two", b""):
            value = extend(value, data)
            assert call(nsm, "ExtendPCR", index=30, data=data) == {"ExtendPCR": {"data": value}}
