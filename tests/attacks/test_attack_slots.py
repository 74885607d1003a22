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

A review of that fix found more, each reproduced below and now failing to succeed: a host keeping
63 connections busy took a connected bot's attested connection by evicting it (a connection that
completed a session handshake is never evicted now); connections waiting for a lane, or not
reading their answers, counted as busy and could never be evicted; a newcomer took a bot's quiet
connection before ones that never completed a request; audit fetches shared the provisioning lane
(which the host stalls by stalling KMS), built their pages outside it, several at once, and could
take all of the enclave's time (they have a lane of their own now, build one page at a time, and
take at most ``AUDIT_SHARE`` of the time). The memory side is in test_attack_server_memory.py.
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
def _connections(address: str, count: int, *, settled: bool = False) -> Iterator[list[socket.socket]]:
    """``count`` connections. ``settled``: the first completes a KEYS round trip before the others
    connect, so the enclave has seen every connection closed before (a Signer a fixture just
    closed, say) and they do not find its slot still taken."""
    sockets = []
    try:
        for index in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.connect(address.removeprefix("unix://"))
            if settled and index == 0:
                _settle(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _settle(sock: socket.socket) -> None:
    from enclave.protocol import Connection, ControlRequest, ControlResponse, MessageType, Role

    answer = _ask(sock, Connection(Role.CLIENT).send(ControlRequest(1, MessageType.KEYS, {})))
    assert isinstance(answer, ControlResponse), answer


def _closed_by_the_enclave(sockets: list[socket.socket], at_least: int = 0, within: float = 5.0) -> list[socket.socket]:
    """The sockets whose other end has been shut, once ``at_least`` of them are (or ``within``
    seconds have passed): the newcomer that evicted a connection may be served a moment before
    the evicted one's close reaches this end."""
    deadline = time.monotonic() + within
    while len(closed := _closed_now(sockets)) < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    return closed


def _closed_now(sockets: list[socket.socket]) -> list[socket.socket]:
    """The sockets whose other end has been shut (readable, and reading what is there, a BUSY
    answer say, gives end of stream)."""
    closed = []
    readable, _, _ = select.select(sockets, [], [], 0)
    for sock in readable:
        try:
            while sock.recv(65536, socket.MSG_DONTWAIT):
                pass
        except BlockingIOError:
            continue
        except OSError:
            pass
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
    with _connections(enclave.address, SLOTS, settled=True) as idle:
        time.sleep(EVICTION_GRACE)  # they are no longer brand new: quiet, and taking every slot
        outcomes = _newcomers_sign(zerocopy_emulator, enclave, bundle.name, secret)
        closed = _closed_by_the_enclave(idle, at_least=len(outcomes))
    assert outcomes == [True] * 4, f"a bot was locked out: {outcomes}"
    assert len(closed) == len(outcomes)  # one idle connection evicted per newcomer, no more


def test_slowloris_connections_do_not_lock_out_a_signer(zerocopy_emulator, enclave, slot_key):
    """64 connections each send one byte per second of a SIGN frame that declares 1000 bytes."""
    bundle, secret = slot_key
    frame = HEADER.pack(1000, 1, 0x01, 7) + bytes([len(bundle.name)]) + bundle.name.encode() + bytes(1000)
    stop = threading.Event()
    with _connections(enclave.address, SLOTS, settled=True) as slow:

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
            closed = _closed_by_the_enclave(slow, at_least=len(outcomes))
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
            for _ in range(2):  # 8 at once, then again: each provisioning is a KMS round trip, run one at a time
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
    assert len(results) == 16 and all(result is True or isinstance(result, EnclaveBusy) for result in results), results
    assert all(signatures)


# -- deadlines, on a server in this process with short ones ----------------------------------------
_ANSWER_SIZES = {b"big": 60000, b"huge": 1 << 20}


def _stand_in(calls: dict, release: threading.Event):
    """A handler for the socket loop: PROVISION waits for ``release``; AUDIT answers a page of
    about 300 kB; KEYS an empty list; everything else is a signature as long as its payload (60 kB for b"big", 1 MiB
    for b"huge")."""
    from enclave.protocol import ControlResponse, ErrorCode, ErrorResponse, MessageType, Signature

    def handle(event):
        kind = getattr(event, "kind", None)
        if kind is MessageType.PROVISION:
            calls["provision_running"] += 1
            calls["provision_most"] = max(calls["provision_most"], calls["provision_running"])
            release.wait(20)
            calls["provision_running"] -= 1
            return ErrorResponse(event.request_id, ErrorCode.PROVISIONING_FAILED, "stand-in")
        if kind is MessageType.AUDIT:
            return ControlResponse(event.request_id, MessageType.AUDIT_LOG, {"receipts": [b"r" * 1000] * 300})
        if kind is MessageType.KEYS:
            return ControlResponse(event.request_id, MessageType.KEY_LIST, {"keys": []})
        return Signature(event.request_id, b"s" * _ANSWER_SIZES.get(event.payload, len(event.payload)))

    return handle


@contextlib.contextmanager
def _serving(handle, **options) -> Iterator[tuple[object, str]]:
    """The enclave's socket loop (``enclave.server.Server``) around ``handle``, in this process."""
    from emulator_helpers import join_new_threads
    from enclave.protocol.address import parse_address
    from enclave.server import Server, listen

    before = set(threading.enumerate())
    directory = tempfile.mkdtemp(prefix="zc-slots-")
    address = parse_address(f"unix://{directory}/s.sock")
    listener = listen(address)
    server = thread = None
    try:
        server = Server(listener, handle, **options)
        thread = threading.Thread(target=server.serve_forever, name="small-server")
        thread.start()
        yield server, str(address.path)
    finally:
        if server is not None:
            server.shutdown()
        listener.close()
        if thread is not None:
            thread.join(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)
        os.rmdir(directory)
        assert not join_new_threads(before), "a server thread outlived the test"


@contextlib.contextmanager
def _stand_in_server(**options) -> Iterator[tuple[object, str, dict, threading.Event]]:
    calls: dict[str, int] = {"provision_running": 0, "provision_most": 0}
    release = threading.Event()
    with _serving(_stand_in(calls, release), **options) as (server, path):
        try:
            yield server, path, calls, release
        finally:
            release.set()  # before the server stops: a handler waiting on it holds a thread


@pytest.fixture
def small_server():
    """Deadlines short enough to watch."""
    with _stand_in_server(max_connections=8, frame_timeout=0.5, idle_timeout=1.0, send_timeout=1.0, lane_timeout=0.5) as served:
        yield served


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


def _read_slowly(sock: socket.socket, budget: int, chunk: int, pause: float) -> int:
    """Read ``chunk`` bytes every ``pause`` seconds until the server closes or ``budget`` bytes
    came; how many came."""
    taken = 0
    sock.settimeout(20)
    while taken < budget:
        try:
            data = sock.recv(chunk)
        except OSError:
            break
        if not data:
            break
        taken += len(data)
        if pause:
            time.sleep(pause)
    return taken


def test_a_client_that_reads_a_trickle_is_closed():
    """A client pipelines big answers (1 MiB each) and reads them a little at a time, on a tiny
    receive buffer. The send deadline restarted whenever the kernel took a byte, so it kept its
    slot for as long as it trickled: at 4 KiB per 10 ms it read all 8 MiB, for 20 s, past a
    deadline of 0.5 s. The deadline is per answer now: one not taken in full within
    ``send_timeout`` of being next to write closes the connection."""
    from enclave.protocol import Connection, Role, SignRequest

    answers = 8 * _ANSWER_SIZES[b"huge"]
    with _stand_in_server(max_connections=4, send_timeout=0.5) as (server, path, _, _):
        with _connections(f"unix://{path}", 1) as (trickler,):
            trickler.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            trickler.sendall(Connection(Role.CLIENT).send(SignRequest(1, "k", b"huge")) * 8)
            trickled = _read_slowly(trickler, answers, 4096, 0.01)
    assert server.stats["not_reading"] == 1
    assert trickled < 2 * _ANSWER_SIZES[b"huge"], f"the trickle reader took {trickled} bytes before it was closed"


def test_a_pipeline_of_big_answers_read_at_speed_is_answered_in_full():
    """The same 8 MiB of answers, read as fast as they come, under the same deadline: all of them.
    The loop used to stop after three: when an answer held back by backpressure was written in
    full at once, nothing woke the connection to answer the requests it still held."""
    from enclave.protocol import Connection, Role, SignRequest

    answers = 8 * _ANSWER_SIZES[b"huge"]
    with _stand_in_server(max_connections=4, send_timeout=0.5) as (server, path, _, _):
        with _connections(f"unix://{path}", 1) as (reader,):
            reader.sendall(Connection(Role.CLIENT).send(SignRequest(1, "k", b"huge")) * 8)
            read = _read_slowly(reader, answers, 1 << 20, 0)
    assert read >= answers, f"{read} of {answers} bytes of answers came"
    assert server.stats["not_reading"] == 0


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


# -- eviction takes only what a host can spare (review of 6089f7d) ----------------------------------
def _next_answer(sock: socket.socket, reader) -> object | None:
    """The next event on ``sock`` (a client-side ``Connection`` as ``reader``), None at its end."""
    from enclave.protocol import NEED_DATA

    event = reader.next_event()
    while event is NEED_DATA:
        try:
            data = sock.recv(65536)
        except OSError:
            return None
        if not data:
            return None
        reader.receive_data(data)
        event = reader.next_event()
    return event


def _ask(sock: socket.socket, frame: bytes, reader=None) -> object | None:
    """Send ``frame`` and read the answer; None if the enclave closed the connection instead."""
    from enclave.protocol import Connection, Role

    sock.settimeout(20)
    with contextlib.suppress(OSError):
        sock.sendall(frame)
    return _next_answer(sock, reader if reader is not None else Connection(Role.CLIENT))


def _keep_alive(sock: socket.socket, stop: threading.Event, first_answers: list, interval: float) -> None:
    """The host's connection that is never quiet: KEYS every ``interval`` until ``stop``; records
    what its first request got (None: closed unanswered; a refusal ends it)."""
    from enclave.protocol import Connection, ControlRequest, ErrorResponse, MessageType, Role

    client = Connection(Role.CLIENT)
    request = client.send(ControlRequest(1, MessageType.KEYS, {}))
    recorded = False
    while True:
        answer = _ask(sock, request, client)
        if not recorded:
            first_answers.append(answer)
            recorded = True
        if answer is None or isinstance(answer, ErrorResponse) or stop.wait(interval):
            return


@contextlib.contextmanager
def _keepers(address: str, count: int, interval: float = 0.2) -> Iterator[list]:
    """``count`` connections that each ask for KEYS every ``interval``, each answered once before
    this yields; yields their first answers (None: closed unanswered)."""
    stop = threading.Event()
    firsts: list = []
    threads = []
    with _connections(address, count) as sockets:
        try:
            for sock in sockets:
                started = len(firsts)
                thread = threading.Thread(target=_keep_alive, args=(sock, stop, firsts, interval), name="keeper")
                thread.start()
                threads.append(thread)
                while len(firsts) == started and thread.is_alive():  # answered (or refused) in turn
                    time.sleep(0.01)
            yield firsts
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)


def test_a_host_keeping_every_other_slot_busy_cannot_take_an_attested_bots_connection(zerocopy_emulator, enclave, slot_key):
    """The host keeps 63 connections busy (KEYS five times a second) beside a bot's attested
    connection, lets the bot go quiet, and opens one more: it evicted the bot, whose reconnect then
    got EnclaveBusy. A connection that completed a session handshake is never evicted now: the
    newcomer is refused (or takes one of the host's own), and the bot signs on, in its session."""
    from enclave.protocol import ErrorCode, ErrorResponse

    bundle, secret = slot_key
    bot = Signer(enclave.address, expected_pcrs={0: enclave.pcrs[0]}, roots=[zerocopy_emulator.root_certificate])
    with bot:
        assert bot.sign(bundle.name, b"first") == hmac.new(secret, b"first", hashlib.sha256).digest()
        session = bot.attestation
        with _keepers(enclave.address, SLOTS - 1) as keepers:
            time.sleep(EVICTION_GRACE)  # the bot is quiet now; the host's connections never are
            with _keepers(enclave.address, 1) as (newcomer,):
                try:
                    outcome: object = bot.sign(bundle.name, b"BUY") == hmac.new(secret, b"BUY", hashlib.sha256).digest()
                except ZeroCopyError as exc:
                    outcome = exc
                same_session = bot.attestation is session
    assert outcome is True and same_session, f"the bot lost its connection: {outcome!r}"
    assert all(answer is not None and not isinstance(answer, ErrorResponse) for answer in keepers)
    assert newcomer is not None and (not isinstance(newcomer, ErrorResponse) or newcomer.code is ErrorCode.BUSY)


def test_connections_waiting_for_a_lane_can_be_evicted():
    """Every slot holds a PROVISION — one running (KMS stalled by the host), the others waiting
    for the lane: waiting counted as busy, so they were never evicted and everyone else got BUSY
    for as long as the host kept re-sending. A waiter is expendable now; the running one is not."""
    from enclave.protocol import Connection, ControlRequest, MessageType, Role, Signature, SignRequest

    with _stand_in_server(max_connections=4, lane_timeout=20, evict_after=0.2) as (server, path, calls, release):
        client = Connection(Role.CLIENT)
        provision = client.send(ControlRequest(5, MessageType.PROVISION, {}))
        with _connections(f"unix://{path}", 4) as (running, *waiting):
            running.sendall(provision)
            while not calls["provision_running"]:
                time.sleep(0.01)
            for sock in waiting:
                sock.sendall(provision)
            while server.lanes["provisioning"].waiting < len(waiting):
                time.sleep(0.01)
            time.sleep(0.3)  # longer than evict_after
            with _connections(f"unix://{path}", 1) as (newcomer,):
                answer = _ask(newcomer, client.send(SignRequest(6, "k", b"x")))
            release.set()
            running.settimeout(20)
            provisioned = _next_answer(running, Connection(Role.CLIENT))
    assert isinstance(answer, Signature), f"the newcomer was refused: {answer!r}"
    assert server.stats["evicted"] == 1 and server.stats["lane_abandoned"] == 1
    assert provisioned is not None and provisioned.request_id == 5  # the running one was left alone


def test_a_connection_that_never_completed_a_request_is_evicted_before_a_bots():
    """A bot signs, then the host opens connections that send nothing: the newcomer took the bot's
    (quiet the longest); now it takes one that never completed a request."""
    from enclave.protocol import Connection, Role, Signature, SignRequest

    client = Connection(Role.CLIENT)
    with _stand_in_server(max_connections=3, evict_after=0.2) as (server, path, _, _):
        with _connections(f"unix://{path}", 1) as (bot,):
            reader = Connection(Role.CLIENT)
            first = _ask(bot, client.send(SignRequest(1, "k", b"first")), reader)
            with _connections(f"unix://{path}", 2) as silent:
                time.sleep(0.3)  # every connection is quiet for longer than evict_after
                with _connections(f"unix://{path}", 1) as (newcomer,):
                    welcomed = _ask(newcomer, client.send(SignRequest(2, "k", b"new")))
                    again = _ask(bot, client.send(SignRequest(3, "k", b"again")), reader)
                    closed = _closed_by_the_enclave(silent)
    assert isinstance(first, Signature) and isinstance(welcomed, Signature)
    assert isinstance(again, Signature), "the bot's connection was evicted"
    assert len(closed) == 1 and server.stats["evicted"] == 1


def test_connections_that_do_not_read_their_answers_can_be_evicted():
    """Connections that pipeline and never read sat 'busy' in a blocked write until their send
    deadline, so a host refilling them held every slot. Blocked long enough, they are evicted."""
    from enclave.protocol import Connection, Role, Signature, SignRequest

    client = Connection(Role.CLIENT)
    big = client.send(SignRequest(1, "k", b"big")) * 64  # 3.8 MB of answers, never read
    with _stand_in_server(max_connections=2, send_timeout=30, evict_after=0.2) as (server, path, _, _):
        with _connections(f"unix://{path}", 2) as greedy:
            for sock in greedy:
                sock.sendall(big)
            while sum(c.sending_since is not None for c in list(server._clients.values())) < len(greedy):
                time.sleep(0.01)
            time.sleep(0.3)  # blocked for longer than evict_after
            with _connections(f"unix://{path}", 1) as (newcomer,):
                answer = _ask(newcomer, client.send(SignRequest(2, "k", b"x")))
    assert isinstance(answer, Signature), f"the newcomer was refused: {answer!r}"
    assert server.stats["evicted"] == 1 and server.stats["not_reading"] == 0


# -- reserved slots: the operator's way in when bots hold every slot ---------------------------------
def test_after_a_restart_the_operator_provisions_though_attested_bots_hold_every_slot(zerocopy_emulator, slot_key):
    """An enclave restarts; 64 bots reconnect in attested sessions before the operator (here the
    host agent's way: attested too) provisions, and the host fills what is left with idle
    connections. Attested sessions are never evicted, so the operator got EnclaveBusy and the keys
    were never loaded. Two slots beyond the 64 are kept for control now, and a quiet connection
    there is expendable: the operator provisions, and every bot then signs in its own session."""
    bundle, secret = slot_key
    attested = {"expected_pcrs": None, "roots": [zerocopy_emulator.root_certificate]}
    with zerocopy_emulator.launch() as restarted, contextlib.ExitStack() as stack:
        attested["expected_pcrs"] = {0: restarted.pcrs[0]}
        bots = [stack.enter_context(Signer(restarted.address, **attested)) for _ in range(SLOTS)]
        with _connections(restarted.address, 2) as squatters:  # the host's, in the reserved slots
            with _connections(restarted.address, 1) as (refused,):  # nothing left: BUSY at once
                turned_away = _wait_closed(refused)
            time.sleep(EVICTION_GRACE)  # the squatters are quiet now
            with Signer(restarted.address, **attested) as operator:
                loaded = operator.provision([bundle.to_json()], credentials=zerocopy_emulator.credentials)
                keys = [key.name for key in operator.keys()]
            evicted = _closed_by_the_enclave(squatters)
        signed = [bot.sign(bundle.name, b"after the restart") == hmac.new(secret, b"after the restart", hashlib.sha256).digest() for bot in bots]
        still_attested = all(bot.attested for bot in bots)
    assert turned_away
    assert [result.loaded for result in loaded] == [True] and keys == [bundle.name]
    assert len(evicted) == 1  # the operator took one quiet reserved slot, no more
    assert all(signed) and still_attested


def test_a_reserved_slot_serves_control_and_not_signing():
    """Bots keep every slot busy (too busy to be evicted). A newcomer gets a reserved slot: its
    control messages are answered; a SIGN there is answered BUSY and the connection closed, so a
    bot that lands in one makes room at once; once a slot comes free, a SIGN takes it."""
    from enclave.protocol import Connection, ControlRequest, ControlResponse, ErrorCode, ErrorResponse, MessageType, Role, Signature, SignRequest

    client, reader = Connection(Role.CLIENT), Connection(Role.CLIENT)
    with _stand_in_server(max_connections=3, evict_after=0.5) as (server, path, _, release), contextlib.ExitStack() as stack:
        release.set()  # PROVISION answers at once
        address = f"unix://{path}"
        bots = stack.enter_context(_keepers(address, 2, interval=0.05))
        leaving = contextlib.ExitStack()
        leaving.enter_context(_keepers(address, 1, interval=0.05))
        time.sleep(0.6)  # longer than evict_after: none of the bots is quiet all the same
        operator, late_bot = stack.enter_context(_connections(address, 2))
        audit = _ask(operator, client.send(ControlRequest(5, MessageType.AUDIT, {"after": 0})), reader)
        provisioned = _ask(operator, client.send(ControlRequest(6, MessageType.PROVISION, {})), reader)
        refused = _ask(late_bot, client.send(SignRequest(7, "k", b"x")))
        late_bot_closed = _wait_closed(late_bot)
        leaving.close()  # a bot leaves: its slot comes free
        deadline = time.monotonic() + 20
        while len(server._clients) - server._in_reserved >= 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        promoted = _ask(operator, client.send(SignRequest(8, "k", b"x")), reader)
        in_reserved = server._in_reserved
    assert all(answer is not None and not isinstance(answer, ErrorResponse) for answer in bots)
    assert isinstance(audit, ControlResponse) and audit.kind is MessageType.AUDIT_LOG
    assert isinstance(provisioned, ErrorResponse) and provisioned.code is ErrorCode.PROVISIONING_FAILED  # the stand-in's answer
    assert isinstance(refused, ErrorResponse) and refused.code is ErrorCode.BUSY and "reserved" in refused.message
    assert late_bot_closed and server.stats["reserved"] == 1 and server.stats["evicted"] == 0
    assert isinstance(promoted, Signature) and in_reserved == 0


def test_a_flood_of_would_be_operators_is_bounded_and_does_not_hold_the_reserved_slots():
    """The host floods connections while bots keep every slot busy: two take the reserved slots,
    the rest are refused BUSY at once, and no bot loses its slot. Once the squatters go quiet, the
    operator's newcomer evicts one and is served; the bots sign on throughout."""
    from enclave.protocol import Connection, ControlRequest, ControlResponse, ErrorResponse, MessageType, Role

    client = Connection(Role.CLIENT)
    with _stand_in_server(max_connections=3, evict_after=0.5) as (server, path, _, _):
        address = f"unix://{path}"
        with _keepers(address, 3, interval=0.05) as bots, _connections(address, 10) as flood:
            time.sleep(0.6)  # the squatters are quiet now
            refused = _closed_by_the_enclave(flood)
            with _connections(address, 1) as (operator,):
                audit = _ask(operator, client.send(ControlRequest(5, MessageType.AUDIT, {"after": 0})))
            evicted = [sock for sock in _closed_by_the_enclave(flood) if sock not in refused]
            bots_busy = len(server._clients) - server._in_reserved
    assert len(refused) == 8 and server.stats["busy"] == 8
    assert isinstance(audit, ControlResponse) and audit.kind is MessageType.AUDIT_LOG
    assert len(evicted) == 1 and server.stats["evicted"] == 1
    assert bots_busy == 3 and all(answer is not None and not isinstance(answer, ErrorResponse) for answer in bots)


# -- audit fetches have a lane of their own (review of 6089f7d) -------------------------------------
def test_an_audit_fetch_does_not_wait_behind_a_stalled_provisioning(small_server):
    """AUDIT shared the provisioning lane, which a host stalls as long as it likes by stalling
    KMS traffic: the operator's fetch waited, then got BUSY. It has a lane of its own now."""
    from enclave.protocol import Connection, ControlRequest, ControlResponse, MessageType, Role

    server, path, calls, release = small_server
    client = Connection(Role.CLIENT)
    with _connections(f"unix://{path}", 2) as (stalled, operator):
        stalled.sendall(client.send(ControlRequest(5, MessageType.PROVISION, {})))
        while not calls["provision_running"]:
            time.sleep(0.01)
        answer = _ask(operator, client.send(ControlRequest(6, MessageType.AUDIT, {"after": 0})))
        release.set()
    assert isinstance(answer, ControlResponse) and answer.kind is MessageType.AUDIT_LOG, answer
    assert server.stats["lane_busy"] == 0


def test_audit_pages_are_built_one_at_a_time(monkeypatch):
    """Six connections fetch at once: the lane ran the fetches one at a time but each page was
    encoded after the lane was released, so six pages were being built at once (memory, and CPU
    taken from signing). The answer is encoded inside the lane now: one page at a time."""
    import enclave.server
    from enclave.protocol import Connection, ControlRequest, ControlResponse, MessageType, Role

    lock = threading.Lock()
    building = {"now": 0, "most": 0}

    class CountingConnection(Connection):
        def send(self, event):
            if getattr(event, "kind", None) is not MessageType.AUDIT_LOG:
                return super().send(event)
            with lock:
                building["now"] += 1
                building["most"] = max(building["most"], building["now"])
            try:
                time.sleep(0.05)  # encoding half a megabyte takes a while: long enough for overlaps to show
                return super().send(event)
            finally:
                with lock:
                    building["now"] -= 1

    monkeypatch.setattr(enclave.server, "Connection", CountingConnection)
    request = Connection(Role.CLIENT).send(ControlRequest(7, MessageType.AUDIT, {"after": 0}))
    with _stand_in_server(max_connections=8, lane_timeout=20) as (server, path, _, _):
        with _connections(f"unix://{path}", 6) as fetchers:
            for sock in fetchers:
                sock.sendall(request)
            answers = []
            for sock in fetchers:
                sock.settimeout(20)
                answers.append(_next_answer(sock, Connection(Role.CLIENT)))
    assert all(isinstance(answer, ControlResponse) for answer in answers), answers
    assert building["most"] == 1, f"{building['most']} audit pages were being built at once"


def test_the_audit_lane_rests_in_proportion_to_its_work(small_server):
    """Eight connections fetching full audit pages kept the enclave's one Python process building
    pages, and signing waited for the GIL: sign p50 12×, p99 30× the quiet figures
    (benchmarks/bench_sign.py, "audit flood"). The audit lane rests after each request now, so
    fetches take at most ``AUDIT_SHARE`` of the time; the other lanes do not rest."""
    from enclave.server import AUDIT_SHARE, Lane

    server, _, _, _ = small_server
    assert server.lanes["audit"].share == AUDIT_SHARE < 1
    assert server.lanes["provisioning"].share == server.lanes["attestation"].share == 1
    lane, unrestricted = Lane("audit", share=0.01), Lane("provisioning")
    for each in (lane, unrestricted):
        assert each.acquire(1.0)
        time.sleep(0.02)  # its work: the audit lane now rests 99 times as long (about 2 s)
        each.release()
    assert not lane.acquire(0.0) and lane.timed_out == 1
    assert unrestricted.acquire(0.0)
    unrestricted.release()
