"""Endpoint addresses: ``vsock://CID:PORT``, ``unix:///path`` and loopback-only ``tcp://``.

``socket.AF_VSOCK`` appears only as a constant to compare with; no test creates a vsock socket.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.launcher import emulated_vsock_path
from enclave.protocol.address import UNIX_PATH_MAX, Address, AddressError, parse_address

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("vsock://16:5000", Address("vsock", cid=16, port=5000)),
        ("vsock://3:8000", Address("vsock", cid=3, port=8000)),
        ("vsock://0:0", Address("vsock", cid=0, port=0)),
        ("vsock://4294967295:4294967295", Address("vsock", cid=0xFFFFFFFF, port=0xFFFFFFFF)),
        ("unix:///run/zerocopy/vsock-16-5000.sock", Address("unix", path="/run/zerocopy/vsock-16-5000.sock")),
        ("unix:///s", Address("unix", path="/s")),
        ("unix:///tmp/dir with space/ünï.sock", Address("unix", path="/tmp/dir with space/ünï.sock")),
        ("tcp://127.0.0.1:5000", Address("tcp", host="127.0.0.1", port=5000)),
        ("tcp://127.0.0.1:0", Address("tcp", host="127.0.0.1", port=0)),
        ("tcp://127.255.255.254:65535", Address("tcp", host="127.255.255.254", port=65535)),
        ("tcp://[::1]:80", Address("tcp", host="::1", port=80)),
    ],
)
def test_valid_addresses_parse_and_round_trip(text, address):
    parsed = parse_address(text)
    assert parsed == address
    assert str(parsed) == text
    assert parse_address(str(parsed)) == parsed


def test_ipv6_loopback_in_long_form_is_normalised():
    address = parse_address("tcp://[0:0:0:0:0:0:0:1]:80")
    assert address.host == "::1"
    assert str(address) == "tcp://[::1]:80"


def test_an_address_passes_through():
    address = Address("vsock", cid=16, port=5000)
    assert parse_address(address) is address


def test_address_is_frozen_and_hashable():
    address = parse_address("vsock://16:5000")
    with pytest.raises(AttributeError):
        address.port = 1  # type: ignore[misc]
    assert {address: 1}[parse_address("vsock://16:5000")] == 1


def test_address_error_is_a_value_error():
    assert issubclass(AddressError, ValueError)


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("", "scheme"),
        ("16:5000", "scheme"),
        ("/run/zerocopy.sock", "scheme"),
        ("127.0.0.1:5000", "scheme"),
        ("vsock:16:5000", "scheme"),
        ("http://127.0.0.1:80", "unknown address scheme"),
        ("VSOCK://16:5000", "unknown address scheme"),
        ("udp://127.0.0.1:53", "unknown address scheme"),
        ("://16:5000", "unknown address scheme"),
    ],
)
def test_scheme_errors(text, word):
    with pytest.raises(AddressError, match=word):
        parse_address(text)


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("vsock://16", "vsock://CID:PORT"),
        ("vsock://", "vsock://CID:PORT"),
        ("vsock://:5000", "CID"),
        ("vsock://16:", "port"),
        ("vsock://x:5000", "CID"),
        ("vsock://16:50a0", "port"),
        ("vsock://-1:5000", "CID"),
        ("vsock://16:-1", "port"),
        ("vsock://+16:5000", "CID"),
        ("vsock://16: 5000", "port"),
        ("vsock://4294967296:5000", "CID"),
        ("vsock://16:4294967296", "port"),
        ("vsock://16:99999999999", "port"),
        ("vsock://16:5000:1", "port"),
        ("vsock://²:5000", "CID"),  # a digit to str.isdigit(), not to int()
        ("vsock://16:５０００", "port"),  # full-width digits
        ("vsock://١٦:5000", "CID"),  # Arabic-Indic digits
    ],
)
def test_vsock_errors(text, word):
    with pytest.raises(AddressError, match=word):
        parse_address(text)


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("unix://relative.sock", "absolute"),
        ("unix://./relative.sock", "absolute"),
        ("unix://", "absolute"),
        ("unix://~/x.sock", "absolute"),
        ("unix:///" + "a" * UNIX_PATH_MAX, "longer than 107 bytes"),
        ("unix:///" + "é" * 54, "longer than 107 bytes"),  # 108 bytes, 55 characters
        ("unix:///run/a\0b.sock", "NUL"),
        ("unix:///run/\udcff.sock", "unix"),  # a lone surrogate is no path
    ],
)
def test_unix_errors(text, word):
    with pytest.raises(AddressError, match=word):
        parse_address(text)


def test_unix_path_of_107_bytes_is_the_longest():
    path = "/" + "a" * (UNIX_PATH_MAX - 1)
    assert len(path.encode()) == 107
    assert parse_address("unix://" + path).path == path
    with pytest.raises(AddressError, match="107"):
        parse_address("unix://" + path + "a")


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("tcp://10.0.0.1:5000", "not loopback"),
        ("tcp://0.0.0.0:5000", "not loopback"),
        ("tcp://192.168.1.10:5000", "not loopback"),
        ("tcp://8.8.8.8:53", "not loopback"),
        ("tcp://[::]:5000", "not loopback"),
        ("tcp://[::2]:5000", "not loopback"),
        ("tcp://[fe80::1]:5000", "not loopback"),
        ("tcp://localhost:5000", "host name"),
        ("tcp://enclave.internal:5000", "host name"),
        ("tcp://:5000", "host name"),
        ("tcp://127.1:5000", "host name"),
        ("tcp://127.0.0.1", "tcp://127.0.0.1:PORT"),
        ("tcp://[::1]", "tcp://\\[::1\\]:PORT"),
        ("tcp://[::1:80", "tcp://\\[::1\\]:PORT"),
        ("tcp://127.0.0.1:", "port"),
        ("tcp://127.0.0.1:65536", "at most 65535"),
        ("tcp://127.0.0.1:4294967295", "at most 65535"),
        ("tcp://127.0.0.1:4294967296", "port"),
        ("tcp://127.0.0.1:-1", "port"),
        ("tcp://127.0.0.1:http", "port"),
        ("tcp://[::1]:65536", "at most 65535"),
        ("tcp://127.0.0.1:８０", "port"),
    ],
)
def test_tcp_errors(text, word):
    with pytest.raises(AddressError, match=word):
        parse_address(text)


@pytest.mark.parametrize("value", [None, 5000, b"vsock://16:5000", ("127.0.0.1", 80)], ids=repr)
def test_non_string_addresses(value):
    with pytest.raises(AddressError, match="must be a string"):
        parse_address(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "family", "sockaddr"),
    [
        ("vsock://16:5000", socket.AF_VSOCK, (16, 5000)),
        ("unix:///run/z.sock", socket.AF_UNIX, "/run/z.sock"),
        ("tcp://127.0.0.1:5000", socket.AF_INET, ("127.0.0.1", 5000)),
        ("tcp://[::1]:5000", socket.AF_INET6, ("::1", 5000)),
    ],
)
def test_family_and_sockaddr(text, family, sockaddr):
    address = parse_address(text)
    assert address.family == family
    assert address.sockaddr == sockaddr


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        ("/run/zerocopy", "/run/zerocopy/vsock-16-5000.sock"),
        ("/run/zerocopy/", "/run/zerocopy/vsock-16-5000.sock"),
        ("/run/zerocopy//", "/run/zerocopy/vsock-16-5000.sock"),
        ("/", "/vsock-16-5000.sock"),
    ],
)
def test_emulated_vsock_path(directory, expected):
    path = emulated_vsock_path(directory, 16, 5000)
    assert path == expected
    assert parse_address("unix://" + path).path == path


def test_emulated_vsock_paths_differ_by_cid_and_port():
    paths = {emulated_vsock_path("/d", cid, port) for cid in (3, 4, 16) for port in (5000, 8000)}
    assert len(paths) == 6
    assert emulated_vsock_path("/d", 3, 8000) == "/d/vsock-3-8000.sock"


# -- hypothesis ------------------------------------------------------------------------------------
# any character, lone surrogates and non-ASCII digits included, plus the characters addresses use
characters = st.characters(categories=["Cs", "Nd", "No", "L", "Zs", "Cc"]) | st.sampled_from("0123456789:/[].")
texts = st.text(characters, max_size=40)
PREFIXES = ["vsock://", "vsock://16:", "unix://", "unix:///", "tcp://", "tcp://[", "tcp://[::1]:", "tcp://127.0.0.1:"]


@FUZZ
@given(texts | st.sampled_from(PREFIXES).flatmap(lambda prefix: texts.map(lambda rest: prefix + rest)))
def test_any_text_gives_an_address_or_address_error(text):
    try:
        address = parse_address(text)
    except AddressError:
        return
    assert parse_address(str(address)) == address


@FUZZ
@given(cid=st.integers(0, 0xFFFFFFFF), port=st.integers(0, 0xFFFFFFFF))
def test_vsock_round_trip(cid, port):
    address = parse_address(f"vsock://{cid}:{port}")
    assert (address.cid, address.port, address.sockaddr) == (cid, port, (cid, port))
    assert str(address) == f"vsock://{cid}:{port}"


@FUZZ
@given(host=st.ip_addresses(v=4, network="127.0.0.0/8") | st.just("::1"), port=st.integers(0, 0xFFFF))
def test_tcp_loopback_round_trip(host, port):
    text = f"tcp://[{host}]:{port}" if ":" in str(host) else f"tcp://{host}:{port}"
    address = parse_address(text)
    assert address.sockaddr == (str(host), port)
    assert str(address) == text
