"""Generate first, bind later (issue 11): the host tries to point a key at an exchange account of
its own. An asymmetric exchange key may be generated before the exchange has issued its API key id
and bound to it later, once; the attacker — root on the host, the host role's AWS credentials,
raw frames on the enclave's socket, no ``Signer`` — tries to bind it again, to bind twice at once,
to load the unbound bundle it kept beside the bound key, and to load that bundle in a later boot
and bind it there. SECURITY.md's claim under test: "a host cannot re-point a key at another
exchange account"."""

from __future__ import annotations

import threading

import pytest

from enclave.protocol import ControlResponse, ErrorCode, ErrorResponse, MessageType
from enclave.protocol.messages import Bind, Provision
from raw_host import send_controls, send_requests
from test_bind import NOW_MS, _sign_order, _verify, bind_emulator, bind_signer  # noqa: F401 - fixtures
from zerocopy import Signer

# Not marked ``zerocopy``: the mark starts the session emulator inside this module's own, whose
# ZEROCOPY_ENCLAVE would then be restored out of order. The fixtures skip without --zerocopy.




def _refusal(event) -> tuple[ErrorCode, str]:
    assert type(event) is ErrorResponse, event
    return event.code, event.message


def test_a_host_cannot_re_point_a_bound_key_at_another_account(bind_emulator, bind_signer):
    """The operator binds; the host then tries, with its own credentials and raw frames, to bind the
    key again, to load the unbound bundle it kept in its place, and to bind twice at once."""
    credentials = bind_emulator.credentials
    unbound, public_pem = bind_signer.generate("victim", "bybit-rsa", credentials=credentials)
    first, second = send_controls(
        bind_emulator.address,
        Bind(name="victim", api_key="AK-OPERATOR", credentials=credentials),
        Bind(name="victim", api_key="AK-ATTACKER", credentials=credentials),
    )
    assert type(first) is ControlResponse and first.kind is MessageType.BOUND
    code, message = _refusal(second)
    assert code is ErrorCode.PROVISIONING_FAILED and "already bound to API key id 'AK-OPERATOR'" in message
    (kept,) = send_controls(bind_emulator.address, Provision(bundles=(unbound,), credentials=credentials))
    (result,) = kept.fields["results"]
    assert not result["loaded"] and "no API key id" in result["error"]
    (again,) = send_controls(bind_emulator.address, Bind(name="victim", api_key="AK-ATTACKER", credentials=credentials))
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
        (answer,) = send_controls(next_boot.address, Provision(bundles=(unbound,), credentials=credentials))
        (result,) = answer.fields["results"]
        assert not result["loaded"] and "only in the enclave boot that generated it" in result["error"]
        (bind,) = send_controls(next_boot.address, Bind(name="kept-by-host", api_key="AK-ATTACKER", credentials=credentials))
        code, message = _refusal(bind)
        assert code is ErrorCode.UNKNOWN_KEY and "kept-by-host" in message
        with Signer(next_boot.address) as signer:
            assert [key.name for key in signer.keys()] == []
        # Refused from the bundle's own fields, before any KMS call: the same answer with
        # credentials KMS would refuse (a KMS call would have said so instead).
        refused_by_kms = {field: value + "X" if "secret" in field.lower() else value for field, value in credentials.items()}
        assert refused_by_kms != credentials
        (answer,) = send_controls(next_boot.address, Provision(bundles=(unbound,), credentials=refused_by_kms))
        (result,) = answer.fields["results"]
        assert not result["loaded"] and result["error"].endswith("generate a new key"), result["error"]


def test_two_binds_at_once_on_two_connections_bind_once(bind_emulator, bind_signer):
    credentials = bind_emulator.credentials
    bind_signer.generate("raced", "coinbase-jwt", credentials=credentials)
    answers: dict[str, object] = {}

    def bind(api_key: str) -> None:
        (answers[api_key],) = send_controls(bind_emulator.address, Bind(name="raced", api_key=api_key, credentials=credentials))

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

    requests = [ControlRequest(number, MessageType.BIND, fields) for number, fields in enumerate(MALFORMED_BINDS, 1)]
    answers = send_requests(bind_emulator.address, *requests, ControlRequest(len(requests) + 1, MessageType.KEYS, {}))
    *refused, keys = answers
    assert [(type(event), event.code) for event in refused] == [(ErrorResponse, ErrorCode.BAD_REQUEST)] * len(MALFORMED_BINDS)
    assert all(len(event.message) < 400 for event in refused)
    assert type(keys) is ControlResponse and keys.kind is MessageType.KEY_LIST
