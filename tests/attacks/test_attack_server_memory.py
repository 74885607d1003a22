"""What a connection can make the enclave's socket loop hold: the output side of the memory bound.

The attack as it worked: the server wrote a connection's answers only after every 64 of them, by
count, not bytes. A connection that pipelines 64 ``AUDIT {after: 0, limit: 5000}`` requests and
never reads had 64 audit pages of up to 512 KiB built in memory (and joined into one more copy)
before the first write: 16 such connections took the enclave from 84 to 1,108 MiB, and 64 would
have taken about 4 GiB, against SECURITY.md's stated worst case.

Now answers are written once 256 KiB of them wait, a large one or one from a lane on its own, and
every write blocks the connection's thread, which parses nothing meanwhile; audit pages are built
in their own lane, one at a time. A connection that never reads holds one page, and is closed at
its send deadline. docs/protocol.md ("Memory") has the arithmetic of the bound asserted here.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from zerocopy import Signer
from zerocopy.sealing import seal

pytestmark = pytest.mark.zerocopy

MiB = 1 << 20
SLOTS = 64  # the enclave's default --max-connections
PIPELINED = 64  # AUDIT requests each connection sends without reading (the old write batch)
# docs/protocol.md, "Memory": what one connection can make the enclave hold at most — the frame it
# is receiving and one read (1 MiB + 64 KiB), the request being answered (1 MiB, and for an instant
# one more copy while it is decoded), and its unwritten answers (less than 320 KiB, or one answer
# of at most a frame: an audit page is 512 KiB).
CONNECTION_BOUND = 3.4 * MiB
# What this attack holds per connection: one audit page waiting to be written, plus the
# connection's thread (its stack and frames) — with room for the allocator keeping freed pages.
ONE_PAGE_PER_CONNECTION = 1 * MiB


def _audit_request() -> bytes:
    from enclave.protocol import Connection, ControlRequest, MessageType, Role

    return Connection(Role.CLIENT).send(ControlRequest(1, MessageType.AUDIT, {"after": 0, "limit": 5000}))


def _memory_kib(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the most it has ever been resident), from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


@pytest.fixture(scope="module")
def audited_enclave(zerocopy_emulator):
    """An enclave of its own (its memory is what is measured) holding 3,000 receipts: over 800 KB,
    so every AUDIT with limit 5000 answers a full page of 512 KiB."""
    kms_key = zerocopy_emulator.kms.create_key(Description="server memory")["KeyMetadata"]["Arn"]
    bundle = seal(zerocopy_emulator.kms, key_id=kms_key, name="pages", scheme="hmac-sha256", secret=os.urandom(32))
    with zerocopy_emulator.launch() as enclave:
        with Signer(enclave.address, timeout=60) as signer:
            assert signer.provision([bundle.to_json()], credentials=zerocopy_emulator.credentials)[0].loaded
            for _ in range(3):
                signer.sign_many([("pages", b"fill")] * 1000)
            page = signer.audit(after=0, limit=5000)  # the first page is built once before measuring
            assert 400 * 1024 < sum(len(line) for line in page["receipts"]) <= 512 * 1024
        yield enclave


@contextlib.contextmanager
def _never_reading(address: str, count: int) -> Iterator[list[socket.socket]]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(address.removeprefix("unix://"))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _wait_until_closed_by_the_enclave(sockets: list[socket.socket], pid: int, baseline_kib: int, limit_kib: int) -> tuple[int, int]:
    """Without reading, wait until the enclave has hung up on every socket (its send deadline);
    sample its resident memory meanwhile and give up early once it passes ``limit_kib`` over
    ``baseline_kib``. Returns (sockets closed, most resident KiB sampled)."""
    poller = select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLRDHUP)
    open_ = {sock.fileno() for sock in sockets}
    most = baseline_kib
    deadline = time.monotonic() + 90  # a bound on the wait, not a timing assertion
    while open_ and time.monotonic() < deadline and most - baseline_kib <= limit_kib:
        for fd, events in poller.poll(50):
            if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                open_.discard(fd)
                poller.unregister(fd)
        most = max(most, _memory_kib(pid, "VmRSS"))
    return len(sockets) - len(open_), most


def test_connections_pipelining_audit_pages_without_reading_stay_within_the_memory_bound(zerocopy_emulator, audited_enclave):
    pid = audited_enclave.pid
    request = _audit_request() * PIPELINED
    bound_kib = int(SLOTS * CONNECTION_BOUND) // 1024
    expected_kib = SLOTS * ONE_PAGE_PER_CONNECTION // 1024
    baseline = _memory_kib(pid, "VmRSS")
    with _never_reading(audited_enclave.address, SLOTS) as sockets:
        for sock in sockets:
            sock.sendall(request)
        closed, sampled = _wait_until_closed_by_the_enclave(sockets, pid, baseline, bound_kib)
    grown = max(sampled, _memory_kib(pid, "VmHWM")) - baseline
    assert grown <= bound_kib, f"{SLOTS} connections made the enclave grow by {grown // 1024} MiB (bound {bound_kib // 1024} MiB)"
    assert grown <= expected_kib, f"more than one audit page per connection: {grown // 1024} MiB for {SLOTS} connections"
    assert closed == SLOTS  # each held at its send deadline, then closed
    with Signer(audited_enclave.address) as signer:  # and the enclave goes on serving
        assert len(signer.sign("pages", b"after")) == 32


# -- the same, byte for byte, on a server in this process ------------------------------------------
def test_unread_answers_are_written_in_bounded_batches_not_held_by_the_count(monkeypatch):
    """Answers of 60 kB each, 64 pipelined per connection on 8 connections that do not read: the
    socket loop's own allocations (traced) stay under one batch per connection, where they were
    64 answers and their joined copy (about 7.7 MB per connection)."""
    from emulator_helpers import join_new_threads
    from enclave.protocol import Connection, Role, Signature, SignRequest
    from enclave.protocol.address import parse_address
    from enclave.server import Server, listen

    answer_bytes = 60_000
    connections = 8

    def handle(event):
        return Signature(event.request_id, b"s" * answer_bytes)

    request = Connection(Role.CLIENT).send(SignRequest(1, "k", b"x")) * PIPELINED
    before = set(threading.enumerate())
    directory = tempfile.mkdtemp(prefix="zc-outbox-")
    address = parse_address(f"unix://{directory}/s.sock")
    listener = listen(address)
    server = Server(listener, handle, max_connections=connections + 1, send_timeout=2.0)
    thread = threading.Thread(target=server.serve_forever, name="outbox-server")
    tracemalloc.start()
    try:
        thread.start()
        with _never_reading(str(address), connections) as sockets:
            tracemalloc.reset_peak()
            for sock in sockets:
                sock.sendall(request)
            closed, _ = _wait_until_closed_by_the_enclave(sockets, os.getpid(), 0, 1 << 40)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.shutdown()
        listener.close()
        thread.join(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)
        os.rmdir(directory)
    assert not join_new_threads(before), "a server thread outlived the test"
    assert closed == connections and server.stats["not_reading"] == connections
    # FLUSH_BYTES (256 KiB) of answers plus the one that crossed it, joined: 5 answers of 60 kB.
    per_connection = 2 * 5 * answer_bytes
    assert peak <= connections * per_connection, f"{peak} bytes traced, over {connections} × {per_connection}"


# -- backpressure and a client that pipelines a lot ------------------------------------------------
@pytest.fixture(scope="module")
def pipelining_enclave(zerocopy_emulator):
    """An enclave of its own: 120,000 receipts would push every other test's out of the shared
    enclave's audit buffer."""
    secret = os.urandom(32)
    kms_key = zerocopy_emulator.kms.create_key(Description="pipelining")["KeyMetadata"]["Arn"]
    bundle = seal(zerocopy_emulator.kms, key_id=kms_key, name="many", scheme="hmac-sha256", secret=secret)
    with zerocopy_emulator.launch() as enclave:
        with Signer(enclave.address) as signer:
            assert signer.provision([bundle.to_json()], credentials=zerocopy_emulator.credentials)[0].loaded
        yield enclave, secret


@pytest.mark.parametrize("attested", [False, True], ids=["plain", "attested"])
def test_sign_many_of_sixty_thousand_is_not_deadlocked_by_the_backpressure(zerocopy_emulator, pipelining_enclave, attested):
    """``sign_many`` sent every request before reading any answer; the enclave stops reading while
    its answers go unread, so past about 50,000 requests both sides waited on each other until the
    client's Timeout. It keeps a window in flight now and reads as it sends."""
    import hashlib
    import hmac

    enclave, secret = pipelining_enclave
    payloads = [b"order %d" % index for index in range(60_000)]
    pinned = {"expected_pcrs": {0: enclave.pcrs[0]}, "roots": [zerocopy_emulator.root_certificate]} if attested else {}
    with Signer(enclave.address, timeout=5, **pinned) as signer:
        signatures = signer.sign_many(("many", payload) for payload in payloads)
        assert signer.attested is attested
    assert len(signatures) == len(payloads)
    assert all(signature == hmac.new(secret, payload, hashlib.sha256).digest() for signature, payload in zip(signatures, payloads))


@pytest.mark.parametrize("attested", [False, True], ids=["plain", "attested"])
def test_async_sign_many_of_fifty_thousand_completes_in_order(zerocopy_emulator, pipelining_enclave, attested):
    """``AsyncSigner.sign_many`` pipelines as the Signer's does, for any batch size: the answers
    are read while requests go out (the enclave stops reading while its answers go unread), and
    come back in the order of the items, each its own payload's signature."""
    import asyncio
    import hashlib
    import hmac

    from zerocopy import AsyncSigner

    enclave, secret = pipelining_enclave
    payloads = [b"async order %d" % index for index in range(50_000)]
    pinned = {"expected_pcrs": {0: enclave.pcrs[0]}, "roots": [zerocopy_emulator.root_certificate]} if attested else {}

    async def run() -> list[bytes]:
        async with AsyncSigner(enclave.address, timeout=5, **pinned) as signer:
            signatures = await signer.sign_many(("many", payload) for payload in payloads)
            assert signer.attested is attested
            return signatures

    signatures = asyncio.run(run())
    assert len(signatures) == len(payloads)
    assert all(signature == hmac.new(secret, payload, hashlib.sha256).digest() for signature, payload in zip(signatures, payloads))


def test_a_raw_client_that_reads_while_it_writes_gets_any_batch_answered_in_order(pipelining_enclave):
    """The enclave's side of pipelining, for a client in any language: it reads a connection's
    requests and writes their answers in turns, blocking only while the client has not taken its
    answers; a client that sends 50,000 frames in one write while another thread reads gets
    every answer, in order. (A client that never reads is held, and closed at the send deadline:
    the memory bound above.)"""
    import hashlib
    import hmac

    from enclave.protocol import NEED_DATA, Connection, Role, SignRequest

    enclave, secret = pipelining_enclave
    payloads = [b"raw order %d" % index for index in range(50_000)]
    client = Connection(Role.CLIENT)
    frames = b"".join(client.send(SignRequest(index + 1, "many", payload)) for index, payload in enumerate(payloads))
    answers: list = []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(enclave.address.removeprefix("unix://"))
    writer = threading.Thread(target=sock.sendall, args=(frames,), name="raw-writer")
    try:
        writer.start()
        while len(answers) < len(payloads):
            while (event := client.next_event()) is not NEED_DATA:
                answers.append(event)
            if len(answers) < len(payloads):
                data = sock.recv(65536)
                assert data, "the enclave closed the connection before answering everything"
                client.receive_data(data)
    finally:
        writer.join(10)
        sock.close()
    assert not writer.is_alive()
    assert [answer.request_id for answer in answers] == list(range(1, len(payloads) + 1))
    assert all(answer.signature == hmac.new(secret, payload, hashlib.sha256).digest() for answer, payload in zip(answers, payloads))
