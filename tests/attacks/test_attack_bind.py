"""Generate first, bind later (issue 11): the host tries to point a key at an exchange account of
its own. An asymmetric exchange key may be generated before the exchange has issued its API key id
and bound to it later, once; the attacker — root on the host, the host role's AWS credentials,
raw frames on the enclave's socket, no ``Signer`` — tries to bind it again, to bind twice at once,
to load the unbound bundle it kept beside the bound key, and to load that bundle in a later boot
and bind it there. SECURITY.md's claim under test: "a host cannot re-point a key at another
exchange account"."""

from __future__ import annotations

import socket
import threading

import pytest

from enclave.protocol import NEED_DATA, Connection, ControlResponse, ErrorCode, ErrorResponse, MessageType, Role
from enclave.protocol.messages import Bind, Provision
from test_bind import NOW_MS, _sign_order, _verify, bind_emulator, bind_signer  # noqa: F401 - fixtures
from zerocopy import Signer

# Not marked ``zerocopy``: the mark starts the session emulator inside this module's own, whose
# ZEROCOPY_ENCLAVE would then be restored out of order. The fixtures skip without --zerocopy.


def _raw(address: str, *messages) -> list:
    """Send control messages as the host can, frame by frame on the enclave's socket (no Signer),
    and read one answer for each."""
    conn = Connection(Role.CLIENT)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(address.removeprefix("unix://"))
        sock.sendall(b"".join(conn.send_control(number, message) for number, message in enumerate(messages, 1)))
        answers: list = []
        while len(answers) < len(messages):
            event = conn.next_event()
            if event is NEED_DATA:
                data = sock.recv(65536)
                assert data, "the enclave closed the connection"
                conn.receive_data(data)
            else:
                answers.append(event)
    return answers


def _refusal(event) -> tuple[ErrorCode, str]:
    assert type(event) is ErrorResponse, event
    return event.code, event.message


def test_a_host_cannot_re_point_a_bound_key_at_another_account(bind_emulator, bind_signer):
    """The operator binds; the host then tries, with its own credentials and raw frames, to bind the
    key again, to load the unbound bundle it kept in its place, and to bind twice at once."""
    credentials = bind_emulator.credentials
    unbound, public_pem = bind_signer.generate("victim", "bybit-rsa", credentials=credentials)
    first, second = _raw(
        bind_emulator.address,
        Bind(name="victim", api_key="AK-OPERATOR", credentials=credentials),
        Bind(name="victim", api_key="AK-ATTACKER", credentials=credentials),
    )
    assert type(first) is ControlResponse and first.kind is MessageType.BOUND
    code, message = _refusal(second)
    assert code is ErrorCode.PROVISIONING_FAILED and "already bound to API key id 'AK-OPERATOR'" in message
    (kept,) = _raw(bind_emulator.address, Provision(bundles=(unbound,), credentials=credentials))
    (result,) = kept.fields["results"]
    assert not result["loaded"] and "no API key id" in result["error"]
    (again,) = _raw(bind_emulator.address, Bind(name="victim", api_key="AK-ATTACKER", credentials=credentials))
    assert _refusal(again)[0] is ErrorCode.PROVISIONING_FAILED
    (info,) = [key for key in bind_signer.keys() if key.name == "victim"]
    assert info.api_key == "AK-OPERATOR"
    # Bybit signs the API key id: the signature is good for the operator's account alone.
    signed = _sign_order(bind_signer, "victim", "bybit-rsa")
    _verify("bybit-rsa", public_pem, "AK-OPERATOR", signed)


def test_an_unbound_bundle_the_host_kept_cannot_be_bound_in_a_later_boot(bind_emulator, bind_signer):
    """The host keeps the bundle GENERATE gave before the operator binds, restarts the enclave and
    tries to load it there, to bind the key to an account of its own: refused at provisioning."""
    credentials = bind_emulator.credentials
    unbound, _ = bind_signer.generate("kept-by-host", "binance-ed25519", credentials=credentials)
    with bind_emulator.launch(clock=f"fixed:{NOW_MS}") as next_boot:
        (answer,) = _raw(next_boot.address, Provision(bundles=(unbound,), credentials=credentials))
        (result,) = answer.fields["results"]
        assert not result["loaded"] and "only in the enclave boot that generated it" in result["error"]
        (bind,) = _raw(next_boot.address, Bind(name="kept-by-host", api_key="AK-ATTACKER", credentials=credentials))
        code, message = _refusal(bind)
        assert code is ErrorCode.UNKNOWN_KEY and "kept-by-host" in message
        with Signer(next_boot.address) as signer:
            assert [key.name for key in signer.keys()] == []


def test_two_binds_at_once_on_two_connections_bind_once(bind_emulator, bind_signer):
    credentials = bind_emulator.credentials
    bind_signer.generate("raced", "coinbase-jwt", credentials=credentials)
    answers: dict[str, object] = {}

    def bind(api_key: str) -> None:
        (answers[api_key],) = _raw(bind_emulator.address, Bind(name="raced", api_key=api_key, credentials=credentials))

    threads = [threading.Thread(target=bind, args=(api_key,)) for api_key in ("AK-ONE", "AK-TWO")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [api_key for api_key, answer in answers.items() if type(answer) is ControlResponse]
    lost = [answer for answer in answers.values() if type(answer) is ErrorResponse]
    assert len(won) == 1 and len(lost) == 1 and "already bound" in lost[0].message
    (info,) = [key for key in bind_signer.keys() if key.name == "raced"]
    assert info.api_key == won[0]


MALFORMED_BINDS = [
    {"name": "k", "api_key": "AK"},  # no credentials
    {"name": "k", "api_key": "", "credentials": {}},
    {"name": 7, "api_key": "AK", "credentials": {}},
    {"name": "k", "api_key": b"AK", "credentials": {}},
    {"name": "k", "api_key": "AK", "credentials": "AKIA"},
    {"name": "k", "api_key": "AK", "credentials": {}, "bundle": b"x"},
    {"name": "k", "api_key": "AK" * 70_000, "credentials": {}},
    {"name": ["k"], "api_key": "AK", "credentials": {}},
]


def test_malformed_bind_frames_get_typed_refusals_and_the_connection_keeps_serving(bind_emulator):
    from enclave.protocol.frames import ControlRequest

    conn = Connection(Role.CLIENT)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(bind_emulator.address.removeprefix("unix://"))
        frames = [conn.send(ControlRequest(number, MessageType.BIND, fields)) for number, fields in enumerate(MALFORMED_BINDS, 1)]
        sock.sendall(b"".join(frames) + conn.send(ControlRequest(len(frames) + 1, MessageType.KEYS, {})))
        answers: list = []
        while len(answers) < len(frames) + 1:
            event = conn.next_event()
            if event is NEED_DATA:
                data = sock.recv(65536)
                assert data, "the enclave closed the connection"
                conn.receive_data(data)
            else:
                answers.append(event)
    *refused, keys = answers
    assert [(type(event), event.code) for event in refused] == [(ErrorResponse, ErrorCode.BAD_REQUEST)] * len(MALFORMED_BINDS)
    assert all(len(event.message) < 400 for event in refused)
    assert type(keys) is ControlResponse and keys.kind is MessageType.KEY_LIST
