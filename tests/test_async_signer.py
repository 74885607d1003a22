"""``zerocopy.AsyncSigner`` against the real enclave on the emulator, and the sync ``Signer`` shared
between threads.

The async tests run their own event loop (``asyncio.run``; pytest-asyncio is not a dependency).
Fake servers here are real processes' worth of sockets: threads on their own Unix sockets speaking
the wire format through the sans-IO core, so the client code under test runs unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import socket
import struct
import threading
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from enclave.protocol import NEED_DATA, Connection, Role, Signature
from zerocopy._client import SEND_FLOOR
from zerocopy import AsyncSigner, ConfigurationError, ConnectionClosed, ConnectionFailed, PolicyRefused, SessionError, Signer, Timeout, UnknownKey, ZeroCopyError
from zerocopy.attestation import verify
from zerocopy.policy import load_policy
from zerocopy.sealing import seal

from reference_signers import hmac_sha256

pytestmark = pytest.mark.zerocopy

HEADER = struct.Struct(">IBBI")  # length, version, type, request id (docs/protocol.md)
OPEN_SESSION, SIGNATURE = 0x15, 0x81
FORGED = b"forged-by-the-host-" + bytes(13)
BINANCE_ORDER = [
    ("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
    ("quantity", "1"), ("price", "0.1"), ("recvWindow", "5000"), ("timestamp", "1499827319559"),
]


@dataclass(frozen=True)
class _Key:
    name: str
    secret: bytes = field(repr=False)


@pytest.fixture(scope="module")
def enclave(zerocopy_emulator):
    """An enclave of the same image for this module: its keys do not count against the session
    enclave's limit of 64, and restarting it disturbs no one."""
    with zerocopy_emulator.launch() as launched:
        yield launched


def _provision(emulator, address: str, name: str, scheme: str = "hmac-sha256", policy: dict | None = None, *, secret: bytes | None = None) -> _Key:
    secret = secret or os.urandom(32).hex().encode()
    kms_key = emulator.kms.create_key()["KeyMetadata"]["Arn"]
    bundle = seal(emulator.kms, key_id=kms_key, name=name, scheme=scheme, secret=secret, api_key="async-test", policy=load_policy(policy))
    with Signer(address) as signer:
        assert signer.provision([bundle.to_json()], credentials=emulator.credentials)[0].loaded
    return _Key(name, secret)


@pytest.fixture(scope="module")
def raw_key(zerocopy_emulator, enclave):
    return _provision(zerocopy_emulator, enclave.address, "async-raw")


@pytest.fixture(scope="module")
def binance_key(zerocopy_emulator, enclave):
    return _provision(zerocopy_emulator, enclave.address, "async-binance", "binance-hmac", {"freshness": {"enabled": False}})


@pytest.fixture(scope="module")
def busy_binance_key(zerocopy_emulator, enclave):
    """Many threads place orders at once: a rate limit above what the test sends."""
    policy = {"freshness": {"enabled": False}, "rate": {"per_second": "100000", "burst": 100000}}
    return _provision(zerocopy_emulator, enclave.address, "async-binance-busy", "binance-hmac", policy)


def _hmac(key, payload: bytes) -> bytes:
    return hmac.new(key.secret, payload, hashlib.sha256).digest()


def _attesting(emulator, address: str, **kwargs) -> AsyncSigner:
    return AsyncSigner(address, expected_pcrs={0: emulator.pcrs[0]}, roots=[emulator.root_certificate], **kwargs)


def _no_tasks_left() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


# -- the same answers as the Signer --------------------------------------------------------------
def test_async_signatures_equal_the_signers_and_verify_independently(zerocopy_emulator, enclave, raw_key, binance_key):
    async def run():
        async with AsyncSigner(enclave.address) as signer:
            return await signer.sign(raw_key.name, b"an order"), await signer.sign_request(binance_key.name, "post", "/api/v3/order", params=BINANCE_ORDER)

    signature, signed = asyncio.run(run())
    with Signer(enclave.address) as sync:
        assert signature == sync.sign(raw_key.name, b"an order") == hmac_sha256(raw_key.secret, b"an order")
        assert signed == sync.sign_request(binance_key.name, "POST", "/api/v3/order", params=BINANCE_ORDER)
    query, _, hex_signature = signed.query.rpartition("&signature=")
    assert hex_signature == hmac_sha256(binance_key.secret, query.encode()).hex()
    assert signed.method == "POST" and signed.headers["X-MBX-APIKEY"]


def test_a_thousand_gathered_signs_share_one_connection_and_each_gets_its_own_answer(zerocopy_emulator, enclave, raw_key):
    payloads = [f"order-{i}".encode() * (1 + i % 7) for i in range(1000)]

    async def run():
        async with AsyncSigner(enclave.address) as signer:
            link = signer._link
            signatures = await asyncio.gather(*(signer.sign(raw_key.name, payload) for payload in payloads))
            assert signer._link is link and not link.waiting  # one connection, nothing left waiting
            return signatures

    assert asyncio.run(run()) == [_hmac(raw_key, payload) for payload in payloads]


def test_keys_attest_and_the_policy_refusal_with_its_rule(zerocopy_emulator, enclave, raw_key, binance_key):
    nonce = b"async-nonce-0123"

    async def run():
        async with AsyncSigner(enclave.address) as signer:
            names = {info.name for info in await signer.keys()}
            document = await signer.attest(nonce)
            with pytest.raises(PolicyRefused) as refused:
                await signer.sign_request(binance_key.name, "POST", "/sapi/v1/capital/withdraw/apply", params={"coin": "BTC", "address": "x", "amount": "1"})
            with pytest.raises(UnknownKey):
                await signer.sign("no-such-key", b"x")
            assert await signer.sign(raw_key.name, b"still fine") == _hmac(raw_key, b"still fine")
            return names, document, refused.value

    names, document, refused = asyncio.run(run())
    assert {raw_key.name, binance_key.name} <= names
    assert verify(document, roots=[zerocopy_emulator.root_certificate], nonce=nonce).pcrs[0] == zerocopy_emulator.pcrs[0]
    assert refused.rule == "funds" and "withdraw" in str(refused)


# -- attested sessions ---------------------------------------------------------------------------
def test_an_attested_async_signer_seals_every_frame(zerocopy_emulator, enclave, raw_key):
    async def run():
        async with _attesting(zerocopy_emulator, enclave.address) as signer:
            assert signer.attested and signer.attestation.pcrs[0] == zerocopy_emulator.pcrs[0]
            return await asyncio.gather(*(signer.sign(raw_key.name, bytes([i])) for i in range(200)))

    assert asyncio.run(run()) == [_hmac(raw_key, bytes([i])) for i in range(200)]


def test_from_env_attests_under_the_same_rules_as_the_signer(zerocopy_emulator, enclave, raw_key, monkeypatch, tmp_path):
    root = tmp_path / "root.pem"
    root.write_bytes(zerocopy_emulator.root_certificate)
    monkeypatch.setenv("ZEROCOPY_ENCLAVE", enclave.address)
    monkeypatch.setenv("ZEROCOPY_ATTESTATION_ROOT", str(root))
    monkeypatch.delenv("ZEROCOPY_EXPECTED_PCR0", raising=False)
    with pytest.raises(ConfigurationError, match="ZEROCOPY_EXPECTED_PCR0"):
        AsyncSigner.from_env()  # a root without a pinned image: refused, never a plain connection
    monkeypatch.setenv("ZEROCOPY_EXPECTED_PCR0", zerocopy_emulator.pcrs[0].hex())

    async def run():
        async with AsyncSigner.from_env() as signer:
            return signer.attested, await signer.sign(raw_key.name, b"env")

    assert asyncio.run(run()) == (True, _hmac(raw_key, b"env"))


@contextlib.contextmanager
def _fake_enclave(tmp_path, upstream: str) -> Iterator[str]:
    """Relays OPEN_SESSION to the real enclave (so the document is genuine and fresh) and answers
    every other request itself with a forged signature."""
    path = str(tmp_path / "fake-enclave.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    served: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError, EOFError):
            client, _ = listener.accept()
            real = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            served.extend((client, real))
            real.connect(upstream.removeprefix("unix://"))
            while True:
                frame, type_code, request_id = _read_frame(client)
                if type_code == OPEN_SESSION:
                    real.sendall(frame)
                    client.sendall(_read_frame(real)[0])
                else:
                    client.sendall(HEADER.pack(len(FORGED), 1, SIGNATURE, request_id) + FORGED)

    thread = threading.Thread(target=serve, name="fake-enclave")
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        listener.close()
        for sock in served:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        thread.join(10)


def _read_frame(sock: socket.socket) -> tuple[bytes, int, int]:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    header = exactly(HEADER.size)
    length, _, type_code, request_id = HEADER.unpack(header)
    return header + exactly(length), type_code, request_id


def test_a_fake_enclave_relaying_the_attestation_is_refused(zerocopy_emulator, enclave, raw_key, tmp_path):
    async def run(address):
        signer = _attesting(zerocopy_emulator, address)
        try:
            await signer.sign(raw_key.name, b"an order")
        except ZeroCopyError as exc:
            return exc, signer.attestation, _no_tasks_left() or "tasks left"
        finally:
            await signer.close()

    with _fake_enclave(tmp_path, enclave.address) as address:
        error, attestation, clean = asyncio.run(run(address))
    assert attestation is not None  # the handshake, relayed, did verify: the forgery is what fails
    assert isinstance(error, SessionError) and "authentication failed" in str(error)
    assert clean is True


# -- timeouts: fail closed -----------------------------------------------------------------------
class _StandInServer:
    """What the stand-in enclaves below share: a listening Unix socket, the connections it
    accepted and the threads serving them, all shut and joined by ``close``."""

    _listener: socket.socket
    _sockets: list[socket.socket]
    _threads: list[threading.Thread]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(10)


class _SlowServer(_StandInServer):
    """Answers each SIGN with ``b"sig:" + payload``; the first request only after ``delay`` s."""

    def __init__(self, tmp_path, delay: float) -> None:
        self.path = str(tmp_path / "slow.sock")
        self.delay, self.requests = delay, 0
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(8)
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, name="slow-accept")]
        self._threads[0].start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                self._sockets.append(client)
                thread = threading.Thread(target=self._serve, args=(client,), name="slow-conn")
                self._threads.append(thread)
                thread.start()

    def _serve(self, client: socket.socket) -> None:
        conn = Connection(Role.SERVER)
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                conn.receive_data(data)
                while (event := conn.next_event()) is not NEED_DATA:
                    self.requests += 1
                    if self.requests == 1:
                        time.sleep(self.delay)
                    client.sendall(conn.send(Signature(event.request_id, b"sig:" + event.payload)))



@pytest.fixture
def slow_server(tmp_path):
    server = _SlowServer(tmp_path, delay=0.6)
    yield server
    server.close()


def test_an_async_timeout_drops_the_late_answer_and_leaves_no_task(slow_server):
    async def run():
        signer = AsyncSigner(f"unix://{slow_server.path}", timeout=0.2)
        with pytest.raises(Timeout, match="did not answer"):
            await signer.sign("k", b"first")
        await asyncio.sleep(0.6)  # the late answer to "first" arrives meanwhile
        signer.timeout = 10  # a busy machine must not make the second call time out too
        second = await signer.sign("k", b"second")
        await signer.close()
        return second, _no_tasks_left()

    assert asyncio.run(run()) == (b"sig:second", True)


def test_a_server_that_never_answers_is_a_timeout_and_no_task_is_left(tmp_path):
    path = str(tmp_path / "silent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    async def run():
        signer = AsyncSigner(f"unix://{path}", timeout=0.3)
        started = time.monotonic()
        outcomes = await asyncio.gather(*(signer.sign("k", b"x") for _ in range(5)), return_exceptions=True)
        elapsed = time.monotonic() - started
        await signer.close()
        with pytest.raises(ConnectionClosed, match="closed"):
            await signer.sign("k", b"x")  # closed by its user: stays closed
        return outcomes, elapsed, _no_tasks_left()

    try:
        outcomes, elapsed, clean = asyncio.run(run())
    finally:
        listener.close()
    assert all(isinstance(outcome, Timeout) for outcome in outcomes) and elapsed < 5 and clean


@contextlib.contextmanager
def _mute_enclave(tmp_path) -> Iterator[tuple[str, list[socket.socket]]]:
    """Accepts connections and never sends a byte (a handshake waits for ever); yields its
    address and the connections it accepted."""
    path = str(tmp_path / "mute.sock")
    accepted: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(8)

        def accept() -> None:
            with contextlib.suppress(OSError):
                while True:
                    accepted.append(listener.accept()[0])

        thread = threading.Thread(target=accept, name="mute-accept")
        thread.start()
        try:
            yield f"unix://{path}", accepted
        finally:
            listener.shutdown(socket.SHUT_RDWR)
            thread.join(10)
            for sock in accepted:
                sock.close()


def test_calls_waiting_while_another_connects_end_within_their_own_timeouts(tmp_path):
    """An attesting AsyncSigner's first call connects to an enclave that accepts and never answers
    the handshake. Calls made meanwhile waited for that attempt with no limit of their own (and
    then each made an attempt of its own, one after another): a provision with a 0.3 s timeout
    waited out the first call's 5 s. Now each waits no longer than its own timeout, and raises
    Timeout having sent nothing, while the first call is still connecting."""
    pin = {0: bytes(range(48))}  # never checked: no document ever comes

    async def run(address: str, accepted: list) -> tuple:
        signer = AsyncSigner(address, expected_pcrs=pin, timeout=5.0)
        first = asyncio.ensure_future(signer.sign("k", b"x"))
        while not accepted:  # the first call holds the connection attempt
            await asyncio.sleep(0.01)
        waiting = [signer.provision([b"{}"], credentials={}, timeout=0.3) for _ in range(4)]
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        first_still_connecting, connections = not first.done(), len(accepted)
        first_outcome = (await asyncio.gather(first, return_exceptions=True))[0]
        await signer.close()
        return outcomes, first_still_connecting, connections, first_outcome, _no_tasks_left()

    with _mute_enclave(tmp_path) as (address, accepted):
        outcomes, first_still_connecting, connections, first_outcome, clean = asyncio.run(run(address, accepted))
    assert all(isinstance(outcome, Timeout) and "nothing was sent" in str(outcome) for outcome in outcomes), outcomes
    assert first_still_connecting and connections == 1
    assert isinstance(first_outcome, Timeout) and clean


def test_a_sync_timeout_drops_the_connection_so_the_late_answer_is_never_read(slow_server):
    with Signer(f"unix://{slow_server.path}", timeout=0.2) as signer:
        with pytest.raises(Timeout):
            signer.sign("k", b"first")
        time.sleep(0.6)
        signer.timeout = 10  # for the new connection the next call opens
        assert signer.sign("k", b"second") == b"sig:second"


# -- restarts and threads ------------------------------------------------------------------------
def test_an_enclave_restarted_mid_gather_gives_typed_errors_and_the_next_call_works(zerocopy_emulator):
    with zerocopy_emulator.launch() as enclave:  # its own: the module's enclave keeps its keys
        secret = _provision(zerocopy_emulator, enclave.address, "async-restart").secret
        outcomes: list = []

        async def worker(signer, stop, index):
            count = 0
            while not stop.is_set():
                payload = f"{index}:{count}".encode()
                count += 1
                try:
                    outcomes.append((payload, await signer.sign("async-restart", payload)))
                except ZeroCopyError as exc:
                    outcomes.append((payload, exc))

        async def run():
            async with AsyncSigner(enclave.address, timeout=30) as signer:
                stop = asyncio.Event()
                workers = [asyncio.create_task(worker(signer, stop, index)) for index in range(8)]
                await asyncio.sleep(0.2)
                await asyncio.to_thread(enclave.restart)
                await asyncio.sleep(0.2)
                stop.set()
                await asyncio.gather(*workers)
                with pytest.raises(UnknownKey, match="not provisioned"):
                    await signer.sign("async-restart", b"after")  # reconnected: the new enclave answers
                await asyncio.to_thread(_provision, zerocopy_emulator, enclave.address, "async-restart", secret=secret)
                return await signer.sign("async-restart", b"after")

        after = asyncio.run(run())
    assert after == hmac.new(secret, b"after", hashlib.sha256).digest()
    errors = [outcome for _, outcome in outcomes if isinstance(outcome, Exception)]
    assert errors and all(isinstance(error, (ConnectionFailed, UnknownKey)) for error in errors)
    signed = [(payload, outcome) for payload, outcome in outcomes if isinstance(outcome, bytes)]
    assert signed and all(outcome == hmac.new(secret, payload, hashlib.sha256).digest() for payload, outcome in signed)


def test_one_signer_shared_by_many_threads_gives_each_call_its_own_answer(zerocopy_emulator, enclave, raw_key, busy_binance_key):
    binance_key = busy_binance_key
    results: dict[tuple[int, int], object] = {}

    def work(signer: Signer, thread: int) -> None:
        for count in range(60):
            payload = f"thread-{thread}-{count}".encode()
            if count % 5:
                results[thread, count] = signer.sign(raw_key.name, payload) == _hmac(raw_key, payload)
            else:
                params = [*BINANCE_ORDER[:-2], ("newClientOrderId", payload.decode()), BINANCE_ORDER[-1]]
                query = signer.sign_request(binance_key.name, "POST", "/api/v3/order", params=params).query
                results[thread, count] = payload.decode() in query and query.endswith(hmac_sha256(binance_key.secret, query.rpartition("&signature=")[0].encode()).hex())

    for attested in (False, True):
        results.clear()
        options = {"expected_pcrs": {0: zerocopy_emulator.pcrs[0]}, "roots": [zerocopy_emulator.root_certificate]} if attested else {}
        with Signer(enclave.address, **options) as signer:
            threads = [threading.Thread(target=work, args=(signer, index)) for index in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        assert len(results) == 12 * 60 and all(ok is True for ok in results.values())


# -- provision, generate, sign_many: the rest of the Signer's API ---------------------------------
def _sealed(emulator, name: str, secret: bytes) -> bytes:
    kms_key = emulator.kms.create_key()["KeyMetadata"]["Arn"]
    return seal(emulator.kms, key_id=kms_key, name=name, scheme="hmac-sha256", secret=secret, api_key="async-test", policy=load_policy(None)).to_json()


def test_async_provision_loads_bundles_and_reports_each_as_the_signer_does(zerocopy_emulator, enclave):
    secret = os.urandom(32).hex().encode()
    bundles = [_sealed(zerocopy_emulator, "async-provisioned", secret), b'{"format": "not a bundle"}']

    async def run():
        async with AsyncSigner(enclave.address) as signer:
            results = await signer.provision(bundles, credentials=zerocopy_emulator.credentials)
            return results, await signer.sign("async-provisioned", b"after provisioning")

    (loaded, garbled), signature = asyncio.run(run())
    assert (loaded.name, loaded.loaded, loaded.error) == ("async-provisioned", True, None)
    assert not garbled.loaded and garbled.error
    assert signature == hmac.new(secret, b"after provisioning", hashlib.sha256).digest()
    with Signer(enclave.address) as sync:  # the same bundle again, through the Signer: the same report
        assert sync.provision(bundles[:1], credentials=zerocopy_emulator.credentials) == [loaded]


def test_async_generate_makes_a_key_whose_public_half_verifies_its_signatures(zerocopy_emulator, enclave):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    async def run():
        async with AsyncSigner(enclave.address) as signer:
            bundle, public_pem = await signer.generate("async-generated", "ed25519", credentials=zerocopy_emulator.credentials)
            return bundle, public_pem, await signer.sign("async-generated", b"made inside")

    bundle, public_pem, signature = asyncio.run(run())
    load_pem_public_key(public_pem.encode()).verify(signature, b"made inside")  # raises if it does not verify
    assert public_pem.encode() not in bundle  # the bundle carries the sealed private key, not the PEM
    with Signer(enclave.address) as sync:
        [again] = sync.provision([bundle], credentials=zerocopy_emulator.credentials)
        assert again.loaded and again.name == "async-generated"
        load_pem_public_key(public_pem.encode()).verify(sync.sign("async-generated", b"reloaded"), b"reloaded")


def test_async_sign_many_answers_in_order_like_the_signer_and_raises_the_first_error_after_all(zerocopy_emulator, enclave, raw_key):
    other = _provision(zerocopy_emulator, enclave.address, "async-many-other")
    items = [((raw_key, other)[i % 2].name, f"item-{i}".encode() * (1 + i % 5)) for i in range(300)]
    expected = [_hmac((raw_key, other)[i % 2], payload) for i, (_, payload) in enumerate(items)]
    broken = items[:10] + [("no-such-key", b"x")] + items[10:20] + [("no-such-key-either", b"y")] + items[20:30]

    async def run():
        async with AsyncSigner(enclave.address) as signer:
            link = signer._link
            signatures = await signer.sign_many(items)
            with pytest.raises(UnknownKey, match="'no-such-key'") as first:
                await signer.sign_many(broken)
            assert signer._link is link and not link.waiting  # one connection, every answer read
            return signatures, first.value, await signer.sign(raw_key.name, b"still fine")

    signatures, error, after = asyncio.run(run())
    assert signatures == expected
    assert "either" not in str(error)  # the first error in the order of the items
    assert after == _hmac(raw_key, b"still fine")
    with Signer(enclave.address) as sync:
        assert sync.sign_many(items) == signatures


@pytest.mark.parametrize("items", [[("k", "text")], [("k", 3)], [("", b"x")], [("k", b"ok"), ("k", None)]], ids=["str", "int", "empty-key", "none"])
def test_sign_many_checks_every_argument_before_connecting_or_sending(items, tmp_path):
    path = str(tmp_path / "never.sock")  # nothing listens: an argument error must come first

    async def run():
        signer = AsyncSigner(f"unix://{path}")
        try:
            await signer.sign_many(items)
        finally:
            await signer.close()

    with pytest.raises((TypeError, ValueError)):
        asyncio.run(run())  # not ConnectionFailed: no connection was tried
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    try:
        with Signer(f"unix://{path}") as signer:
            served, _ = listener.accept()
            with pytest.raises((TypeError, ValueError)):
                signer.sign_many(items)
        served.settimeout(10)
        assert served.recv(1024) == b""  # the Signer closed its connection having sent nothing
        served.close()
    finally:
        listener.close()


@pytest.mark.parametrize(("timeout", "error"), [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("5", TypeError), (True, TypeError)])
def test_a_timeout_that_is_not_a_positive_number_is_refused_by_both_signers(timeout, error, tmp_path):
    address = f"unix://{tmp_path / 'never.sock'}"  # refused before any connection is tried
    with pytest.raises(error, match="timeout"):
        Signer(address, timeout=timeout)
    with pytest.raises(error, match="timeout"):
        AsyncSigner(address, timeout=timeout)
    with pytest.raises(ValueError, match="PCR0"):
        AsyncSigner(address, roots=[b"a root"])  # the shared checks: attesting without a PCR0 pin


def test_provision_arguments_are_checked_the_same_way_by_both_signers(zerocopy_emulator, enclave):
    async def run(bundles):
        async with AsyncSigner(enclave.address) as signer:
            await signer.provision(bundles, credentials=zerocopy_emulator.credentials)

    for bundles in (b"one bundle, not a list", ["a str bundle"], [7]):
        with pytest.raises(TypeError, match="bundle"):
            asyncio.run(run(bundles))
        with Signer(enclave.address) as sync, pytest.raises(TypeError, match="bundle"):
            sync.provision(bundles, credentials=zerocopy_emulator.credentials)
    with pytest.raises(ValueError, match="timeout"):
        with Signer(enclave.address) as sync:
            sync.provision([b"{}"], credentials={}, timeout=0)


class _HungServer(_StandInServer):
    """A hung enclave: accepts connections and reads every request but answers none — until
    ``answering`` is set; connections whose first request arrives after that get ``b"sig:" +
    payload`` per SIGN, each ``delay`` seconds after it arrived (a connection that carried a
    request while hung stays hung; one that carried none is clean, and a Signer may keep it).
    ``received`` lists every payload that arrived."""

    def __init__(self, tmp_path, *, answering: bool = False, delay: float = 0.0) -> None:
        self.path = str(tmp_path / "hung.sock")
        self.answering, self.connections, self.delay = answering, 0, delay
        self.received: list[bytes] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(8)
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, name="hung-accept")]
        self._threads[0].start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                self.connections += 1
                self._sockets.append(client)
                thread = threading.Thread(target=self._serve, args=(client,), name="hung-conn")
                self._threads.append(thread)
                thread.start()

    def _serve(self, client: socket.socket) -> None:
        conn = Connection(Role.SERVER)
        answering = None
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                conn.receive_data(data)
                while (event := conn.next_event()) is not NEED_DATA:
                    answering = self.answering if answering is None else answering
                    self.received.append(event.payload)
                    if answering:
                        time.sleep(self.delay)
                        client.sendall(conn.send(Signature(event.request_id, b"sig:" + event.payload)))



def test_a_shared_signers_timeout_bounds_each_call_its_wait_for_a_turn_included(tmp_path):
    """Threads sharing one Signer take turns, and waiting for a turn did not count against the
    timeout: the last of eight calls queued on an enclave that answers in 0.3 s took 2.4 s against
    its 0.6 s timeout. Each call now ends within its timeout (and scheduling): answered with its
    own signature, or a Timeout — having sent nothing if it never got its turn — and a connection
    a call timed out on is not read for another call's answer."""
    server = _HungServer(tmp_path, answering=True, delay=0.3)
    outcomes: dict[bytes, tuple[object, float]] = {}

    def call(payload: bytes) -> None:
        started = time.monotonic()
        try:
            result: object = signer.sign("k", payload)
        except ZeroCopyError as exc:
            result = exc
        outcomes[payload] = (result, time.monotonic() - started)

    try:
        with Signer(f"unix://{server.path}", timeout=0.6) as signer:
            threads = [threading.Thread(target=call, args=(b"thread-%d" % index,)) for index in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert len(outcomes) == 8
            assert max(took for _, took in outcomes.values()) < 0.6 + 1.0, sorted(took for _, took in outcomes.values())
            answered = {payload: result for payload, (result, _) in outcomes.items() if isinstance(result, bytes)}
            timed_out = {payload: result for payload, (result, _) in outcomes.items() if payload not in answered}
            assert answered and all(result == b"sig:" + payload for payload, result in answered.items())
            assert timed_out and all(isinstance(result, Timeout) for result in timed_out.values())
            assert not any(payload in server.received for payload, result in timed_out.items() if "nothing was sent" in str(result))
            assert signer.sign("k", b"after") == b"sig:after"
    finally:
        server.close()


def test_a_hung_enclave_times_a_shared_signers_calls_out_and_each_drops_its_connection(tmp_path):
    """The Signer's claim, "safe to share between threads, with a timeout that fails closed": a
    call to an enclave that never answers raises Timeout once its timeout has passed (not before,
    not much after); threads sharing the Signer take turns, and each gets its own Timeout within
    its own timeout (waiting for a turn counts); no connection that timed out is used again; and
    once the enclave answers, the next call gets its own answer."""
    server = _HungServer(tmp_path)
    outcomes: list = []

    def call(index: int) -> None:
        try:
            outcomes.append(signer.sign("k", b"thread-%d" % index))
        except ZeroCopyError as exc:
            outcomes.append(exc)

    try:
        with Signer(f"unix://{server.path}", timeout=0.3) as signer:
            started = time.monotonic()
            with pytest.raises(Timeout, match="did not answer within the call's timeout"):
                signer.sign("k", b"first")
            assert 0.29 <= time.monotonic() - started < 3
            threads = [threading.Thread(target=call, args=(index,)) for index in range(4)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert not any(thread.is_alive() for thread in threads) and time.monotonic() - started < 10
            assert len(outcomes) == 4 and all(isinstance(outcome, Timeout) for outcome in outcomes)
            server.answering = True
            assert signer.sign("k", b"after") == b"sig:after"
        # the first; one per thread that got its turn in time (at least the first to get it; the
        # others may time out waiting, having opened nothing); the answered one, unless a thread's
        # connection came too late to send on and was kept clean (a hung one never answers "after")
        assert 1 + 1 <= server.connections <= 1 + 4 + 1
    finally:
        server.close()


def test_closing_a_signer_from_another_thread_ends_a_hung_call_at_once(tmp_path):
    """A thread's call hangs on an enclave that never answers (no timeout); another thread closes
    the Signer. ``close`` waited for the call to end — for ever — holding up the thread that closed
    it. Now it shuts the connection down under the call, which raises ConnectionClosed saying the
    Signer was closed, and ``close`` returns; the Signer stays closed."""
    server = _HungServer(tmp_path)
    outcome: list = []
    threads: list[threading.Thread] = []

    def hung_call() -> None:
        try:
            outcome.append(signer.sign("k", b"hangs"))
        except ZeroCopyError as exc:
            outcome.append(exc)

    try:
        signer = Signer(f"unix://{server.path}", timeout=None)
        caller, closer = threading.Thread(target=hung_call, name="hung-call"), threading.Thread(target=signer.close, name="closer")
        threads += [caller, closer]
        caller.start()
        deadline = time.monotonic() + 20
        while b"hangs" not in server.received and time.monotonic() < deadline:
            time.sleep(0.01)
        closer.start()
        closer.join(10)
        close_returned = not closer.is_alive()
        caller.join(10)
        call_ended = not caller.is_alive()
    finally:
        server.close()  # unblocks whatever is still hung
        for thread in threads:
            if thread.ident is not None:
                thread.join(10)
    assert close_returned and call_ended
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosed) and "Signer was closed" in str(outcome[0])
    with pytest.raises(ConnectionClosed, match="closed"):
        signer.sign("k", b"after")


# -- a budget spent connecting: nothing is sent -----------------------------------------------------
class _LateHandshakeRelay(_StandInServer):
    """Relays OPEN_SESSION to the real enclave (a genuine, fresh document) and holds the SESSION
    answer until ``hold_until`` (monotonic) on every connection after the first ``prompt`` ones;
    a connection in ``close_after_handshake`` is closed right after its answer. Frames after the
    handshake are recorded by type, never forwarded: the enclave signs nothing through it."""

    def __init__(self, tmp_path, upstream: str, *, prompt: int = 0, close_after_handshake: int = 0) -> None:
        self.path = str(tmp_path / "late-handshake.sock")
        self.upstream, self.prompt, self.close_after_handshake = upstream.removeprefix("unix://"), prompt, close_after_handshake
        self.hold_until = 0.0
        self.received: list[int] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(4)
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._serve, name="late-handshake")]
        self._threads[0].start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            for index in range(8):
                client, _ = self._listener.accept()
                self._sockets.append(client)
                self._handshake(client, held=index >= self.prompt)
                if index < self.close_after_handshake:
                    client.close()
                    continue
                threading.Thread(target=self._record, args=(client,), daemon=True).start()

    def _handshake(self, client: socket.socket, *, held: bool) -> None:
        frame, type_code, _ = _read_frame(client)
        assert type_code == OPEN_SESSION
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as real:
            real.connect(self.upstream)
            real.sendall(frame)
            answer = _read_frame(real)[0]
        if held:
            time.sleep(max(0.0, self.hold_until - time.monotonic()))
        client.sendall(answer)

    def _record(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError, EOFError):
            while True:
                self.received.append(_read_frame(client)[1])



#: The handshake's answer is sent this long before the call's deadline: under SEND_FLOOR left by
#: the time it is read and its document verified (a millisecond or more), whatever the scheduling.
_HELD_TO = SEND_FLOOR
SIGN = 0x01


def test_an_async_call_whose_budget_ran_out_while_attesting_sends_nothing(zerocopy_emulator, enclave, raw_key, tmp_path):
    """The handshake's answer is held until the call has under SEND_FLOOR left. The call sent its
    SIGN anyway with ~0 s left and raised Timeout at once, and the enclave signed it (counting it
    against the key's rate and notional limits). Now it raises Timeout saying nothing was sent,
    and nothing was."""
    relay = _LateHandshakeRelay(tmp_path, enclave.address)

    async def run() -> tuple:
        signer = _attesting(zerocopy_emulator, f"unix://{relay.path}", timeout=2.0)
        relay.hold_until = time.monotonic() + 2.0 - _HELD_TO  # the call's deadline is a moment later
        error = None
        try:
            await signer.sign(raw_key.name, b"an order")
        except ZeroCopyError as exc:
            error = exc
        finally:
            await signer.close()
        return error, _no_tasks_left()

    try:
        error, clean = asyncio.run(run())
        time.sleep(0.2)  # a SIGN sent would have reached the relay by now
    finally:
        relay.close()
    assert isinstance(error, Timeout) and clean, error
    assert SIGN not in relay.received, relay.received
    # Had the answer come after the deadline, the handshake itself timed out: that sends nothing either.
    assert "nothing was sent" in str(error) or "did not answer" in str(error), error


def test_a_signer_call_whose_budget_ran_out_while_reconnecting_sends_nothing(zerocopy_emulator, enclave, raw_key, tmp_path):
    """The same for the Signer: its first connection is closed under it, so the call reconnects,
    and the new handshake's answer comes with under SEND_FLOOR of the call left."""
    relay = _LateHandshakeRelay(tmp_path, enclave.address, prompt=1, close_after_handshake=1)
    try:
        signer = Signer(f"unix://{relay.path}", expected_pcrs={0: zerocopy_emulator.pcrs[0]}, roots=[zerocopy_emulator.root_certificate], timeout=2.0)
        with signer:
            relay.hold_until = time.monotonic() + 2.0 - _HELD_TO
            with pytest.raises(Timeout) as raised:
                signer.sign(raw_key.name, b"an order")
        time.sleep(0.2)
    finally:
        relay.close()
    assert SIGN not in relay.received, relay.received
    assert "nothing was sent" in str(raised.value) or "did not answer" in str(raised.value), raised.value
