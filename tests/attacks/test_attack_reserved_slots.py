"""Review of the reserved slots (dd6c44f): the host, on the parent instance, attacks the two slots
kept for control beyond ``max_connections``.

It tries to get signing served outside the limit (two reserved connections signing the moment one
slot comes free), to crash the loop or lose an answer with any frame in a reserved slot, to make the
loop spin while it churns the reserved slots, and to keep the operator out. That last one is
allowed (the host can always deny service), and the test pins down what it costs the host: each
reserved slot held by a connection that completes a request at least every ``evict_after``; one
that pauses longer loses its slot to the next newcomer.

All against the enclave's socket loop (``enclave.server.Server``) in this process, with the stand-in
handler of test_attack_slots.py and deadlines short enough to watch.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time

from test_attack_slots import _ask, _closed_by_the_enclave, _connections, _keepers, _next_answer, _stand_in_server, _wait_closed

HEADER = struct.Struct(">IBBI")  # body length, version, type, request id


def _regular(server) -> int:
    return len(server._clients) - server._in_reserved


def _wait_until(condition, limit: float = 20.0) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _reserved_counted_right(server) -> bool:
    return server._in_reserved == sum(client.reserved for client in server._clients.values())


def test_two_reserved_connections_cannot_both_sign_when_one_slot_comes_free():
    """Every slot is held; the host holds both reserved slots too. One slot comes free and both
    reserved connections send SIGN in the same instant: one moves into the free slot and signs, the
    other is refused BUSY and closed. Never more signing connections than ``max_connections``."""
    from enclave.protocol import Connection, ErrorCode, ErrorResponse, Role, Signature, SignRequest

    client = Connection(Role.CLIENT)
    with _stand_in_server(max_connections=2, evict_after=0.5) as (server, path, _, _), contextlib.ExitStack() as stack:
        address = f"unix://{path}"
        stack.enter_context(_keepers(address, 1, interval=0.05))
        leaving = contextlib.ExitStack()
        leaving.enter_context(_keepers(address, 1, interval=0.05))
        first, second = stack.enter_context(_connections(address, 2))
        assert _wait_until(lambda: server._in_reserved == 2)
        leaving.close()  # one slot comes free
        assert _wait_until(lambda: _regular(server) == 1)
        frame = client.send(SignRequest(9, "k", b"x"))
        first.sendall(frame)
        second.sendall(frame)
        readers = [Connection(Role.CLIENT), Connection(Role.CLIENT)]
        answers = [_next_answer(sock, reader) for sock, reader in zip((first, second), readers)]
        signed = [index for index, answer in enumerate(answers) if isinstance(answer, Signature)]
        refused = [index for index, answer in enumerate(answers) if isinstance(answer, ErrorResponse) and answer.code is ErrorCode.BUSY]
        assert len(signed) == 1 and len(refused) == 1, answers
        socks = (first, second)
        refused_closed = _wait_closed(socks[refused[0]])
        signs_on = _ask(socks[signed[0]], client.send(SignRequest(10, "k", b"y")), readers[signed[0]])
        regular_after, counted = _regular(server), _reserved_counted_right(server)
    assert refused_closed and isinstance(signs_on, Signature)  # the one that signed holds the free slot
    assert regular_after == 2 and counted and server.stats["reserved"] == 1


def _random_frame(rng: random.Random) -> bytes:
    """A frame of any type byte (requests, answers, unknown), a random body, sometimes a bad version."""
    body = rng.randbytes(rng.choice((0, 1, 5, 40)))
    version = 1 if rng.random() < 0.9 else rng.randrange(256)
    return HEADER.pack(len(body), version, rng.choice((0x01, 0x02, 0x10, 0x11, 0x13, 0x16, 0x17, 0x81, 0x7F, rng.randrange(256))), rng.randrange(1 << 32)) + body


def _answers(sock: socket.socket, expected: int, limit: float = 10.0) -> tuple[list, str]:
    """Up to ``expected`` answers; how it ended: all answered, closed by the enclave, or a hang."""
    from enclave.protocol import NEED_DATA, Connection, Role

    reader, answers = Connection(Role.CLIENT), []
    sock.settimeout(limit)
    while len(answers) < expected:
        event = reader.next_event()
        if event is not NEED_DATA:
            answers.append(event)
            continue
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return answers, "hang"
        except OSError:
            return answers, "closed"
        if not data:
            return answers, "closed"
        reader.receive_data(data)
    return answers, "all answered"


def test_garbage_in_the_reserved_slots_neither_crashes_the_loop_nor_loses_answers():
    """Both reserved slots get every kind of frame — signing, control, answers, unknown types, bad
    versions, garbage bodies — pipelined with well-formed SIGN and KEYS: each connection is answered
    until the enclave closes it (never left waiting), the bots in the regular slots are served
    throughout, and the reserved slots are counted right after."""
    from enclave.protocol import Connection, ControlRequest, MessageType, Role, SignRequest

    rng = random.Random(20261202)
    outcomes: list[str] = []
    client = Connection(Role.CLIENT)
    with _stand_in_server(max_connections=2, evict_after=0.5) as (server, path, _, release):
        release.set()
        address = f"unix://{path}"
        with _keepers(address, 2, interval=0.05) as bots:
            for round_ in range(20):
                with _connections(address, 2) as reserved:
                    assert _wait_until(lambda: server._in_reserved == 2)
                    counts = []
                    for sock in reserved:
                        frames = [_random_frame(rng) for _ in range(rng.randrange(1, 6))]
                        frames.append(client.send(ControlRequest(1, MessageType.KEYS, {})))
                        if round_ % 2:
                            frames.insert(rng.randrange(len(frames)), client.send(SignRequest(2, "k", b"x")))
                        sock.sendall(b"".join(frames))
                        counts.append(len(frames))
                    for sock, sent in zip(reserved, counts):
                        answers, ended = _answers(sock, sent)
                        assert ended in ("all answered", "closed"), (ended, answers)
                        outcomes.append(ended)
                assert _wait_until(lambda: server._in_reserved == 0)
            alive = server._loop_thread.is_alive()
            counted = _reserved_counted_right(server)
    assert alive and counted
    assert "all answered" in outcomes and "closed" in outcomes  # both ways were taken
    assert all(answer is not None for answer in bots)


def test_the_host_keeps_the_operator_out_only_by_asking_in_each_reserved_slot_within_evict_after():
    """Allowed host DoS, bounded: bots hold every slot, the host holds both reserved ones. While
    each of its two reserved connections completes a request at least every ``evict_after``, a
    newcomer (the operator) is answered BUSY; the first pause longer than that loses the slot to
    the next newcomer, which is served."""
    from enclave.protocol import Connection, ControlRequest, ControlResponse, ErrorCode, ErrorResponse, MessageType, Role

    client = Connection(Role.CLIENT)
    keys = client.send(ControlRequest(1, MessageType.KEYS, {}))
    with _stand_in_server(max_connections=2, evict_after=0.8) as (server, path, _, _):
        address = f"unix://{path}"
        with _keepers(address, 2, interval=0.05) as bots, _keepers(address, 1, interval=0.05), _connections(address, 1) as (holder,):
            assert _wait_until(lambda: server._in_reserved == 2)
            reader, kept, refusals = Connection(Role.CLIENT), [], []
            for _ in range(8):  # 1.6 s, twice evict_after, the holder asking every 0.2 s
                kept.append(isinstance(_ask(holder, keys, reader), ControlResponse))
                time.sleep(0.2)
                with _connections(address, 1) as (operator,):
                    refusals.append(_ask(operator, client.send(ControlRequest(2, MessageType.AUDIT, {"after": 0}))))
            time.sleep(1.0)  # the holder pauses longer than evict_after
            with _connections(address, 1) as (operator,):
                served = _ask(operator, client.send(ControlRequest(3, MessageType.AUDIT, {"after": 0})))
            holder_closed = _wait_closed(holder)
    assert all(kept)
    assert all(isinstance(answer, ErrorResponse) and answer.code is ErrorCode.BUSY for answer in refusals), refusals
    assert isinstance(served, ControlResponse) and served.kind is MessageType.AUDIT_LOG
    assert holder_closed and server.stats["evicted"] == 1
    assert all(answer is not None and not isinstance(answer, ErrorResponse) for answer in bots)


def _loop_cpu(server, seconds: float) -> float:
    """CPU time the loop's thread took over ``seconds`` of wall time."""
    clock = time.pthread_getcpuclockid(server._loop_thread.ident)
    before = time.clock_gettime(clock)
    time.sleep(seconds)
    return time.clock_gettime(clock) - before


def test_churning_the_reserved_slots_leaves_no_busy_loop():
    """The host churns the reserved slots with every odd state it can leave them in — half-closed
    after a SIGN, a partial frame, refused newcomers by the hundred, a SIGN refused BUSY never read —
    then stops: the loop sleeps (a busy loop takes a whole second of CPU in a second)."""
    from enclave.protocol import Connection, ControlRequest, MessageType, Role, SignRequest

    client = Connection(Role.CLIENT)
    with _stand_in_server(max_connections=2, evict_after=0.2) as (server, path, _, _):
        address = f"unix://{path}"
        with _keepers(address, 2, interval=0.05) as bots, contextlib.ExitStack() as held:
            for round_ in range(10):
                half_closed, partial = held.enter_context(_connections(address, 2))
                half_closed.sendall(client.send(SignRequest(1, "k", b"x")) + client.send(ControlRequest(2, MessageType.KEYS, {})))
                half_closed.shutdown(socket.SHUT_WR)
                partial.sendall(client.send(ControlRequest(3, MessageType.KEYS, {}))[:7])
                with _connections(address, 20) as refused:
                    _wait_until(lambda: len(_closed_by_the_enclave(refused)) >= 18, 5)
                time.sleep(0.25)  # quiet past evict_after: the next round's newcomers evict them
            idle_cpu = _loop_cpu(server, 1.0)
            counted = _reserved_counted_right(server)
    assert idle_cpu < 0.5, f"the loop took {idle_cpu:.2f}s of CPU in 1s with nothing to do"
    assert counted and all(answer is not None for answer in bots)


def test_a_reserved_slot_whose_request_the_host_stalls_is_held_without_traffic_until_it_is_answered():
    """The host's cheaper way to hold a reserved slot, also allowed: a PROVISION whose KMS calls it
    stalls (the host carries KMS traffic) is running, not quiet, so it is not expendable however
    long the stall lasts (the enclave's KMS timeouts bound it: 20 s per call, two attempts, per
    bundle). Once answered, the connection is quiet again and the next newcomer takes its slot."""
    from enclave.protocol import Connection, ControlRequest, ControlResponse, ErrorCode, ErrorResponse, MessageType, Role

    client = Connection(Role.CLIENT)
    audit = client.send(ControlRequest(2, MessageType.AUDIT, {"after": 0}))
    with _stand_in_server(max_connections=2, evict_after=0.3) as (server, path, calls, release):
        address = f"unix://{path}"
        with _keepers(address, 2, interval=0.05), _keepers(address, 1, interval=0.05), _connections(address, 1) as (stalled,):
            stalled.sendall(client.send(ControlRequest(5, MessageType.PROVISION, {})))
            assert _wait_until(lambda: calls["provision_running"] == 1)
            time.sleep(0.6)  # twice evict_after without a byte
            with _connections(address, 1) as (operator,):
                refused = _ask(operator, audit)
            release.set()  # KMS answers: the PROVISION is answered
            answered = _next_answer(stalled, Connection(Role.CLIENT))
            time.sleep(0.4)  # quiet past evict_after
            with _connections(address, 1) as (operator,):
                served = _ask(operator, audit)
            stalled_closed = _wait_closed(stalled)
    assert isinstance(refused, ErrorResponse) and refused.code is ErrorCode.BUSY
    assert isinstance(answered, ErrorResponse) and answered.code is ErrorCode.PROVISIONING_FAILED  # the stand-in's answer
    assert isinstance(served, ControlResponse) and served.kind is MessageType.AUDIT_LOG
    assert stalled_closed and server.stats["evicted"] == 1
