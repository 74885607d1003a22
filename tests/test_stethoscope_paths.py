"""``zerocopy stethoscope``'s sign-path and exchange-path findings, against deliberately bad setups
made here on 127.0.0.1 and their good counterparts: a TCP hop with Nagle on in front of the real
emulated enclave, a hop that is slow to connect, a heap full of tracked objects, an HTTP server that
closes every connection, a TLS server that never resumes a session, a server clock 5 s off.

The faults are large (a 40 ms delayed-ACK stall, 30 ms per connection, seconds of skew), so the
findings' own classification is the only threshold here."""

from __future__ import annotations

import datetime as dt
import email.utils
import gc
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.pki import TlsAuthority
from zerocopy._cli import main
from zerocopy._stethoscope import FAIL, PASS, SKIP, WARN
from zerocopy._stethoscope_paths import check_url, exchange_path, gc_pauses, histogram, histogram_lines, sign_path
from zerocopy.errors import ConfigurationError


def _by_check(findings: list[dict]) -> dict[str, str]:
    return {finding["check"]: finding["status"] for finding in findings}


# -- a TCP hop in front of the enclave (as socat or a sidecar proxy would be) -----------------------
class TcpHop:
    """Forwards 127.0.0.1:PORT to the enclave's Unix socket. ``split`` writes each answer in two
    sends (a length prefix, then the rest: the write-write-read Nagle punishes); ``nodelay`` sets
    TCP_NODELAY on the client side; ``connect_delay`` is paid once per accepted connection."""

    def __init__(self, unix_address: str, *, nodelay: bool, split: bool = True, connect_delay: float = 0.0) -> None:
        self.path = unix_address.removeprefix("unix://")
        self.nodelay, self.split, self.connect_delay = nodelay, split, connect_delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []
        self._start(self._accept)

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            time.sleep(self.connect_delay)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(self.nodelay))
            enclave = socket.socket(socket.AF_UNIX)
            enclave.connect(self.path)
            self.sockets += [client, enclave]
            self._start(self._pump, client, enclave, False)
            self._start(self._pump, enclave, client, self.split)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, split: bool) -> None:
        try:
            while data := source.recv(65536):
                if split and len(data) > 4:
                    sink.sendall(data[:4])
                    data = data[4:]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        except OSError:
            pass
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self.threads:
            thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()
        assert not any(thread.is_alive() for thread in self.threads), "the hop's threads did not stop"


@contextmanager
def tcp_hop(emulator, **options) -> Iterator[TcpHop]:
    hop = TcpHop(emulator.address, **options)
    try:
        yield hop
    finally:
        hop.close()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """The fix the GC finding recommends: the start-up heap moved out of the collector's sight."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.zerocopy
def test_a_direct_unix_path_with_a_frozen_heap_passes(zerocopy_emulator) -> None:
    with frozen_heap():
        report = sign_path(zerocopy_emulator.address, samples=100)
    checks = _by_check(report["findings"])
    assert checks == {"connect": PASS, "round trip vs the floor": PASS, "Nagle (TCP_NODELAY)": SKIP, "connection per request": PASS, "GC pauses": PASS}
    assert sum(bucket["count"] for bucket in report["histogram"]) == 100


@pytest.mark.zerocopy
def test_a_tcp_hop_with_nagle_on_is_diagnosed_and_one_with_nodelay_passes(zerocopy_emulator) -> None:
    with tcp_hop(zerocopy_emulator, nodelay=False) as hop:
        bad = _by_check(sign_path(hop.address, samples=30)["findings"])
    assert bad["Nagle (TCP_NODELAY)"] == FAIL and bad["round trip vs the floor"] == FAIL
    with tcp_hop(zerocopy_emulator, nodelay=True) as hop:
        good = _by_check(sign_path(hop.address, samples=100)["findings"])
    assert good["Nagle (TCP_NODELAY)"] == PASS and good["round trip vs the floor"] != FAIL


@pytest.mark.zerocopy
def test_a_path_slow_to_connect_warns_against_a_connection_per_request(zerocopy_emulator) -> None:
    with tcp_hop(zerocopy_emulator, nodelay=True, connect_delay=0.03) as hop:
        report = sign_path(hop.address, samples=50)
    finding = next(finding for finding in report["findings"] if finding["check"] == "connection per request")
    assert finding["status"] == WARN and finding["cost_us"] >= 30_000 and "keep one Signer" in finding["fix"]


@pytest.mark.zerocopy
def test_a_heap_of_tracked_objects_is_a_gc_finding(zerocopy_emulator) -> None:
    hoard = [[index] for index in range(1_500_000)]  # 1.5M containers the collector walks at every full collection
    try:
        report = sign_path(zerocopy_emulator.address, samples=30)
    finally:
        del hoard
    finding = next(finding for finding in report["findings"] if finding["check"] == "GC pauses")
    assert finding["status"] in (WARN, FAIL) and "gc.freeze()" in finding["fix"]


# -- the GC check a bot calls on itself ------------------------------------------------------------
def _assert_names_a_public_function(text: str) -> None:
    """``text`` tells the bot to call ``zerocopy.<module>.<function>()``: that name exists, public."""
    import importlib
    import re

    named = re.search(r"zerocopy\.(\w+)\.(\w+)\(\)", text)
    assert named and not named[1].startswith("_"), text
    assert callable(getattr(importlib.import_module(f"zerocopy.{named[1]}"), named[2]))


def _allocating(containers: int) -> None:
    """Work that allocates containers as a market-data handler does: young collections fire."""
    book = {}
    for update in range(containers):
        book[update % 1000] = [update]


def test_the_bots_own_gc_check_counts_the_collections_of_its_work_and_times_a_full_one() -> None:
    finding = gc_pauses(during=lambda: _allocating(200_000))
    assert finding["check"] == "GC pauses" and finding["status"] in (PASS, WARN, FAIL)
    collections = int(finding["measured"].split(" collections while during() ran")[0])
    assert collections >= 1 and "tracked objects takes" in finding["measured"]
    assert finding["cost_us"] > 0
    json.dumps(finding)


def test_the_bots_own_gc_check_flags_a_large_heap_and_passes_it_frozen() -> None:
    hoard = [[index] for index in range(1_500_000)]  # 1.5M containers the collector walks at every full collection
    try:
        large = gc_pauses()
        with frozen_heap():
            frozen = gc_pauses()
    finally:
        del hoard
    assert large["status"] in (WARN, FAIL) and "gc.freeze()" in large["fix"] and large["cost_us"] >= 1_000
    assert large["measured"].startswith("a full collection of this process's") and "while during() ran" not in large["measured"]  # nothing watched, no count
    assert frozen["status"] == PASS and frozen["fix"] == "" and frozen["cost_us"] < 1_000


def test_the_public_stethoscope_is_the_one_the_cli_runs() -> None:
    import zerocopy.stethoscope as public
    from zerocopy import _stethoscope, _stethoscope_paths

    assert public.gc_pauses is _stethoscope_paths.gc_pauses and public.sign_path is sign_path and public.exchange_path is exchange_path
    assert public.host_findings is _stethoscope.host_findings and (public.PASS, public.WARN, public.FAIL, public.SKIP) == (PASS, WARN, FAIL, SKIP)
    assert set(public.__all__) <= set(dir(public))


# -- exchanges made here ---------------------------------------------------------------------------
class Exchange(BaseHTTPRequestHandler):
    """``skew`` seconds added to the Date header and to ``/api/v3/time``; ``keep_alive`` False
    answers HTTP/1.0 and closes each connection."""

    skew = 0.0
    keep_alive = True
    wbufsize = 1 << 16  # the whole answer in one write (unbuffered, the body waits for a delayed ACK)

    def do_GET(self) -> None:
        now = time.time() + self.skew
        body = json.dumps({"serverTime": int(now * 1000)}).encode() if self.path == "/api/v3/time" else b"{}"
        self.send_response_only(200)
        self.send_header("Date", email.utils.formatdate(now, usegmt=True))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


@contextmanager
def exchange(*, skew: float = 0.0, keep_alive: bool = True, tls: ssl.SSLContext | None = None, one_write: bool = True) -> Iterator[str]:
    options = {"skew": skew, "keep_alive": keep_alive, "protocol_version": "HTTP/1.1" if keep_alive else "HTTP/1.0", "wbufsize": 1 << 16 if one_write else 0}
    handler = type("Handler", (Exchange,), options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def authority(tmp_path_factory) -> tuple[TlsAuthority, Path]:
    authority = TlsAuthority()
    directory = tmp_path_factory.mktemp("tls")
    (directory / "ca.pem").write_bytes(authority.root_pem)
    return authority, directory


def _server_context(authority: tuple[TlsAuthority, Path], *, tickets: int) -> ssl.SSLContext:
    tls_authority, directory = authority
    issued = tls_authority.server_certificate("localhost")
    (directory / "server.pem").write_bytes(issued.pem + tls_authority.key_pem(issued))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.pem")
    context.num_tickets = tickets  # 0: no TLS 1.3 session tickets, so nothing to resume with
    return context


def _client_context(authority: tuple[TlsAuthority, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(authority[1] / "ca.pem"))


def test_a_good_plain_http_exchange_passes() -> None:
    with exchange() as url:
        report = exchange_path(url + "/api/v3/ping", samples=10)
    assert _by_check(report["findings"]) == {"DNS": PASS, "TCP connect": PASS, "keep-alive": PASS, "answers held by Nagle": PASS, "clock offset": PASS}
    assert sum(bucket["count"] for bucket in report["histogram"]) == 10


def test_a_server_answering_in_two_writes_with_nagle_on_warns() -> None:
    with exchange(one_write=False) as url:  # http.server's default: headers, then the body, unbuffered
        finding = exchange_path(url + "/", samples=10)["findings"][3]
    assert finding["check"] == "answers held by Nagle" and finding["status"] == WARN and finding["cost_us"] >= 30_000


def test_a_server_closing_every_connection_warns() -> None:
    with exchange(keep_alive=False) as url:
        finding = exchange_path(url + "/", samples=5)["findings"][2]
    assert finding["check"] == "keep-alive" and finding["status"] == WARN and "5 of 5" in finding["measured"]


@pytest.mark.parametrize(("path", "how"), [("/", "Date header"), ("/api/v3/ping", "/api/v3/time")])
def test_a_clock_5_s_off_is_what_binance_refuses(path: str, how: str) -> None:
    with exchange(skew=-5.0) as url:  # the server is 5 s behind: this clock is 5 s ahead
        finding = exchange_path(url + path, samples=3)["findings"][-1]
    assert finding["check"] == "clock offset" and finding["status"] == FAIL and how in finding["measured"] and "-1021" in finding["measured"]
    with exchange(skew=8.0) as url:  # 8 s ahead: this clock is behind by more than recvWindow
        assert exchange_path(url + path, samples=3)["findings"][-1]["status"] == FAIL


def test_tls_with_session_resumption_passes_and_without_it_warns(authority) -> None:
    with exchange(tls=_server_context(authority, tickets=2)) as url:
        good = _by_check(exchange_path(url + "/", samples=5, context=_client_context(authority))["findings"])
    assert good == {"DNS": PASS, "TCP connect": PASS, "TLS handshake": PASS, "TLS session resumption": PASS, "keep-alive": PASS, "answers held by Nagle": PASS, "clock offset": PASS}
    with exchange(tls=_server_context(authority, tickets=0)) as url:
        bad = exchange_path(url + "/", samples=5, context=_client_context(authority))["findings"]
    resumption = next(finding for finding in bad if finding["check"] == "TLS session resumption")
    assert resumption["status"] == WARN and "full handshake" in resumption["measured"] and resumption["fix"]


def test_an_untrusted_certificate_and_a_closed_port_fail_cleanly(authority) -> None:
    with exchange(tls=_server_context(authority, tickets=2)) as url:
        tls = _by_check(exchange_path(url + "/", samples=3)["findings"])  # the system's CAs do not know ours
    assert tls["TLS handshake"] == FAIL and tls["TLS session resumption"] == SKIP
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    closed = _by_check(exchange_path(f"http://127.0.0.1:{port}/", samples=3)["findings"])
    assert closed == {"DNS": PASS, "TCP connect": FAIL}


class GarbageServer:
    """Answers every connection with ``reply`` (whatever it is) and closes it."""

    def __init__(self) -> None:
        self.reply = b""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def garbage_server() -> Iterator[GarbageServer]:
    server = GarbageServer()
    yield server
    server.close()


def _response(date: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nDate: " + date + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


SERVER_TIMES = st.builds(lambda value: json.dumps({"serverTime": value}).encode(), st.one_of(st.integers(), st.floats(), st.text(max_size=10)))
HTTP_ISH = st.one_of(st.binary(max_size=300), st.builds(_response, st.binary(max_size=60), st.one_of(st.binary(max_size=60), SERVER_TIMES)))


@settings(max_examples=60, deadline=None)
@given(HTTP_ISH, st.sampled_from(["/", "/api/v3/ping"]))
def test_an_exchange_answering_garbage_is_findings_never_a_crash(garbage_server: GarbageServer, reply: bytes, path: str) -> None:
    garbage_server.reply = reply
    findings = exchange_path(garbage_server.url + path, samples=2)["findings"]
    assert {finding["status"] for finding in findings} <= {PASS, WARN, FAIL, SKIP}
    assert [finding["check"] for finding in findings] == ["DNS", "TCP connect", "keep-alive", "answers held by Nagle", "clock offset"]


@pytest.mark.parametrize("url", ["ftp://example.com/", "http:///nohost", "http://127.0.0.1:99999/", "binance.com", ""])
def test_a_url_it_cannot_measure_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        exchange_path(url)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_url_garbage_is_accepted_or_refused_never_a_crash(text: str) -> None:
    try:
        check_url(text)
    except ConfigurationError:
        pass


@given(st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False), max_size=200))
def test_the_histogram_counts_every_sample_once(samples: list[float]) -> None:
    buckets = histogram(samples)
    assert sum(bucket["count"] for bucket in buckets) == len(samples)
    assert all(bucket["low_us"] * 2 == bucket["high_us"] for bucket in buckets)
    assert len(histogram_lines(buckets)) == len(buckets)


@pytest.mark.zerocopy
def test_the_command_reports_both_paths_with_progress_and_a_histogram(zerocopy_emulator, tmp_path, capsys) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(zerocopy_emulator.root_certificate)
    pin = ["--enclave", zerocopy_emulator.address, "--root", str(root), "--pcr0", zerocopy_emulator.pcrs[0].hex(), "--samples", "30"]
    with exchange(skew=-5.0) as url:
        assert main(["stethoscope", *pin, "--exchange-url", url + "/", "--json"]) == 0
        captured = capsys.readouterr()
        report = json.loads(captured.out)
        assert _by_check(report["exchange"]["findings"])["clock offset"] == FAIL
        assert _by_check(report["sign_path"]["findings"])["GC pauses"] == SKIP  # the CLI's heap is not the bot's
        _assert_names_a_public_function(next(finding for finding in report["sign_path"]["findings"] if finding["check"] == "GC pauses")["measured"])
        assert "stethoscope: sign path:" in captured.err and "stethoscope: exchange path:" in captured.err
        assert main(["stethoscope", *pin, "--exchange-url", url + "/"]) == 0
    out = capsys.readouterr().out
    assert "exchange FAIL  clock offset" in out and "fix: sync this clock" in out and "sign path round trips" in out and "█" in out
    assert main(["stethoscope", *pin, "--exchange-url", "ftp://x/"]) == 1
    assert "--exchange-url must be http" in capsys.readouterr().err
    assert main(["stethoscope", *pin, "--exchange-url", "https://localhost/", "--exchange-ca", str(tmp_path / "missing.pem")]) == 1
    assert "--exchange-ca" in capsys.readouterr().err


def test_a_server_closing_silently_after_each_answer_warns(garbage_server: GarbageServer) -> None:
    garbage_server.reply = _response(email.utils.formatdate(usegmt=True).encode(), b"{}")  # HTTP/1.1, no "Connection: close"
    findings = {finding["check"]: finding for finding in exchange_path(garbage_server.url + "/", samples=4)["findings"]}
    assert findings["keep-alive"]["status"] == WARN and "3 of 4" in findings["keep-alive"]["measured"]
    assert findings["clock offset"]["status"] == PASS
