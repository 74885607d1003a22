"""The enclave's socket loop (``enclave.server.Server``): one thread serves every connection, slow
work goes to the lanes' threads, and a connection's answers stay in its requests' order."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from typing import Iterator

from enclave.protocol import NEED_DATA, Connection, ControlRequest, ControlResponse, MessageType, Role, Signature, SignRequest

TIMEOUT = 20.0


@contextlib.contextmanager
def _serving(handle) -> Iterator[str]:
    from emulator_helpers import join_new_threads
    from enclave.protocol.address import parse_address
    from enclave.server import Server, listen

    before = set(threading.enumerate())
    directory = tempfile.mkdtemp(prefix="zc-loop-")
    address = parse_address(f"unix://{directory}/s.sock")
    listener = listen(address)
    server = Server(listener, handle, max_connections=64)
    thread = threading.Thread(target=server.serve_forever, name="loop-under-test")
    thread.start()
    try:
        yield address.path
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)
        os.rmdir(directory)
        assert not join_new_threads(before), "a server thread outlived the test"


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(path)
    return sock


def _answers(sock: socket.socket, count: int) -> list:
    reader, answers = Connection(Role.CLIENT), []
    while len(answers) < count:
        event = reader.next_event()
        if event is NEED_DATA:
            data = sock.recv(65536)
            assert data, f"closed after {len(answers)} of {count} answers"
            reader.receive_data(data)
            continue
        answers.append(event)
    return answers


def test_answers_stay_in_request_order_around_a_lane_and_signing_goes_on_meanwhile():
    """SIGN, AUDIT, SIGN, SIGN pipelined in one write: the AUDIT runs on its lane's thread and
    finishes only once another connection has been answered (so signing is not queued behind it),
    and the first connection gets its four answers in the order it asked."""
    other_answered = threading.Event()

    def handle(event):
        if event.type is MessageType.AUDIT:
            assert other_answered.wait(TIMEOUT), "signing waited behind the audit lane"
            return ControlResponse(event.request_id, MessageType.AUDIT_LOG, {"receipts": []})
        return Signature(event.request_id, event.payload.ljust(32, b"."))

    client = Connection(Role.CLIENT)
    pipelined = b"".join(
        [
            client.send(SignRequest(1, "k", b"one")),
            client.send(ControlRequest(2, MessageType.AUDIT, {"after": 0})),
            client.send(SignRequest(3, "k", b"three")),
            client.send(SignRequest(4, "k", b"four")),
        ]
    )
    with _serving(handle) as path, contextlib.closing(_connect(path)) as first, contextlib.closing(_connect(path)) as second:
        first.sendall(pipelined)
        second.sendall(client.send(SignRequest(9, "k", b"meanwhile")))
        (meanwhile,) = _answers(second, 1)
        other_answered.set()
        answers = _answers(first, 4)
    assert isinstance(meanwhile, Signature) and meanwhile.request_id == 9
    assert [answer.request_id for answer in answers] == [1, 2, 3, 4]
    assert isinstance(answers[1], ControlResponse) and answers[1].kind is MessageType.AUDIT_LOG
    assert answers[3].signature.startswith(b"four")


def test_one_thread_serves_every_connection():
    """48 connections, each pipelining 100 signatures: every answer arrives, in order, and the
    server started no thread but its three lanes' (it used to start one per connection)."""
    before = set(threading.enumerate())

    def handle(event):
        return Signature(event.request_id, event.payload.ljust(32, b"."))

    client = Connection(Role.CLIENT)
    batch = b"".join(client.send(SignRequest(index, "k", b"%d" % index)) for index in range(1, 101))
    with _serving(handle) as path:
        sockets = [_connect(path) for _ in range(48)]
        try:
            for sock in sockets:
                sock.sendall(batch)
            answered = [_answers(sock, 100) for sock in sockets]
            started = [thread.name for thread in threading.enumerate() if thread not in before]
        finally:
            for sock in sockets:
                sock.close()
    assert all([answer.request_id for answer in answers] == list(range(1, 101)) for answers in answered)
    assert sorted(started) == ["lane-attestation", "lane-audit", "lane-provisioning", "loop-under-test"]
