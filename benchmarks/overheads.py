"""What surrounds signing: the emulator's start and stop, what ``pytest --zerocopy`` adds to a test
session, the alternative a user would pick instead of an enclave — a KMS-style signing API,
boto3 ``GenerateMac`` against moto on loopback (moto's own process, as the emulator runs it) —
and what an attested session adds per request, measured in process (the round trip cannot
resolve a few µs: its noise is ±10 µs).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: ``Emulator.start_phases`` in order, each with what the benchmark calls the time up to it from the one before.
START_PHASES = (
    ("moto", "until moto serves (certificates, enclave image and boto models made meanwhile)"),
    ("kms_front", "the attesting KMS front and its vsock-proxy"),
    ("seal_key", "the seal key (CreateKey through the front)"),
    ("enclave", "the enclave process, until it listens"),
    ("host_role", "the seal key pinned to PCR0, the host role (made during the boot) joined"),
)


def start_phase_seconds(phases: dict[str, float]) -> dict[str, float]:
    """Seconds of each of :data:`START_PHASES` in one start (``Emulator.start_phases`` are cumulative)."""
    durations, before = {}, 0.0
    for name, _ in START_PHASES:
        durations[name], before = phases[name] - before, phases[name]
    return durations


def emulator_start_stop(repeats: int) -> dict[str, list]:
    """Seconds to start an ``Emulator`` (moto, the KMS front, an enclave up) and to stop it, and
    each start's phases (:func:`start_phase_seconds`)."""
    timed: dict[str, list] = {"start_s": [], "stop_s": [], "phases": []}
    for _ in range(repeats):
        with TimedEmulator(timed):
            pass
    return timed


class TimedEmulator:
    """An ``Emulator`` whose start and stop are timed into ``into`` (``start_s``/``stop_s``/``phases`` lists)."""

    def __init__(self, into: dict[str, list]) -> None:
        from emulator import Emulator

        self.emulator, self._into = Emulator(), into

    def __enter__(self) -> "TimedEmulator":
        began = time.perf_counter()
        self.emulator.start()
        self._into["start_s"].append(time.perf_counter() - began)
        self._into["phases"].append(start_phase_seconds(self.emulator.start_phases))
        return self

    def __exit__(self, *exc: object) -> None:
        began = time.perf_counter()
        self.emulator.stop()
        self._into["stop_s"].append(time.perf_counter() - began)


def kms_generate_mac(samples: int, payload: bytes) -> list[int]:
    """Nanoseconds per boto3 ``GenerateMac`` (HMAC_SHA_256 over ``payload``) against moto on
    127.0.0.1: the round trip of signing through a KMS-style API, without the internet in it."""
    import boto3

    from emulator.kms.moto_process import MotoProcess

    work = Path(tempfile.mkdtemp(prefix="zc-bench-moto-"))
    try:
        with MotoProcess(work / "moto.log") as moto:
            kms = boto3.client("kms", endpoint_url=moto.endpoint_url, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
            try:
                key_id = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
                samples_ns = []
                for index in range(samples + 20):  # the first 20: connection set-up, not timed
                    began = time.perf_counter_ns()
                    kms.generate_mac(KeyId=key_id, Message=payload, MacAlgorithm="HMAC_SHA_256")
                    if index >= 20:
                        samples_ns.append(time.perf_counter_ns() - began)
            finally:
                kms.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return samples_ns


_PLAIN_TEST = "def test_nothing():\n    assert sum([1, 1]) == 2\n"
_KEYS_TEST = textwrap.dedent("""\
    import pytest

    @pytest.mark.parametrize("index", range({keys}))
    def test_a_key_signs(index, zerocopy_key, zerocopy_signer):
        key = zerocopy_key("hmac-sha256", name=f"bench-{{index}}")
        assert len(zerocopy_signer.sign(key.name, b"x")) == 32
    """)


def _pytest_durations(directory: Path, source: str, *options: str) -> dict[tuple[str, str], float]:
    """Each phase's seconds (``--durations``) of a ``pytest`` session over one test file, keyed by
    (phase, test id), plus ("session", "") for the whole session as pytest reports it."""
    import os
    import re

    for old in directory.glob("test_*.py"):
        old.unlink()
    (directory / "test_bench.py").write_text(source)
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "ZEROCOPY_"))}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", "--durations-min=0", *options, str(directory)]
    result = subprocess.run(command, cwd=directory, env=environment, capture_output=True, timeout=300)
    output = (result.stdout + result.stderr).decode(errors="replace")
    if result.returncode:
        raise RuntimeError(f"pytest {' '.join(options)} failed:\n{output[-2000:]}")
    phases = {(match[2], match[3]): float(match[1]) for match in re.finditer(r"^([\d.]+)s (setup|call|teardown) +(\S+)$", output, re.MULTILINE)}
    phases["session", ""] = float(re.search(r"passed in ([\d.]+)s", output)[1])
    return phases


def pytest_plugin_cost(keys: int) -> dict[str, float]:
    """Seconds ``pytest --zerocopy`` adds to a session, from pytest's own timings: the plugin with
    no emulator used (whole session), the first test that signs (its setup starts the emulator,
    its call seals and provisions a key), each further key (the median later test's call), and
    the session's end (stopping the emulator, in the last test's teardown). The first test is also
    given in its two parts: its setup (the emulator starts) and its call (the session's KMS key is
    created and pinned, the first key sealed and provisioned: the enclave's first KMS call imports
    boto3 in the enclave)."""
    directory = Path(tempfile.mkdtemp(prefix="zc-bench-pytest-"))
    try:
        plain = _pytest_durations(directory, _PLAIN_TEST)["session", ""]
        plugin_unused = _pytest_durations(directory, _PLAIN_TEST, "--zerocopy")["session", ""]
        phases = _pytest_durations(directory, _KEYS_TEST.format(keys=keys), "--zerocopy")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    test = "test_bench.py::test_a_key_signs[{}]".format
    later_calls = sorted(phases["call", test(index)] for index in range(1, keys))
    return {
        "plugin_unused_adds_s": plugin_unused - plain,  # noise can make it slightly negative
        "first_signing_test_adds_s": phases["setup", test(0)] + phases["call", test(0)],
        "first_test_setup_s": phases["setup", test(0)],
        "first_test_call_s": phases["call", test(0)],
        "per_further_key_s": later_calls[len(later_calls) // 2],
        "session_end_adds_s": phases["teardown", test(keys - 1)],
    }


# -- the attested session's per-request cost, in process --------------------------------------------
def _binance_answer(request_id: int) -> Any:
    """The HTTP_SIGNATURE a Binance order gets: the query with its 64-hex signature, the key header."""
    import hashlib
    import hmac
    from urllib.parse import urlencode

    from benchmarks.bench_sign import BINANCE_PARAMS
    from enclave.protocol import HttpSignature

    query = urlencode(BINANCE_PARAMS)
    signature = hmac.new(b"s" * 64, query.encode(), hashlib.sha256).hexdigest()
    return HttpSignature(request_id, f"{query}&signature={signature}", b"", (("X-MBX-APIKEY", "k" * 64),))


def _connection_pair(*, attested: bool) -> tuple[Any, Any]:
    """A client and an enclave-side ``Connection``; ``attested``: after a real OPEN_SESSION
    handshake through their frames (X25519, HKDF), so every later frame is sealed both ways."""
    from enclave.protocol import Connection, Role
    from enclave.protocol.frames import SessionAccepted
    from enclave.protocol.messages import OpenSession
    from enclave.protocol.session import ClientHandshake, accept

    client, enclave = Connection(Role.CLIENT), Connection(Role.SERVER)
    if attested:
        handshake = ClientHandshake()
        enclave.receive_data(client.send_control(1, OpenSession(**handshake.fields())))
        accepted = accept(enclave.next_event().fields)
        client.receive_data(enclave.send(SessionAccepted(1, accepted.public_key, b"a document the client would verify", accepted.session)))
        client.next_event()
        client.start_session(handshake.finish(accepted.public_key))
    return client, enclave


def _requests_us(pair: tuple[Any, Any], request: bytes, requests: int) -> float:
    """µs per request through both sides' frames: the client encodes SIGN_HTTP, the enclave
    decodes it and encodes the answer, the client decodes that (no sockets, no signing)."""
    from enclave.protocol import HttpSignature

    client, enclave = pair
    answer = _binance_answer(0)
    query, body, headers = answer.query, answer.body, answer.headers
    began = time.perf_counter_ns()
    for index in range(requests):
        enclave.receive_data(client.send_sign_http(index & 0xFFFF, request))
        asked = enclave.next_event()
        client.receive_data(enclave.send(HttpSignature(asked.request_id, query, body, headers)))
        client.next_event()
    return (time.perf_counter_ns() - began) / requests / 1000


def _aead_calls_us(frames: dict[str, bytes], requests: int) -> float:
    """µs for the four AES-256-GCM calls a sealed request makes (seal and open, each way), with
    ``cryptography`` directly on the same headers and bodies: what no framing code goes below."""
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead, nonce = AESGCM(os.urandom(32)), bytes(12)
    request_header, request_body, answer_header, answer_body = (frames[name] for name in ("request_header", "request_body", "answer_header", "answer_body"))
    sealed_request, sealed_answer = aead.encrypt(nonce, request_body, request_header), aead.encrypt(nonce, answer_body, answer_header)
    encrypt, decrypt = aead.encrypt, aead.decrypt
    began = time.perf_counter_ns()
    for _ in range(requests):
        encrypt(nonce, request_body, request_header)
        decrypt(nonce, sealed_request, request_header)
        encrypt(nonce, answer_body, answer_header)
        decrypt(nonce, sealed_answer, answer_header)
    return (time.perf_counter_ns() - began) / requests / 1000


def _session_calls_us(frames: dict[str, bytes], requests: int) -> float:
    """µs for the four ``Session`` calls a sealed request makes (``seal_frame`` of the request,
    its ``open_body``, ``seal`` of the answer, its ``open_body``): the session's own share."""
    from enclave.protocol.session import ClientHandshake, accept

    handshake = ClientHandshake()
    accepted = accept(handshake.fields())
    client, enclave = handshake.finish(accepted.public_key), accepted.session
    request, answer_header, answer_body = frames["request"], frames["answer_header"], frames["answer_body"]
    began = time.perf_counter_ns()
    for _ in range(requests):
        sealed = client.seal_frame(request)
        enclave.open_body(sealed[:10], sealed[10:])
        sealed = enclave.seal(answer_header, answer_body)
        client.open_body(sealed[:10], sealed[10:])
    return (time.perf_counter_ns() - began) / requests / 1000


def _typical_frames(request: bytes) -> dict[str, bytes]:
    """The plaintext frames of a Binance ``sign_request`` and its answer, and the headers they
    carry once sealed (their length counting the 16-byte tag)."""
    from enclave.protocol import Connection, Role
    from enclave.protocol.frames import HEADER
    from enclave.protocol.session import TAG_SIZE

    frame = Connection(Role.CLIENT).send_sign_http(1, request)
    answer = Connection(Role.SERVER).send(_binance_answer(1))

    def sealed_header(plain: bytes) -> bytes:
        return HEADER.pack(len(plain) - HEADER.size + TAG_SIZE, *HEADER.unpack_from(plain)[1:])

    return {"request": frame, "request_header": sealed_header(frame), "request_body": frame[HEADER.size:],
            "answer_header": sealed_header(answer), "answer_body": answer[HEADER.size:]}


def attested_session_frames(requests: int, rounds: int = 10) -> dict[str, float]:
    """What the attested session adds per ``sign_request``, in this process where it can be
    resolved (the round trip's noise is ±10 µs): the frames of a Binance order and its answer
    through both sides' ``Connection`` (client encode, enclave decode and encode, client
    decode), sealed and plain, interleaved; each the best of ``rounds`` (the least disturbed).
    With, for scale, the same four seals and opens through ``Session`` alone and through
    ``cryptography``'s AES-GCM alone."""
    from zerocopy._client import _sign_http_request

    from benchmarks.bench_sign import BINANCE_PARAMS

    request = _sign_http_request("binance", "POST", "/api/v3/order", BINANCE_PARAMS, None)
    frames = _typical_frames(request)
    pairs = {"plain": _connection_pair(attested=False), "attested": _connection_pair(attested=True)}
    _check_answers_agree(pairs, request)
    best = dict.fromkeys((*pairs, "session", "aead"), float("inf"))
    for _ in range(rounds):
        for name, pair in pairs.items():
            best[name] = min(best[name], _requests_us(pair, request, requests))
        best["session"] = min(best["session"], _session_calls_us(frames, requests))
        best["aead"] = min(best["aead"], _aead_calls_us(frames, requests))
    return {"plain_us": best["plain"], "attested_us": best["attested"], "cost_us": best["attested"] - best["plain"],
            "ratio": best["attested"] / best["plain"], "session_us": best["session"], "aead_us": best["aead"]}


def _check_answers_agree(pairs: dict, request: bytes) -> None:
    """Both pairs carry the same request and answer through (the sealed one is not doing less)."""
    from enclave.protocol import HttpSignature

    for pair in pairs.values():
        client, enclave = pair
        enclave.receive_data(client.send_sign_http(7, request))
        asked = enclave.next_event()
        answer = _binance_answer(asked.request_id)
        client.receive_data(enclave.send(HttpSignature(asked.request_id, answer.query, answer.body, answer.headers)))
        if asked.request_id != 7 or client.next_event() != answer:
            raise RuntimeError("the frames did not carry the request and its answer through")

