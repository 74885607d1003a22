"""``Signer(address, busy_poll_us=N)``: it spins for its answer before sleeping, signs exactly what a
sleeping Signer signs, and its timeout still bounds every call.

Against the real enclave on the emulator (an enclave of this module's own, its keys not counted
against the session enclave's), and a real Unix-socket server that answers late or never. No
timing ratios here: what spinning saves is measured in ``benchmarks/`` (``run_all.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import socket
import threading
import time

import pytest

from enclave.protocol import NEED_DATA, Connection, Role, Signature
from zerocopy import AsyncSigner, Signer, Timeout
from zerocopy.sealing import seal

pytestmark = pytest.mark.zerocopy

BINANCE_ORDER = [("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("quantity", "1"), ("price", "0.1"), ("timestamp", "1499827319559")]


@pytest.fixture(scope="module")
def enclave(zerocopy_emulator):
    with zerocopy_emulator.launch() as launched:
        yield launched


@pytest.fixture(scope="module")
def secrets(zerocopy_emulator, enclave) -> dict[str, bytes]:
    """Two keys loaded into the module's enclave: a raw HMAC key and a Binance one."""
    secrets = {"spin-raw": os.urandom(32).hex().encode(), "spin-binance": os.urandom(32).hex().encode()}
    kms_key = zerocopy_emulator.kms.create_key()["KeyMetadata"]["Arn"]
    bundles = [
        seal(zerocopy_emulator.kms, key_id=kms_key, name="spin-raw", scheme="hmac-sha256", secret=secrets["spin-raw"]).to_json(),
        seal(zerocopy_emulator.kms, key_id=kms_key, name="spin-binance", scheme="binance-hmac", secret=secrets["spin-binance"], api_key="spin",
             policy={"freshness": {"enabled": False}}).to_json(),
    ]  # fmt: skip
    with Signer(enclave.address) as signer:
        assert all(result.loaded for result in signer.provision(bundles, credentials=zerocopy_emulator.credentials))
    return secrets


@pytest.mark.parametrize("busy_poll_us", [1, 200, 1_000_000])
def test_a_spinning_signer_signs_what_a_sleeping_one_signs(busy_poll_us, enclave, secrets):
    payloads = [b"", b"x", os.urandom(300), b"symbol=BTCUSDT&side=BUY"]
    with Signer(enclave.address) as sleeping, Signer(enclave.address, busy_poll_us=busy_poll_us) as spinning:
        assert spinning.busy_poll_us == busy_poll_us and sleeping.busy_poll_us == 0
        for payload in payloads:
            expected = hmac.new(secrets["spin-raw"], payload, hashlib.sha256).digest()
            assert spinning.sign("spin-raw", payload) == sleeping.sign("spin-raw", payload) == expected
        assert spinning.sign_many([("spin-raw", payload) for payload in payloads * 100]) == sleeping.sign_many([("spin-raw", payload) for payload in payloads * 100])
        spun = spinning.sign_request("spin-binance", "POST", "/api/v3/order", params=BINANCE_ORDER)
        slept = sleeping.sign_request("spin-binance", "POST", "/api/v3/order", params=BINANCE_ORDER)
    query = "&".join(f"{name}={value}" for name, value in BINANCE_ORDER)
    assert spun == slept and spun.query.endswith("signature=" + hmac.new(secrets["spin-binance"], query.encode(), hashlib.sha256).hexdigest())


class _LateServer:
    """A real Unix-socket server answering each SIGN with ``b"sig:" + payload`` after ``delay``
    seconds, or never (``delay=None``: it reads and keeps quiet)."""

    def __init__(self, path: str, delay: float | None) -> None:
        self.path, self.delay = path, delay
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(4)
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="late-server")
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self._listener.accept()
            self._clients.append(client)
            conn = Connection(Role.SERVER)
            while data := client.recv(65536):
                conn.receive_data(data)
                while (event := conn.next_event()) is not NEED_DATA:
                    if self.delay is not None:
                        time.sleep(self.delay)
                        client.sendall(conn.send(Signature(event.request_id, b"sig:" + event.payload)))

    def close(self) -> None:
        for sock in (self._listener, *self._clients):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(10)


@pytest.fixture
def late_server(tmp_path, request):
    server = _LateServer(str(tmp_path / "late.sock"), request.param)
    yield server
    server.close()


@pytest.mark.parametrize("late_server", [0.3], indirect=True)
def test_an_answer_later_than_the_spin_is_still_taken_from_the_blocking_wait(late_server):
    with Signer(f"unix://{late_server.path}", busy_poll_us=1000, timeout=10) as signer:
        assert signer.sign("k", b"late") == b"sig:late"
        assert signer.sign("k", b"again") == b"sig:again"


@pytest.mark.parametrize("late_server", [None], indirect=True)
def test_the_timeout_bounds_a_call_that_spins_longer_than_it(late_server):
    """A spin of up to a second inside a 0.2 s timeout ends at the timeout: spinning past the
    deadline and then waiting would take a second or more."""
    with Signer(f"unix://{late_server.path}", busy_poll_us=1_000_000, timeout=0.2) as signer:
        started = time.monotonic()
        with pytest.raises(Timeout, match="did not answer"):
            signer.sign("k", b"never answered")
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(("busy_poll_us", "error"), [(-1, ValueError), (1_000_001, ValueError), (1.5, TypeError), ("100", TypeError), (True, TypeError), (None, TypeError)])
def test_a_busy_poll_that_is_not_a_whole_number_of_microseconds_is_refused(busy_poll_us, error, tmp_path):
    address = f"unix://{tmp_path / 'never.sock'}"  # refused before any connection is tried
    with pytest.raises(error, match="busy_poll_us"):
        Signer(address, busy_poll_us=busy_poll_us)


def test_the_async_signer_does_not_spin_and_says_so():
    assert "busy_poll_us" in (AsyncSigner.__doc__ or "") and "busy_poll_us" not in AsyncSigner.__init__.__code__.co_varnames


@pytest.mark.parametrize("value", ["-1", "10001", "1.5", "lots"])
def test_the_enclaves_busy_poll_option_refuses_a_value_out_of_range_rather_than_clamping_it(value, capsys):
    from enclave.__main__ import build_parser

    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["--busy-poll-us", value])
    assert exit.value.code == 2 and "--busy-poll-us" in capsys.readouterr().err


def test_the_enclaves_busy_poll_option_takes_what_the_eif_runs():
    from pathlib import Path

    from enclave.__main__ import build_parser, parse_arguments

    assert build_parser().parse_args(["--busy-poll-us", "100"]).busy_poll_us == 100 and build_parser().parse_args([]).busy_poll_us == 0
    # The image runs `python -m enclave --config` on its measured configuration file, which spins 100 µs.
    enclave_dir = Path(__file__).resolve().parent.parent / "enclave"
    assert "--config" in (enclave_dir / "Dockerfile").read_text()
    assert parse_arguments(["--config", str(enclave_dir / "enclave.toml")]).busy_poll_us == 100


@pytest.mark.parametrize("late_server", [None], indirect=True)
@pytest.mark.parametrize("busy_poll_us", [0, 100])
def test_the_timeout_holds_while_timer_signals_keep_interrupting_the_wait(late_server, busy_poll_us):
    """A sampling profiler's timer signal interrupts the wait every 5 ms. A kernel receive timeout
    (SO_RCVTIMEO) would start again after each interruption and never end; the Signer's wait is a
    poll for what is left of the call, so the call still ends at its timeout."""
    import signal

    interrupted = []
    previous = signal.signal(signal.SIGALRM, lambda *_: interrupted.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
    try:
        with Signer(f"unix://{late_server.path}", busy_poll_us=busy_poll_us, timeout=0.3) as signer:
            started = time.monotonic()
            with pytest.raises(Timeout, match="did not answer"):
                signer.sign("k", b"never answered")
            took = time.monotonic() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert 0.29 <= took < 1.5 and len(interrupted) > 10, (took, len(interrupted))
