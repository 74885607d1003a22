"""The typed control messages (enclave/protocol/messages.py): what ``from_fields`` refuses, that
``to_fields`` gives the map it was read from, and that docs/protocol.md lists exactly their fields."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.protocol import ErrorCode, MessageType, RemoteProtocolError, cbor
from enclave.protocol.frames import CONTROL_REQUESTS, CONTROL_RESPONSES
from enclave.protocol.messages import (
    ANSWERS,
    REQUESTS,
    Attest,
    Audit,
    AuditPage,
    Generate,
    KeyInfo,
    KeyList,
    Message,
    MessageError,
    Provision,
    Provisioned,
    Remove,
    Removed,
)

PROTOCOL_MD = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
KEY = {"name": "k", "scheme": "ed25519", "api_key": "a", "policy_sha256": "ab" * 32, "sealed_by": "arn:aws:kms:us-east-1:111122223333:key/x"}
CREDENTIALS = {"access_key_id": "AKIAHOST", "secret_access_key": "host-secret"}

# What each message looks like on the wire, as the enclave and Signer sent it before the messages
# were typed: to_fields must give the same map, in the same order (CBOR keeps it).
WIRE = [
    (Attest, {"nonce": b"\x01" * 32}),
    (KeyList, {"keys": [KEY, {**KEY, "name": "p", "public_key": "-----BEGIN PUBLIC KEY-----\n"}]}),
    (Provision, {"bundles": [b"{}"], "credentials": CREDENTIALS, "region": "us-east-1"}),
    (Provisioned, {"results": [
        {"index": 0, "name": None, "loaded": False, "error": "bundle #1: not JSON"},
        {"index": 1, "name": "k", "loaded": True, "new": True, "error": None},
    ]}),
    (Audit, {"after": 0, "limit": 1000}),
    (Audit, {"after": 7, "limit": 1, "nonce": b"\x02" * 16}),
    (AuditPage, {"format": "zerocopy-audit-v1", "boot_id": "00", "genesis": "11", "receipts": [b"{}"], "missing_before": None, "start": {"seq": 1}, "checkpoint": {"seq": 0}}),
    (Generate, {"name": "k", "scheme": "ed25519", "api_key": "", "credentials": CREDENTIALS}),
    (Generate, {"name": "k", "scheme": "ed25519", "api_key": "a", "credentials": CREDENTIALS, "kms_key_id": "arn:k", "policy": {"raw_signing": True}, "region": "us-east-1"}),
    (Remove, {"name": "k"}),
    (Removed, {"name": "k"}),
]


@pytest.mark.parametrize(("kind", "fields"), WIRE, ids=lambda value: value.__name__ if isinstance(value, type) else "")
def test_to_fields_gives_back_the_wire_map_in_its_order(kind, fields):
    message = kind.from_fields(fields)
    assert cbor.dumps(message.to_fields()) == cbor.dumps(fields)


def test_every_control_message_type_has_one_class_and_answers_pair_up():
    assert set(REQUESTS) == CONTROL_REQUESTS and set(ANSWERS) == set(CONTROL_RESPONSES.values())
    assert all(kind.TYPE is type_ for type_, kind in {**REQUESTS, **ANSWERS}.items())


@pytest.mark.parametrize(
    ("kind", "fields", "words"),
    [
        (Attest, {"nonce": b"x", "extra": 1}, "unknown field 'extra'"),
        (Attest, {"nonce": "text"}, "ATTEST: nonce must be bytes"),
        (Attest, {"nonce": b"x" * 1025}, "nonce must be at most 1024 bytes"),
        (Audit, {"after": -1}, "after must be a sequence number and limit 1..5000"),
        (Audit, {"limit": 5001}, "limit 1..5000"),
        (Audit, {"after": None}, "AUDIT: after must be an integer"),
        (Audit, {"nonce": b"x" * 15}, "nonce must be 16 to 64 bytes"),
        (Provision, {"credentials": CREDENTIALS}, "PROVISION: missing field 'bundles'"),
        (Provision, {"bundles": [], "credentials": CREDENTIALS}, "bundles must be a list of 1 to 64"),
        (Provision, {"bundles": [b"x"] * 65, "credentials": CREDENTIALS}, "bundles must be a list of 1 to 64"),
        (Provision, {"bundles": ["text"], "credentials": CREDENTIALS}, "PROVISION: bundles[] must be bytes"),
        (Provision, {"bundles": b"x", "credentials": CREDENTIALS}, "PROVISION: bundles must be an array"),
        (Provision, {"bundles": [b"x"], "credentials": "AKIA:secret"}, "PROVISION: credentials must be a map"),
        (Generate, {"name": 1, "scheme": "ed25519", "credentials": CREDENTIALS}, "GENERATE: name must be text"),
        (Generate, {"name": "k", "scheme": "ed25519", "credentials": CREDENTIALS, "policy": []}, "GENERATE: policy must be a map"),
        (Generate, {"name": "k", "scheme": "ed25519", "credentials": CREDENTIALS, "kms_key_id": 5}, "GENERATE: kms_key_id must be text"),
        (Remove, {}, "REMOVE: missing field 'name'"),
        (Remove, {"name": b"k"}, "REMOVE: name must be text"),
        (KeyList, {"keys": [{**KEY, "extra": 1}]}, "unknown field 'extra'"),
        (KeyList, {"keys": [{key: value for key, value in KEY.items() if key != "sealed_by"}]}, "KEY_LIST: keys[]: missing field 'sealed_by'"),
        (KeyList, {"keys": ["k"]}, "KEY_LIST: keys[] must be a map"),
        (KeyList, {"keys": [{1: "int key"}]}, "unknown field '1'"),
        (Provisioned, {"results": [{"index": 0, "name": "k", "loaded": "yes", "error": None}]}, "PROVISIONED: results[]: loaded must be a boolean"),
        (Provisioned, {"results": [{"index": 0, "name": "k", "loaded": True}]}, "missing field 'error'"),
    ],
)
def test_from_fields_refuses_with_a_typed_error(kind, fields, words):
    with pytest.raises(MessageError, match=re.escape(words)) as info:
        kind.from_fields(fields)
    assert isinstance(info.value, RemoteProtocolError) and info.value.code is ErrorCode.BAD_REQUEST


@given(st.dictionaries(st.sampled_from(["nonce", "name", "keys", "results", "bundles", "credentials", "after", "x", ""]), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)), st.sampled_from([*REQUESTS.values(), *ANSWERS.values()]))
def test_any_map_is_a_message_or_a_message_error(fields, kind):
    try:
        message = kind.from_fields(fields)
    except MessageError:
        return
    assert kind.from_fields(message.to_fields()) == message


def test_reprs_hold_no_credentials_or_bundles():
    shown = repr(Provision.from_fields({"bundles": [b"sealed-bytes"], "credentials": CREDENTIALS}))
    shown += repr(Generate.from_fields({"name": "k", "scheme": "ed25519", "credentials": CREDENTIALS}))
    assert "host-secret" not in shown and "AKIAHOST" not in shown and "sealed-bytes" not in shown


# -- docs/protocol.md, checked against the classes --------------------------------------------------
_HEADING = re.compile(r"^### (?P<label>.+) — `(?P<cls>\w+)`$")
_ROW = re.compile(r"^\| `(?P<name>\w+)(?P<optional>\??)` \| (?P<type>[^|]+?) \|")
_WORDS = {bytes: "bytes", str: "text", int: "integer", bool: "boolean", dict: "map"}


def _documented() -> dict[str, tuple[str, dict[str, tuple[bool, str]]]]:
    """{class name: (heading label, {field: (optional, type)})} from the Control messages section."""
    section = PROTOCOL_MD.read_text().split("## Control messages", 1)[1].split("\n## ", 1)[0]
    documented: dict = {}
    current = None
    for line in section.splitlines():
        heading = _HEADING.match(line)
        if heading:
            assert heading["cls"] not in documented, f"{heading['cls']} is documented twice"
            current = documented[heading["cls"]] = (heading["label"], {})
        elif (row := _ROW.match(line)) and current is not None:
            current[1][row["name"]] = (row["optional"] == "?", row["type"])
    return documented


def _wire_type(hint: typing.Any, optional: bool) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _wire_type(inner, False) + ("" if optional else " or null")
    if typing.get_origin(hint) is tuple:
        return f"[{_wire_type(typing.get_args(hint)[0], False)}]"
    if isinstance(hint, type) and issubclass(hint, Message):
        return hint.__name__
    return _WORDS[hint]


def _message_classes() -> dict[str, type[Message]]:
    from enclave.protocol import messages

    return {name: value for name, value in vars(messages).items() if isinstance(value, type) and issubclass(value, Message) and value is not Message}


def test_protocol_md_documents_every_message_class_once():
    assert set(_documented()) == set(_message_classes())


@pytest.mark.parametrize("name", sorted(_message_classes()))
def test_protocol_md_lists_exactly_the_fields_of(name):
    kind = _message_classes()[name]
    label, documented = _documented()[name]
    if kind.TYPE is not None:  # the heading names the message type and its code
        assert label == f"`{kind.TYPE.name}` (0x{kind.TYPE:02x})"
    hints = typing.get_type_hints(kind)
    fields = {}
    for item in dataclasses.fields(kind):
        optional = item.default is not dataclasses.MISSING or item.default_factory is not dataclasses.MISSING
        fields[item.name] = (optional, _wire_type(hints[item.name], optional))
    assert documented == fields
    assert list(documented) == list(fields), "the document lists the fields in wire order"
