"""Issue 8, item 4: the attestation was not tied to the connection.

The attack as it worked: the host puts a fake enclave (a process on its own Unix socket — on Nitro,
its own vsock listener) where the bot connects. The fake relays ``ATTEST`` to the real enclave, so
``Signer(expected_pcrs=…, roots=…)`` verifies a genuine, fresh document, and then answers ``SIGN``
itself; the Signer returned the fake's bytes. Now the Signer opens an attested session: the
document binds the bot's nonce and both ephemeral X25519 keys, and every later frame is sealed
(AES-256-GCM with a per-direction counter), so a relay can forward the handshake but nothing it
forges, replays, splices or injects afterwards is accepted — by either side. Each failure is a
typed error and the connection is closed.

Every attack below is a real man-in-the-middle thread on its own Unix socket in front of the real
emulated enclave. The relay speaks raw frames (type codes written out) so that it runs unchanged
against the code before the fix, where each of these tests fails because the attack succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest

from zerocopy import Signer, ZeroCopyError
from zerocopy import errors
from zerocopy.attestation import AttestationError, NonceMismatch, PCRMismatch
from zerocopy.sealing import seal

pytestmark = pytest.mark.zerocopy

HEADER = struct.Struct(">IBBI")  # length, version, type, request id (docs/protocol.md)
VERSION = 1
SIGN, SIGN_HTTP, SIGNATURE, HTTP_SIGNATURE, ERROR = 0x01, 0x02, 0x81, 0x82, 0x7F
OPEN_SESSION, SESSION = 0x15, 0x95
FORGED = b"forged-by-the-host-" + bytes(13)
FORGED_QUERY = b"symbol=SCAMUSDT&side=BUY&signature=forged"


def _read_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _read_frame(sock: socket.socket) -> tuple[bytes, int, int]:
    header = _read_exact(sock, HEADER.size)
    length, _, type_code, request_id = HEADER.unpack(header)
    return header + _read_exact(sock, length), type_code, request_id


def _frame(type_code: int, request_id: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), VERSION, type_code, request_id) + body


def _with_request_id(frame: bytes, request_id: int) -> bytes:
    length, version, type_code, _ = HEADER.unpack_from(frame)
    return HEADER.pack(length, version, type_code, request_id) + frame[HEADER.size :]


def _forged_answer(type_code: int, request_id: int) -> bytes:
    if type_code == SIGN_HTTP:
        return _frame(HTTP_SIGNATURE, request_id, struct.pack(">III", len(FORGED_QUERY), 0, 0) + FORGED_QUERY)
    return _frame(SIGNATURE, request_id, FORGED)


class Relay:
    """A fake enclave in front of the real one: ``on_frame(frame, type, id, upstream)`` returns the
    bytes to answer the bot with (it may relay to the real enclave through ``upstream``)."""

    def __init__(self, upstream_address: str, on_frame: Callable[..., bytes]) -> None:
        self.upstream_path = upstream_address.removeprefix("unix://")
        self.on_frame = on_frame
        self._dir = tempfile.mkdtemp(prefix="zc-mitm-")
        self.address = f"unix://{self._dir}/fake-enclave.sock"
        self.counts: dict[str, int] = {"relayed": 0, "forged": 0, "connections": 0}
        self.state: dict = {}
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.address.removeprefix("unix://"))
        self._listener.listen(8)
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name="mitm-accept")
        self._accepting.start()

    def upstream(self, address: str | None = None) -> socket.socket:
        """A connection to the real enclave (or to ``address``), closed with the relay."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(address.removeprefix("unix://") if address else self.upstream_path)
        self._sockets.append(sock)
        return sock

    def relay(self, upstream: socket.socket, frame: bytes) -> bytes:
        upstream.sendall(frame)
        self.counts["relayed"] += 1
        return _read_frame(upstream)[0]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.counts["connections"] += 1
            self._sockets.append(client)
            thread = threading.Thread(target=self._serve, args=(client,), name="mitm-conn")
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(EOFError, OSError):
            upstream = self.upstream()
            while True:
                frame, type_code, request_id = _read_frame(client)
                client.sendall(self.on_frame(frame, type_code, request_id, upstream))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(10)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(10)
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def relay(upstream_address: str, on_frame: Callable[..., bytes]) -> Iterator[Relay]:
    fake = Relay(upstream_address, on_frame)
    try:
        yield fake
    finally:
        fake.close()


def _attested(emulator, address: str, **kwargs) -> Signer:
    return Signer(address, expected_pcrs={0: emulator.pcrs[0]}, roots=[emulator.root_certificate], **kwargs)


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except ZeroCopyError as exc:
        return exc


def _sign_once(connect: Callable[[], Signer], key: str, payload: bytes) -> object:
    """Connect (attesting, as configured), sign once, close: the signature or the typed error."""
    try:
        with connect() as signer:
            return signer.sign(key, payload)
    except ZeroCopyError as exc:
        return exc


@pytest.fixture(scope="module")
def victim_key(zerocopy_key):
    return zerocopy_key("hmac-sha256", name="session-victim")


@pytest.fixture(scope="module")
def victim_exchange_key(zerocopy_key):
    return zerocopy_key("binance-hmac", name="session-victim-binance", policy={"freshness": {"enabled": False}})


def _expected(key, payload: bytes) -> bytes:
    return hmac.new(key.secret, payload, hashlib.sha256).digest()


# -- the attack from the issue -------------------------------------------------------------------
def test_a_fake_enclave_relaying_the_attestation_and_answering_sign_itself_is_refused(zerocopy_emulator, victim_key, victim_exchange_key):
    def forge(frame, type_code, request_id, upstream):
        if type_code in (SIGN, SIGN_HTTP):
            fake.counts["forged"] += 1
            return _forged_answer(type_code, request_id)
        return fake.relay(upstream, frame)  # ATTEST / OPEN_SESSION go to the real enclave

    with relay(zerocopy_emulator.address, forge) as fake, _attested(zerocopy_emulator, fake.address) as signer:
        assert fake.counts["relayed"] >= 1  # the real enclave attested, through the fake
        outcomes = [
            _outcome(lambda: signer.sign(victim_key.name, b"an order")),
            _outcome(lambda: signer.sign_request(victim_exchange_key.name, "POST", "/api/v3/order", params={"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"})),
            _outcome(lambda: signer.sign_many([(victim_key.name, b"one"), (victim_key.name, b"two")])),
        ]
    assert fake.counts["forged"] >= 3
    for outcome in outcomes:
        assert outcome != FORGED and outcome != [FORGED, FORGED], "the Signer returned the fake enclave's bytes"
        assert not hasattr(outcome, "query"), "the Signer returned the fake enclave's signed request"
        assert isinstance(outcome, errors.SessionError), outcome
    assert not signer.attested  # closed, not trusted any further


def test_a_fake_enclave_running_its_own_handshake_with_the_real_one_is_refused_before_anything_is_sent(zerocopy_emulator, victim_key):
    """The relay terminates the bot's session itself: it opens its own session with the real
    enclave (reusing the bot's nonce), and hands the bot the genuine document next to a key of its
    own. The document binds the relay's keys, not the bot's: refused at connect."""

    def terminate(frame, type_code, request_id, upstream):
        if type_code == OPEN_SESSION:
            import cbor2

            from enclave.protocol import session as session_crypto

            wanted = cbor2.loads(frame[HEADER.size :])
            mine = session_crypto.ClientHandshake(nonce=wanted["nonce"])
            answer = cbor2.loads(fake.relay(upstream, _frame(OPEN_SESSION, request_id, cbor2.dumps(mine.fields())))[HEADER.size :])
            toward_bot = session_crypto.accept(wanted)  # the relay plays the enclave to the bot
            fake.state["session"] = toward_bot.session
            return _frame(SESSION, request_id, cbor2.dumps({"public_key": toward_bot.public_key, "document": answer["document"]}))
        if type_code in (SIGN, SIGN_HTTP):
            fake.counts["forged"] += 1
            answer = _forged_answer(type_code, request_id)
            toward_bot = fake.state.get("session")
            return toward_bot.seal_frame(answer) if toward_bot else answer
        return fake.relay(upstream, frame)

    with relay(zerocopy_emulator.address, terminate) as fake:
        outcome = _sign_once(lambda: _attested(zerocopy_emulator, fake.address), victim_key.name, b"an order")
    assert outcome != FORGED, "the Signer returned the fake enclave's bytes"
    assert isinstance(outcome, NonceMismatch), outcome
    assert fake.counts["forged"] == 0  # nothing was sent after the handshake


def test_a_genuine_answer_replayed_for_another_request_is_refused(zerocopy_emulator, victim_key):
    """The relay forwards the first signature honestly, then answers later requests with that
    genuine answer again (its request id rewritten)."""

    def replay(frame, type_code, request_id, upstream):
        if type_code == SIGN and "recorded" in fake.state:
            fake.counts["forged"] += 1
            return _with_request_id(fake.state["recorded"], request_id)
        answer = fake.relay(upstream, frame)
        if type_code == SIGN:
            fake.state["recorded"] = answer
        return answer

    with relay(zerocopy_emulator.address, replay) as fake, _attested(zerocopy_emulator, fake.address) as signer:
        first = signer.sign(victim_key.name, b"buy 1")
        second = _outcome(lambda: signer.sign(victim_key.name, b"sell 100"))
    assert first == _expected(victim_key, b"buy 1")  # an honest relay is just transport
    assert fake.counts["forged"] == 1
    assert second != first, "the Signer returned a replayed signature for another payload"
    assert isinstance(second, errors.SessionError), second


def test_signing_spliced_onto_another_genuine_enclave_is_refused(zerocopy_emulator, victim_key):
    """The host runs a second enclave of the same image (same PCR0), loads a key of its own under
    the victim's key name, and splices the bot's signing traffic onto it after the real enclave
    attested."""
    other_kms_key = zerocopy_emulator.kms.create_key(Description="the host's own")["KeyMetadata"]["Arn"]
    hosts_secret = b"the-host-knows-this-secret"
    bundle = seal(zerocopy_emulator.kms, key_id=other_kms_key, name=victim_key.name, scheme="hmac-sha256", secret=hosts_secret)
    with zerocopy_emulator.launch() as other:
        assert other.pcrs[0] == zerocopy_emulator.pcrs[0]  # a genuine enclave of the same image
        with Signer(other.address) as host:
            assert host.provision([bundle.to_json()], credentials=zerocopy_emulator.credentials)[0].loaded

        def splice(frame, type_code, request_id, upstream):
            if type_code in (SIGN, SIGN_HTTP):
                if "other" not in fake.state:
                    fake.state["other"] = fake.upstream(other.address)
                fake.counts["forged"] += 1
                return fake.relay(fake.state["other"], frame)
            return fake.relay(upstream, frame)

        with relay(zerocopy_emulator.address, splice) as fake:
            outcome = _sign_once(lambda: _attested(zerocopy_emulator, fake.address), victim_key.name, b"an order")
    assert fake.counts["forged"] >= 1
    assert outcome != hmac.new(hosts_secret, b"an order", hashlib.sha256).digest(), "the Signer returned a signature by the host's key"
    assert isinstance(outcome, errors.SessionError), outcome


def test_a_request_injected_into_the_bots_session_is_not_executed(zerocopy_emulator, victim_key):
    """The relay forwards the bot's traffic honestly but slips a SIGN of its own into the bot's
    connection to the enclave: the enclave refuses to open it, answers SESSION_FAILED (sealed, so
    the bot learns it) and closes the connection."""
    injected: list[bytes] = []

    def inject(frame, type_code, request_id, upstream):
        if type_code == SIGN and not injected:
            upstream.sendall(_frame(SIGN, 0xBAD, bytes([len(victim_key.name)]) + victim_key.name.encode() + b"the host's payload"))
            injected.append(_read_frame(upstream)[0])  # what the enclave answered the host
            with contextlib.suppress(OSError):
                upstream.sendall(frame)  # and then the bot's own request
            try:
                return _read_frame(upstream)[0]
            except (EOFError, OSError):
                return injected[0]  # the enclave closed: pass on its last word
        return fake.relay(upstream, frame)

    with relay(zerocopy_emulator.address, inject) as fake, _attested(zerocopy_emulator, fake.address) as signer:
        outcome = _outcome(lambda: signer.sign(victim_key.name, b"the bot's payload"))
    assert injected, "the relay did not get to inject"
    answer = injected[0]
    assert _expected(victim_key, b"the host's payload") not in answer, "the enclave signed the host's injected request"
    assert answer[5] == ERROR, "the enclave answered the injected SIGN with something other than an error"
    assert isinstance(outcome, errors.SessionError), outcome  # the bot learns its connection was closed on it


def test_a_tampered_answer_is_refused(zerocopy_emulator, victim_key):
    def flip(frame, type_code, request_id, upstream):
        answer = bytearray(fake.relay(upstream, frame))
        if type_code == SIGN:
            answer[-1] ^= 0x01  # one bit of the signature (or of the tag)
            fake.counts["forged"] += 1
        return bytes(answer)

    with relay(zerocopy_emulator.address, flip) as fake, _attested(zerocopy_emulator, fake.address) as signer:
        outcome = _outcome(lambda: signer.sign(victim_key.name, b"an order"))
    assert fake.counts["forged"] == 1
    assert not isinstance(outcome, bytes), "the Signer returned an altered signature"
    assert isinstance(outcome, errors.SessionError), outcome


# -- the bot's configuration ---------------------------------------------------------------------
def test_signer_from_env_attests_when_the_environment_pins_pcr0(zerocopy_emulator, victim_key, monkeypatch, tmp_path):
    """``Signer.from_env()`` is what the README's bots use: with ZEROCOPY_EXPECTED_PCR0 set it
    attests (and opens a session), so the fake enclave gets nowhere with it either."""
    root = tmp_path / "root.pem"
    root.write_bytes(zerocopy_emulator.root_certificate)
    monkeypatch.setenv("ZEROCOPY_ATTESTATION_ROOT", str(root))
    monkeypatch.setenv("ZEROCOPY_EXPECTED_PCR0", zerocopy_emulator.pcrs[0].hex())

    def forge(frame, type_code, request_id, upstream):
        if type_code in (SIGN, SIGN_HTTP):
            return _forged_answer(type_code, request_id)
        return fake.relay(upstream, frame)

    with relay(zerocopy_emulator.address, forge) as fake:
        monkeypatch.setenv("ZEROCOPY_ENCLAVE", fake.address)
        outcome = _sign_once(Signer.from_env, victim_key.name, b"an order")
    assert outcome != FORGED, "Signer.from_env() returned the fake enclave's bytes"
    assert isinstance(outcome, errors.SessionError), outcome

    monkeypatch.setenv("ZEROCOPY_ENCLAVE", zerocopy_emulator.address)
    with Signer.from_env() as signer:
        assert signer.attested and signer.attestation.pcrs[0] == zerocopy_emulator.pcrs[0]
        assert signer.sign(victim_key.name, b"direct") == _expected(victim_key, b"direct")
    monkeypatch.setenv("ZEROCOPY_EXPECTED_PCR0", (bytes(47) + b"\x01").hex())
    with pytest.raises(PCRMismatch):
        Signer.from_env()
    monkeypatch.setenv("ZEROCOPY_EXPECTED_PCR0", "not hex")
    with pytest.raises(ZeroCopyError, match="ZEROCOPY_EXPECTED_PCR0"):
        Signer.from_env()


def test_an_attested_session_survives_an_enclave_restart_and_keeps_signing(zerocopy_emulator, pinned_bundle):
    """Reconnecting (after the enclave restarted) opens a new attested session by itself."""
    with zerocopy_emulator.launch() as enclave:
        with Signer(enclave.address, expected_pcrs={0: enclave.pcrs[0]}, roots=[zerocopy_emulator.root_certificate]) as signer:
            first_document = signer.attestation
            assert signer.provision([pinned_bundle.to_json()], credentials=zerocopy_emulator.credentials)[0].loaded
            before = signer.sign("session-restart", b"x")
            enclave.restart()
            with pytest.raises(errors.UnknownKey):
                signer.sign("session-restart", b"x")
            assert signer.attested and signer.attestation is not first_document
            assert signer.attestation.nonce != first_document.nonce  # a new handshake, a new binding
            assert signer.provision([pinned_bundle.to_json()], credentials=zerocopy_emulator.credentials)[0].loaded
            assert signer.sign("session-restart", b"x") == before


@pytest.fixture(scope="module")
def pinned_bundle(zerocopy_emulator):
    import json

    from zerocopy.kms_policy import attested_key_policy

    policy = attested_key_policy(zerocopy_emulator.account_id, image_sha384=zerocopy_emulator.pcrs[0])
    key = zerocopy_emulator.kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
    return seal(zerocopy_emulator.kms, key_id=key, name="session-restart", scheme="hmac-sha256", secret=os.urandom(32))


def test_an_unattested_signer_stays_plain_and_says_so(zerocopy_emulator, victim_key):
    """Without expected_pcrs/roots nothing is attested and nothing is sealed (docs/protocol.md):
    the relay's forgery goes through. That is the documented limit of an unattested Signer."""

    def forge(frame, type_code, request_id, upstream):
        return _forged_answer(type_code, request_id) if type_code == SIGN else fake.relay(upstream, frame)

    with relay(zerocopy_emulator.address, forge) as fake, Signer(fake.address) as signer:
        assert not signer.attested
        assert signer.sign(victim_key.name, b"x") == FORGED


def test_attestation_errors_stay_typed(zerocopy_emulator):
    with pytest.raises(AttestationError):
        Signer(zerocopy_emulator.address, expected_pcrs={0: bytes(48)}, roots=[zerocopy_emulator.root_certificate])


def test_a_relay_that_has_the_real_enclave_attest_its_own_binding_is_refused(zerocopy_emulator, victim_key):
    """Found by review: ATTEST puts any nonce the host asks for into a genuine document. The relay
    answers the bot's OPEN_SESSION with a key pair of its own, asks the real enclave to ATTEST the
    binding over that key, and hands the bot the genuine document: its nonce matches, its PCRs
    match. Only user_data, which the host never chooses, tells an ATTEST document from a session's."""
    import cbor2

    from enclave.protocol import session as session_crypto

    ATTEST, ATTESTATION = 0x10, 0x90

    def impersonate(frame, type_code, request_id, upstream):
        if type_code == OPEN_SESSION:
            toward_bot = session_crypto.accept(cbor2.loads(frame[HEADER.size :]))  # the relay's own keys
            attested = fake.relay(upstream, _frame(ATTEST, 77, cbor2.dumps({"nonce": toward_bot.binding})))
            assert attested[5] == ATTESTATION  # the real enclave attested the relay's binding
            fake.state["session"] = toward_bot.session
            document = cbor2.loads(attested[HEADER.size :])["document"]
            return _frame(SESSION, request_id, cbor2.dumps({"public_key": toward_bot.public_key, "document": document}))
        toward_bot = fake.state["session"]
        fake.counts["forged"] += 1
        return toward_bot.seal_frame(_forged_answer(type_code, request_id))

    with relay(zerocopy_emulator.address, impersonate) as fake:
        outcome = _sign_once(lambda: _attested(zerocopy_emulator, fake.address), victim_key.name, b"an order")
    assert outcome != FORGED, "the Signer accepted a session the relay holds the keys of"
    assert isinstance(outcome, errors.SessionError) and "user_data" in str(outcome), outcome
    assert fake.counts["forged"] == 0  # refused at connect: nothing was sent for the relay to read


# -- attesting without a pinned PCR0 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def other_image(zerocopy_emulator, tmp_path_factory):
    """An enclave running the host's own code: a genuine document under the same root, another PCR0."""
    import enclave as enclave_package

    source = tmp_path_factory.mktemp("other-image") / "enclave"
    shutil.copytree(os.path.dirname(enclave_package.__file__), source, ignore=shutil.ignore_patterns("__pycache__"))
    with open(source / "service.py", "a") as file:
        file.write("\n# the host's own code: it could sign anything, log every request\n")
    with zerocopy_emulator.launch(enclave_dir=source) as enclave:
        assert enclave.pcrs[0] != zerocopy_emulator.pcrs[0]
        yield enclave


def _configuration_error() -> type[Exception]:
    return getattr(errors, "ConfigurationError", ZeroCopyError)  # so the test also runs against the code before the fix


def test_roots_without_a_pinned_pcr0_are_refused_rather_than_any_image_accepted(zerocopy_emulator, other_image):
    """The attack as found: ``Signer(roots=…)`` with no ``expected_pcrs`` opened a session with an
    enclave running the host's own code and reported ``attested == True``."""
    roots = [zerocopy_emulator.root_certificate]
    for pins in (None, {}, {1: other_image.pcrs[1]}):  # nothing pinned, an empty pin, no PCR0
        try:
            outcome: object = Signer(other_image.address, expected_pcrs=pins, roots=roots)
        except (ValueError, ZeroCopyError) as exc:
            outcome = exc
        if isinstance(outcome, Signer):
            outcome.close()
        assert not isinstance(outcome, Signer), f"attested a session with another image (expected_pcrs={pins})"
        assert isinstance(outcome, ValueError) and "expected_pcrs must pin PCR0" in str(outcome), outcome
    with pytest.raises(PCRMismatch):  # PCR0 pinned: the host's image is refused
        Signer(other_image.address, expected_pcrs={0: zerocopy_emulator.pcrs[0]}, roots=roots)


def test_signer_from_env_with_a_root_but_no_pcr0_is_a_configuration_error(zerocopy_emulator, other_image, monkeypatch, tmp_path):
    """``Signer.from_env()`` with only ZEROCOPY_ATTESTATION_ROOT set attested any image too."""
    root = tmp_path / "root.pem"
    root.write_bytes(zerocopy_emulator.root_certificate)
    monkeypatch.setenv("ZEROCOPY_ENCLAVE", other_image.address)
    monkeypatch.setenv("ZEROCOPY_ATTESTATION_ROOT", str(root))
    monkeypatch.delenv("ZEROCOPY_EXPECTED_PCR0", raising=False)
    outcome = _outcome(Signer.from_env)
    if isinstance(outcome, Signer):
        outcome.close()
    assert not isinstance(outcome, Signer), "Signer.from_env() attested the host's image"
    assert isinstance(outcome, _configuration_error()) and "Set ZEROCOPY_EXPECTED_PCR0 to your image's PCR0" in str(outcome), outcome
    monkeypatch.setenv("ZEROCOPY_ATTESTATION_ROOT", "")  # set but empty: not "the AWS root" by accident
    with pytest.raises(_configuration_error(), match="ZEROCOPY_ATTESTATION_ROOT is set but empty"):
        Signer.from_env()


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"ZEROCOPY_EXPECTED_PCR0": ""}, "ZEROCOPY_EXPECTED_PCR0 must be a SHA-384 measurement"),
        ({"ZEROCOPY_EXPECTED_PCRO": "ab" * 48}, "ZEROCOPY_EXPECTED_PCRO is not a PCR pin"),  # the letter O
        ({"ZEROCOPY_EXPECTED_PCR1": "ab" * 48}, "ZEROCOPY_EXPECTED_PCR0 must be set"),
    ],
)
def test_a_pcr_variable_set_empty_or_malformed_is_an_error_not_a_plain_connection(zerocopy_emulator, monkeypatch, variables, words):
    """A deployment that meant to pin PCR0 but left the value empty (a failed substitution) or
    misspelt the name got a plain, unauthenticated connection, silently."""
    monkeypatch.setenv("ZEROCOPY_ENCLAVE", zerocopy_emulator.address)
    monkeypatch.delenv("ZEROCOPY_ATTESTATION_ROOT", raising=False)
    monkeypatch.delenv("ZEROCOPY_EXPECTED_PCR0", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    outcome = _outcome(Signer.from_env)
    if isinstance(outcome, Signer):
        outcome.close()
    assert not isinstance(outcome, Signer), "Signer.from_env() fell back to a plain connection"
    assert isinstance(outcome, _configuration_error()) and words in str(outcome), outcome


def test_a_debug_emulators_signer_pins_the_zero_pcr0_it_attests():
    """Not an attack: the caller the fix above would break. ``Emulator.signer()`` in debug mode
    passed roots without PCRs; now it pins the all-zero PCR0 a debug enclave reports, explicitly,
    with ``allow_debug``."""
    from emulator import Emulator

    with Emulator(debug=True) as emulator, emulator.signer() as signer:
        assert signer.attested and signer.attestation.debug and signer.attestation.pcrs[0] == bytes(48)
        with pytest.raises(AttestationError):  # the same pin without allow_debug: refused
            Signer(emulator.address, expected_pcrs={0: bytes(48)}, roots=[emulator.root_certificate])
