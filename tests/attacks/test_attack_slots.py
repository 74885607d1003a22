"""Issue 8, item 6: slots and starvation.

The attacks as they worked: the enclave serves 64 connections, one thread each, with no deadline —
so 64 connections that never send anything, or that send one byte per second and never finish a
frame, locked every bot out (``EnclaveBusy``); and 8 connections flooding ``PROVISION`` ran 8
provisionings at once, each a KMS round trip and a CMS unwrap in the enclave's one Python process,
which pushed sign p99 from 1.3 ms to 472 ms.

Now a newcomer evicts the connection quiet the longest (one stuck in a partial frame first) when
every slot is taken; a watchdog closes connections past their partial-frame, idle or send
deadlines; and provisioning, key generation and audit fetches (one lane) and attestation (another)
run one request at a time, first come first served, while signing is never queued. What the fix
costs and buys in latency is in ``benchmarks/bench_sign.py`` (the flood scenario); these tests
assert on counts and typed errors only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import select
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from zerocopy import Signer, ZeroCopyError
from zerocopy.errors import EnclaveBusy
from zerocopy.sealing import seal

pytestmark = pytest.mark.zerocopy

HEADER = struct.Struct(">IBBI")
SLOTS = 64  # the enclave's default --max-connections
EVICTION_GRACE = 1.5  # a little longer than the enclave's: a connection this quiet may be evicted


@pytest.fixture(scope="module")
def enclave(zerocopy_emulator):
    """An enclave of its own, so filling its slots disturbs no other test."""
    with zerocopy_emulator.launch() as launched:
        yield launched


@pytest.fixture(scope="module")
def slot_key(zerocopy_emulator, enclave):
    secret = os.urandom(32)
    kms_key = zerocopy_emulator.kms.create_key(Description="slots")["KeyMetadata"]["Arn"]
    bundle = seal(zerocopy_emulator.kms, key_id=kms_key, name="slots", scheme="hmac-sha256", secret=secret)
    with Signer(enclave.address) as signer:
        assert signer.provision([bundle.to_json()], credentials=zerocopy_emulator.credentials)[0].loaded
    return bundle, secret


@contextlib.contextmanager
def _connections(address: str, count: int) -> Iterator[list[socket.socket]]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.connect(address.removeprefix("unix://"))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _closed_by_the_enclave(sockets: list[socket.socket]) -> list[socket.socket]:
    """The sockets whose other end has been shut (readable, and reading gives end of stream)."""
    closed = []
    readable, _, _ = select.select(sockets, [], [], 0)
    for sock in readable:
        try:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except OSError:
            closed.append(sock)
            continue
        if not data:
            closed.append(sock)
    return closed


def _newcomers_sign(zerocopy_emulator, enclave, key_name: str, secret: bytes) -> list[object]:
    """Three plain Signers and an attested one connect and sign, each staying connected (so each
    needs a slot of its own); the signature's correctness or the typed error, for each."""
    outcomes: list[object] = []
    connects = [lambda: Signer(enclave.address)] * 3 + [
        lambda: Signer(enclave.address, expected_pcrs={0: enclave.pcrs[0]}, roots=[zerocopy_emulator.root_certificate])
    ]
    with contextlib.ExitStack() as stack:
        for index, connect in enumerate(connects):
            payload = f"order {index}".encode()
            try:
                signer = stack.enter_context(connect())
                outcomes.append(signer.sign(key_name, payload) == hmac.new(secret, payload, hashlib.sha256).digest())
            except ZeroCopyError as exc:
                outcomes.append(exc)
    return outcomes


def test_64_idle_connections_do_not_lock_out_a_signer(zerocopy_emulator, enclave, slot_key):
    bundle, secret = slot_key
    with _connections(enclave.address, SLOTS) as idle:
        time.sleep(EVICTION_GRACE)  # they are no longer brand new: quiet, and taking every slot
        outcomes = _newcomers_sign(zerocopy_emulator, enclave, bundle.name, secret)
        closed = _closed_by_the_enclave(idle)
    assert outcomes == [True] * 4, f"a bot was locked out: {outcomes}"
    assert len(closed) == len(outcomes)  # one idle connection evicted per newcomer, no more


def test_slowloris_connections_do_not_lock_out_a_signer(zerocopy_emulator, enclave, slot_key):
    """64 connections each send one byte per second of a SIGN frame that declares 1000 bytes."""
    bundle, secret = slot_key
    frame = HEADER.pack(1000, 1, 0x01, 7) + bytes([len(bundle.name)]) + bundle.name.encode() + bytes(1000)
    stop = threading.Event()
    with _connections(enclave.address, SLOTS) as slow:

        def trickle() -> None:
            position = 0
            while not stop.is_set() and position < len(frame):
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.send(frame[position : position + 1], socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                position += 1
                stop.wait(1.0)

        trickler = threading.Thread(target=trickle, name="slowloris")
        trickler.start()
        try:
            time.sleep(EVICTION_GRACE)
            outcomes = _newcomers_sign(zerocopy_emulator, enclave, bundle.name, secret)
            closed = _closed_by_the_enclave(slow)
        finally:
            stop.set()
            trickler.join(10)
    assert outcomes == [True] * 4, f"a bot was locked out: {outcomes}"
    assert len(closed) == len(outcomes)


def test_a_provisioning_flood_runs_one_at_a_time_while_signing_goes_on(zerocopy_emulator, enclave, slot_key, monkeypatch):
    """8 connections provision in a loop while a ninth signs: the enclave never has two KMS
    Decrypts in flight (counted at the emulated KMS, which answers Decrypt in this process), every
    provisioning succeeds or is refused as EnclaveBusy, and every signature is right."""
    bundle, secret = slot_key
    model = zerocopy_emulator.kms_model
    genuine_decrypt = model.decrypt
    lock = threading.Lock()
    in_flight = {"now": 0, "most": 0, "calls": 0}

    def counting_decrypt(params, caller):
        with lock:
            in_flight["now"] += 1
            in_flight["calls"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
        try:
            time.sleep(0.05)  # KMS is a network round trip: long enough for overlaps to show
            return genuine_decrypt(params, caller)
        finally:
            with lock:
                in_flight["now"] -= 1

    monkeypatch.setattr(model, "decrypt", counting_decrypt)
    results: list[object] = []

    def flood() -> None:
        with Signer(enclave.address) as flooder:
            for _ in range(3):
                try:
                    results.append(flooder.provision([bundle.to_json()], credentials=zerocopy_emulator.credentials)[0].loaded)
                except EnclaveBusy as exc:
                    results.append(exc)
                except ZeroCopyError as exc:  # anything else is a failure of the test
                    results.append(("untyped", exc))

    flooders = [threading.Thread(target=flood, name=f"flooder-{i}") for i in range(8)]
    for thread in flooders:
        thread.start()
    signatures = []
    with Signer(enclave.address) as bot:
        while any(thread.is_alive() for thread in flooders) or len(signatures) < 20:
            payload = os.urandom(16)
            signatures.append(bot.sign(bundle.name, payload) == hmac.new(secret, payload, hashlib.sha256).digest())
    for thread in flooders:
        thread.join(60)
    assert in_flight["calls"] >= 1
    assert in_flight["most"] == 1, f"{in_flight['most']} provisionings ran at once"
    assert len(results) == 24 and all(result is True or isinstance(result, EnclaveBusy) for result in results), results
    assert all(signatures)


# -- deadlines, on a server in this process with short ones ----------------------------------------
@pytest.fixture
def small_server():
    """The enclave's socket loop around a stand-in handler, with deadlines short enough to watch."""
    from enclave.protocol import ErrorCode, ErrorResponse, Signature
    from enclave.protocol.address import parse_address
    from enclave.server import Server, listen

    calls: dict[str, int] = {"provision_running": 0, "provision_most": 0}
    release = threading.Event()

    def handle(event):
        if getattr(event, "kind", None) is not None and event.kind.name == "PROVISION":
            calls["provision_running"] += 1
            calls["provision_most"] = max(calls["provision_most"], calls["provision_running"])
            release.wait(10)
            calls["provision_running"] -= 1
            return ErrorResponse(event.request_id, ErrorCode.PROVISIONING_FAILED, "stand-in")
        return Signature(event.request_id, b"s" * (len(event.payload) if event.payload != b"big" else 60000))

    from emulator_helpers import join_new_threads

    before = set(threading.enumerate())
    directory = tempfile.mkdtemp(prefix="zc-slots-")
    address = parse_address(f"unix://{directory}/s.sock")
    listener = listen(address)
    server = thread = None
    try:
        server = Server(listener, handle, max_connections=8, frame_timeout=0.5, idle_timeout=1.0, send_timeout=1.0, lane_timeout=0.5)
        thread = threading.Thread(target=server.serve_forever, name="small-server")
        thread.start()
        yield server, str(address.path), calls, release
    finally:
        release.set()
        if server is not None:
            server.shutdown()
        listener.close()
        if thread is not None:
            thread.join(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)
        os.rmdir(directory)
        assert not join_new_threads(before), "a server thread outlived the test"


def _wait_closed(sock: socket.socket, limit: float = 20.0) -> bool:
    """Read until the server closes (True) or ``limit`` passes (False); not a timing assertion."""
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except socket.timeout:
        return False
    except OSError:
        return True
    return True


def test_a_partial_frame_and_an_idle_connection_meet_their_deadlines(small_server):
    from enclave.protocol import Connection, Role, SignRequest

    server, path, _, _ = small_server
    frame = Connection(Role.CLIENT).send(SignRequest(1, "k", b"payload"))
    answered = []
    done = threading.Event()
    with _connections(f"unix://{path}", 3) as (stalled, idle, steady):

        def keep_signing() -> None:  # a bot that signs now and then is left alone
            steady.settimeout(20)
            while not done.is_set():
                steady.sendall(frame)
                answered.append(bool(steady.recv(65536)))
                done.wait(0.1)

        worker = threading.Thread(target=keep_signing, name="steady")
        worker.start()
        try:
            stalled.sendall(frame[:5])  # a header it never finishes
            assert _wait_closed(stalled) and _wait_closed(idle)
        finally:
            done.set()
            worker.join(20)
    assert answered and all(answered)
    assert server.stats["stalled"] == 1 and server.stats["idle"] == 1


def test_a_client_that_never_reads_its_answers_is_closed(small_server):
    from enclave.protocol import Connection, Role, SignRequest

    server, path, _, _ = small_server
    big = Connection(Role.CLIENT).send(SignRequest(1, "k", b"big"))  # each answer is 60 kB
    with _connections(f"unix://{path}", 1) as (greedy,):
        greedy.settimeout(20)
        with contextlib.suppress(OSError):
            for _ in range(200):
                greedy.sendall(big)
        deadline = time.monotonic() + 20
        while not server.stats["not_reading"] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert server.stats["not_reading"] == 1


def test_provisioning_waits_its_turn_and_a_stuck_one_gives_busy_not_a_hang(small_server):
    from enclave.protocol import NEED_DATA, Connection, ControlRequest, ErrorCode, MessageType, Role, SignRequest

    server, path, calls, release = small_server
    client = Connection(Role.CLIENT)
    provision = client.send(ControlRequest(5, MessageType.PROVISION, {}))
    with _connections(f"unix://{path}", 3) as (first, second, signer):
        first.sendall(provision)
        while not calls["provision_running"]:
            time.sleep(0.01)
        second.sendall(provision)  # waits for the lane, then gives up after lane_timeout
        second.settimeout(20)
        reader = Connection(Role.CLIENT)
        event = NEED_DATA
        while event is NEED_DATA:
            reader.receive_data(second.recv(65536))
            event = reader.next_event()
        signer.sendall(client.send(SignRequest(6, "k", b"x")))  # signing does not queue behind it
        signer.settimeout(20)
        assert signer.recv(65536)
        release.set()
    assert event.code is ErrorCode.BUSY and "provisioning" in event.message
    assert calls["provision_most"] == 1 and server.stats["lane_busy"] == 1
