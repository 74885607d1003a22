"""What the host can do without our client: control messages as raw frames on the enclave's socket."""

from __future__ import annotations

import socket
from collections.abc import Callable

from enclave.protocol import NEED_DATA, Connection, Role
from enclave.protocol.frames import ControlRequest
from enclave.protocol.messages import Message

__all__ = ["send_controls", "send_frames", "send_requests"]


def send_controls(address: str, *messages: Message) -> list:
    """``messages`` pipelined on one connection to the enclave at ``address`` (``unix://…``), no
    ``Signer`` involved; the enclave's events, one answer each, in order."""
    return send_frames(address, lambda conn: [conn.send_control(number, message) for number, message in enumerate(messages, 1)])


def send_requests(address: str, *requests: ControlRequest) -> list:
    """Control requests with any fields (the message classes' checks skipped), as ``send_controls``."""
    return send_frames(address, lambda conn: [conn.send(request) for request in requests])


def send_frames(address: str, encode: Callable[[Connection], list[bytes]]) -> list:
    """The frames ``encode`` makes on a client ``Connection``, pipelined on one plain connection;
    every answer, in order."""
    conn = Connection(Role.CLIENT)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(address.removeprefix("unix://"))
        frames = encode(conn)
        sock.sendall(b"".join(frames))
        answers: list = []
        while len(answers) < len(frames):
            event = conn.next_event()
            if event is NEED_DATA:
                data = sock.recv(65536)
                assert data, "the enclave closed the connection"
                conn.receive_data(data)
            else:
                answers.append(event)
    return answers
