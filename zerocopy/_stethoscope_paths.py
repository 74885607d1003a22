"""The Stethoscope's sign path and exchange path: what a bot pays between deciding and the exchange.

Everything here is measured, not guessed: the sign path with the same probe as ``examine`` (a key
name never loaded: the whole hot path but the signature), the exchange path with plain sockets,
``ssl`` and ``http.client`` against the URL given. Each finding has the shape of the host's
(``check``, ``status``, ``measured``, ``cost_us``, ``fix``).
"""

from __future__ import annotations

import gc
import http.client
import json
import math
import socket
import ssl
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._stethoscope import FAIL, PASS, PROBE_KEY, SKIP, WARN, _finding

__all__ = ["sign_path", "gc_pauses", "exchange_path", "check_url", "histogram", "histogram_lines", "finding_lines"]

Progress = Callable[[str], None]

#: Linux's shortest delayed-ACK timer is 40 ms (others use up to 200 ms): a round trip that waits
#: for it is Nagle holding back a second small write until the first is acknowledged.
DELAYED_ACK_BAND_US = (30_000.0, 500_000.0)
#: Binance (-1021) refuses a timestamp more than 1 s ahead of its clock, or older than recvWindow.
AHEAD_LIMIT_S = 1.0
RECV_WINDOW_S = 5.0


def _quiet(_: str) -> None:
    pass


def _p50(samples_us: list[float]) -> float:
    return statistics.median(samples_us) if samples_us else 0.0


def _timed_us(call: Callable[[], object]) -> tuple[float, Any]:
    start = time.perf_counter_ns()
    result = call()
    return (time.perf_counter_ns() - start) / 1000, result


# -- a terminal histogram ---------------------------------------------------------------------------
def histogram(samples_us: list[float]) -> list[dict[str, float]]:
    """Counts in power-of-two buckets of µs (``low`` ≤ sample < ``high``), empty ends trimmed."""
    counts: dict[int, int] = {}
    for sample in samples_us:
        exponent = max(0, int(max(sample, 1.0)).bit_length() - 1)
        counts[exponent] = counts.get(exponent, 0) + 1
    if not counts:
        return []
    return [{"low_us": float(2**e), "high_us": float(2 ** (e + 1)), "count": counts.get(e, 0)} for e in range(min(counts), max(counts) + 1)]


def histogram_lines(buckets: list[dict[str, float]], width: int = 40) -> list[str]:
    most = max((bucket["count"] for bucket in buckets), default=0)
    lines = []
    for bucket in buckets:
        bar = "█" * round(width * bucket["count"] / most) if most else ""
        lines.append(f"  {_us(bucket['low_us']):>7}–{_us(bucket['high_us']):<7} {bar} {int(bucket['count'])}")
    return lines


def _us(value: float) -> str:
    return f"{value / 1e6:.3g} s" if value >= 1e6 else f"{value / 1e3:.3g} ms" if value >= 1e3 else f"{value:.3g} µs"


# -- the sign path ----------------------------------------------------------------------------------
class _GcWatch:
    """Every collection in this process while it is installed, timed from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.pauses_us: list[float] = []
        self._started: int | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        elif self._started is not None:
            self.pauses_us.append((time.perf_counter_ns() - self._started) / 1000)
            self._started = None

    @contextmanager
    def installed(self) -> Iterator["_GcWatch"]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


def _probe(signer: Any) -> None:
    from .errors import UnknownKey

    try:
        signer.sign(PROBE_KEY, b"probe")
    except UnknownKey:
        pass


def _new_connection_probe(address: str) -> None:
    from . import Signer

    with Signer(address) as signer:
        _probe(signer)


def sign_path(address: str, *, samples: int = 200, progress: Progress = _quiet, gc_of_this_process: bool = True) -> dict[str, Any]:
    """Findings on the way from this process to the enclave at ``address``, and the round trips'
    histogram. The GC finding is this process's: meaningful when the bot itself calls this (the
    CLI passes ``gc_of_this_process=False`` and gets a SKIP saying so)."""
    from . import Signer
    from ._latency import EchoServer

    connects = max(5, min(samples // 5, 50))
    with _GcWatch().installed() as watch:
        progress(f"sign path: {connects} connects")
        connect_us = [_timed_us(lambda: Signer(address).close())[0] for _ in range(connects)]
        with Signer(address) as signer:
            nodelay = _nodelay(signer)
            progress(f"sign path: {samples} round trips on one connection")
            for _ in range(min(samples, 20)):
                _probe(signer)
            reused_us = [_timed_us(lambda: _probe(signer))[0] for _ in range(samples)]
        progress(f"sign path: {connects} round trips on a new connection each")
        fresh_us = [_timed_us(lambda: _new_connection_probe(address))[0] for _ in range(connects)]
    progress(f"sign path: {samples} round trips of a bare Unix-socket echo (the floor)")
    with EchoServer() as echo:
        for _ in range(20):
            echo.roundtrip(b"x" * 48)
        floor_us = [_timed_us(lambda: echo.roundtrip(b"x" * 48))[0] for _ in range(samples)]
    scheme = address.partition("://")[0]
    findings = [
        _finding("connect", PASS, f"p50 {_p50(connect_us):.0f} µs over {connects} connects", round(_p50(connect_us), 1), ""),
        _round_trip_finding(reused_us, floor_us),
        _nagle_finding(scheme, nodelay, reused_us),
        _connection_per_request_finding(reused_us, fresh_us),
        _gc_finding(watch.pauses_us, progress) if gc_of_this_process else
        _finding("GC pauses", SKIP, "not the bot's process: call zerocopy.stethoscope.gc_pauses() inside the bot to time its collections", None, ""),
    ]
    return {"findings": findings, "round_trip_us": _summary(reused_us), "floor_us": _summary(floor_us), "histogram": histogram(reused_us)}


def _summary(samples_us: list[float]) -> dict[str, float]:
    ordered = sorted(samples_us)
    return {"p50": round(_p50(ordered), 1), "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1), "max": round(ordered[-1], 1)}


def _nodelay(signer: Any) -> bool | None:
    """TCP_NODELAY on the Signer's own socket (None: not TCP)."""
    sock = signer._sock
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def _round_trip_finding(reused_us: list[float], floor_us: list[float]) -> dict[str, Any]:
    sign, floor = _p50(reused_us), _p50(floor_us)
    ratio = sign / floor if floor else float("inf")
    status = PASS if ratio <= 10 else WARN if ratio <= 100 else FAIL  # a 40 ms stall is ~2,000x
    measured = f"p50 {sign:.0f} µs, p99 {_summary(reused_us)['p99']:.0f} µs; {ratio:.1f}x a bare Unix-socket echo in this process (p50 {floor:.0f} µs)"
    return _finding("round trip vs the floor", status, measured, round(max(0.0, sign - floor), 1),
                    "look at what sits between the bot and the enclave (a proxy, a slow network path, a busy enclave CPU) and at the host findings")


def _nagle_finding(scheme: str, nodelay: bool | None, reused_us: list[float]) -> dict[str, Any]:
    if scheme != "tcp":
        return _finding("Nagle (TCP_NODELAY)", SKIP, f"no TCP on the path ({scheme}: nothing to delay)", None, "")
    low, high = DELAYED_ACK_BAND_US
    stalled = [sample for sample in reused_us if low <= sample < high]
    fix = "set TCP_NODELAY on every TCP hop (socat: TCP:...,nodelay; a proxy: setsockopt TCP_NODELAY), or write each frame in one send"
    if nodelay is False:
        return _finding("Nagle (TCP_NODELAY)", FAIL, "the Signer's socket has TCP_NODELAY off", 40_000.0, fix)
    if len(stalled) * 5 >= len(reused_us):
        measured = f"{len(stalled)} of {len(reused_us)} round trips wait {_us(low)}–{_us(high)}, the delayed-ACK timer: a hop sends with Nagle on (the Signer's own socket has TCP_NODELAY)"
        return _finding("Nagle (TCP_NODELAY)", FAIL, measured, round(_p50(stalled), 1), fix)
    return _finding("Nagle (TCP_NODELAY)", PASS, f"TCP_NODELAY on the Signer's socket; {len(stalled)} of {len(reused_us)} round trips near the delayed-ACK timer", None, "")


def _connection_per_request_finding(reused_us: list[float], fresh_us: list[float]) -> dict[str, Any]:
    reused, fresh = _p50(reused_us), _p50(fresh_us)
    extra = max(0.0, fresh - reused)
    status = PASS if fresh <= 5 * reused else WARN
    measured = f"a new connection per request: p50 {fresh:.0f} µs, {fresh / reused if reused else 0:.1f}x one reused connection ({reused:.0f} µs)"
    return _finding("connection per request", status, measured, round(extra, 1),
                    "keep one Signer (one connection) for the bot's life and share it; never open one per order")


def gc_pauses(during: Callable[[], object] | None = None) -> dict[str, Any]:
    """The GC finding of the calling process, which only the bot itself can measure: every
    collection while ``during()`` runs (a slice of the bot's own work; none watched if omitted),
    then one full collection of this heap, timed (the pause when generation 2 fires). A finding
    like every other: ``check`` ("GC pauses"), ``status``, ``measured``, ``cost_us``, ``fix``.

    It runs ``gc.collect()`` once: call it at a quiet moment (start-up done, before trading)."""
    with _GcWatch().installed() as watch:
        if during is not None:
            during()
    return _gc_finding(watch.pauses_us, _quiet, watched="while during() ran" if during is not None else None)


def _gc_finding(pauses_us: list[float], progress: Progress, watched: str | None = "during the run") -> dict[str, Any]:
    progress("sign path: timing a full collection of this process's heap")
    tracked = len(gc.get_objects())
    with _GcWatch().installed() as full:
        gc.collect()
    worst_seen = max(pauses_us, default=0.0)
    full_us = max(full.pauses_us, default=0.0)
    worst = max(worst_seen, full_us)
    status = PASS if worst < 1_000 else WARN if worst < 20_000 else FAIL
    seen = f"{len(pauses_us)} collections {watched}, longest {worst_seen:.0f} µs; " if watched else ""
    measured = f"{seen}a full collection of this process's {tracked} tracked objects takes {full_us:.0f} µs (the pause when generation 2 fires)"
    return _finding("GC pauses", status, measured, round(worst, 1),
                    "gc.freeze() once start-up is done (the start-up heap is never scanned again), and gc.disable() around the hot loop with gc.collect() at quiet times, or a higher gc.set_threshold")


# -- the exchange path ------------------------------------------------------------------------------
class _Target:
    """The URL's parts, checked: only http and https, a host, a port in range."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        from .errors import ConfigurationError

        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"--exchange-url is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"--exchange-url must be http:// or https://HOST[:PORT]/..., not {url[:200]!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = port or (443 if self.tls else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.binance_like = "binance" in self.host or parts.path.startswith(("/api/v3", "/sapi/", "/fapi/"))
        self.family, self.sockaddr = socket.AF_INET, (self.host, self.port)  # until DNS answers


def check_url(url: str) -> None:
    """Raise :class:`~zerocopy.errors.ConfigurationError` unless ``url`` is one ``exchange_path`` measures."""
    _Target(url)


def exchange_path(url: str, *, samples: int = 20, context: ssl.SSLContext | None = None, progress: Progress = _quiet) -> dict[str, Any]:
    """Findings on the way from this host to the exchange at ``url``: DNS, TCP connect, TLS
    handshake and resumption, keep-alive, and this clock against the server's."""
    target = _Target(url)
    context = context or ssl.create_default_context()
    progress(f"exchange path: resolving {target.host}")
    dns = _dns_finding(target)
    if dns["status"] == FAIL:
        return {"url": url, "findings": [dns], "histogram": []}
    progress(f"exchange path: {samples} TCP connects to {target.host}:{target.port}")
    connect_us, connect = _connect_finding(target, samples)
    findings = [dns, connect]
    if connect["status"] == FAIL:
        return {"url": url, "findings": findings, "histogram": []}
    handshake_us = 0.0
    if target.tls:
        progress(f"exchange path: {min(samples, 10)} TLS handshakes, then resuming the session")
        handshake_us, tls, resumption = _tls_findings(target, context, min(samples, 10))
        findings += [tls, resumption]
    progress(f"exchange path: {samples} requests on one kept-alive connection")
    request_us, keep_alive = _keep_alive_finding(target, context, samples, _p50(connect_us) + handshake_us)
    progress("exchange path: this clock against the server's")
    findings += [keep_alive, _delayed_ack_finding(request_us), _clock_finding(target, context)]
    return {"url": url, "findings": findings, "request_us": _summary(request_us) if request_us else {}, "histogram": histogram(request_us)}


def _dns_finding(target: _Target) -> dict[str, Any]:
    try:
        took_us, answers = _timed_us(lambda: socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM))
    except OSError as exc:
        return _finding("DNS", FAIL, f"{target.host} does not resolve: {exc.strerror or exc}", None, "check the name and the resolver (/etc/resolv.conf)")
    target.family, target.sockaddr = answers[0][0], answers[0][4]
    status = PASS if took_us < 5_000 else WARN
    return _finding("DNS", status, f"{target.host} -> {answers[0][4][0]} in {took_us:.0f} µs", round(took_us, 1),
                    "resolve once and keep the connection (a new connection per request re-resolves); run a local caching resolver (systemd-resolved, nscd, dnsmasq)")


def _tcp(target: _Target) -> socket.socket:
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    sock.settimeout(5.0)
    try:
        sock.connect(target.sockaddr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_finding(target: _Target, samples: int) -> tuple[list[float], dict[str, Any]]:
    connect_us: list[float] = []
    try:
        for _ in range(max(3, min(samples, 20))):
            took_us, sock = _timed_us(lambda: _tcp(target))
            sock.close()
            connect_us.append(took_us)
    except OSError as exc:
        return [], _finding("TCP connect", FAIL, f"{target.host}:{target.port}: {exc.strerror or exc}", None, "check the URL, the route and the firewall")
    return connect_us, _finding("TCP connect", PASS, f"p50 {_p50(connect_us):.0f} µs over {len(connect_us)} connects (one network round trip: paid again by every new connection)", round(_p50(connect_us), 1), "")


def _handshake(target: _Target, context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> tuple[float, ssl.SSLSocket]:
    raw = _tcp(target)
    try:
        start = time.perf_counter_ns()
        tls = context.wrap_socket(raw, server_hostname=target.host, session=session)
        return (time.perf_counter_ns() - start) / 1000, tls
    except BaseException:
        raw.close()
        raise


def _tls_findings(target: _Target, context: ssl.SSLContext, count: int) -> tuple[float, dict[str, Any], dict[str, Any]]:
    full_us: list[float] = []
    try:
        for _ in range(count):
            took_us, tls = _handshake(target, context)
            full_us.append(took_us)
            with tls:
                _request(tls, target, "HEAD")  # a TLS 1.3 server sends its session tickets after the handshake
                session, version = tls.session, tls.version()
        resumed_us, again = _handshake(target, context, session)
        with again:
            reused = again.session_reused
    except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
        failed = _finding("TLS handshake", FAIL, f"{type(exc).__name__}: {exc}"[:300], None, "check the server's certificate and the trusted CAs")
        return 0.0, failed, _finding("TLS session resumption", SKIP, "no handshake", None, "")
    full = _p50(full_us)
    tls_finding = _finding("TLS handshake", PASS, f"{version}, full handshake p50 {full:.0f} µs over {count}", round(full, 1), "")
    if reused:
        resumption = _finding("TLS session resumption", PASS, f"resumed in {resumed_us:.0f} µs (a full handshake: {full:.0f} µs)", round(resumed_us, 1), "")
    else:
        resumption = _finding("TLS session resumption", WARN, f"the server did not resume the session: every new connection pays a full handshake ({full:.0f} µs)",
                              round(full, 1), "keep one connection open and reuse it (requests.Session, httpx.Client, ccxt's session): then no handshake is paid per order")
    return full, tls_finding, resumption


def _request(sock: socket.socket, target: _Target, method: str = "GET", path: str | None = None) -> tuple[Any, bytes]:
    """One HTTP/1.1 request on ``sock`` (kept open unless the server says otherwise)."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=5.0)
    conn.sock = sock
    conn.request(method, path or target.path, headers={"User-Agent": "zerocopy-stethoscope", "Connection": "keep-alive"})
    response = conn.getresponse()
    body = response.read(1 << 20)
    return response, body


def _open(target: _Target, context: ssl.SSLContext) -> socket.socket:
    return _handshake(target, context)[1] if target.tls else _tcp(target)


def _keep_alive_finding(target: _Target, context: ssl.SSLContext, samples: int, reconnect_us: float) -> tuple[list[float], dict[str, Any]]:
    request_us: list[float] = []
    closed = 0
    sock: socket.socket | None = None
    try:
        for _ in range(samples):
            sock, reopened = _reusable(sock, target, context)
            closed += reopened
            took_us, (response, _) = _timed_us(lambda: _request(sock, target))  # type: ignore[arg-type]
            request_us.append(took_us)
            if response.will_close:
                closed += 1
                sock.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return request_us, _finding("keep-alive", FAIL, f"a request failed: {type(exc).__name__}: {exc}"[:300], None, "check that the URL answers a plain GET")
    finally:
        if sock is not None:
            sock.close()
    if closed:
        measured = f"the server closed the connection after {closed} of {samples} responses: each request then pays a new connection ({reconnect_us:.0f} µs: TCP{' + TLS' if target.tls else ''})"
        return request_us, _finding("keep-alive", WARN, measured, round(reconnect_us, 1),
                                    "use a server endpoint that keeps connections alive, and a client that reuses them (requests.Session, httpx.Client)")
    return request_us, _finding("keep-alive", PASS, f"{samples} requests on one connection, p50 {_p50(request_us):.0f} µs", round(_p50(request_us), 1), "")


def _reusable(sock: socket.socket | None, target: _Target, context: ssl.SSLContext) -> tuple[socket.socket, bool]:
    """``sock`` if it is still open, else a new connection, and whether the server had closed it
    without saying so (no "Connection: close")."""
    if sock is not None and sock.fileno() >= 0:
        if not _closed_by_peer(sock):
            return sock, False
        sock.close()
        return _open(target, context), True
    return _open(target, context), False


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed a kept connection without saying so (no "Connection: close"):
    readable with no answer pending means its FIN (or TLS close_notify) is waiting."""
    import select

    if not select.select([sock], [], [], 0.01)[0]:
        return False
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1)  # an end of stream, or bytes no request asked for: either way, not reusable
        return True
    except (BlockingIOError, ssl.SSLWantReadError):
        return False  # only TLS housekeeping (a session ticket) arrived
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def _delayed_ack_finding(request_us: list[float]) -> dict[str, Any]:
    low, high = DELAYED_ACK_BAND_US
    stalled = [sample for sample in request_us if low <= sample < high]
    if not request_us:
        return _finding("answers held by Nagle", SKIP, "no requests answered", None, "")
    measured = f"{len(stalled)} of {len(request_us)} answers took {_us(low)}–{_us(high)}, the delayed-ACK timer"
    if len(stalled) * 2 >= len(request_us):  # most: not one answer that shared a write with TLS session tickets
        return _finding("answers held by Nagle", WARN, measured + ": the server writes each answer in pieces with Nagle on, and its second piece waits for this host's ACK",
                        round(_p50(stalled), 1), "acknowledge at once on this side (setsockopt TCP_QUICKACK after each read), or a server/endpoint that answers in one write")
    return _finding("answers held by Nagle", PASS, measured, None, "")


def _server_time(target: _Target, sock: socket.socket) -> tuple[float, float, float]:
    """(sent, received, server time) in Unix seconds; the server's time is at most ``resolution``
    after its stated value (the ``Date`` header counts whole seconds, Binance milliseconds)."""
    sent = time.time()
    response, body = _request(sock, target, path="/api/v3/time" if target.binance_like else None)
    received = time.time()
    if target.binance_like:
        stated = float(json.loads(body)["serverTime"]) / 1000
    else:
        from email.utils import parsedate_to_datetime

        stated = parsedate_to_datetime(response.headers["Date"]).timestamp()
    if not math.isfinite(stated):
        raise ValueError("the server's time is not a number")
    return sent, received, stated


def _clock_finding(target: _Target, context: ssl.SSLContext) -> dict[str, Any]:
    resolution = 0.001 if target.binance_like else 1.0
    low, high = float("-inf"), float("inf")  # server minus this clock, in seconds
    sock: socket.socket | None = None
    try:
        for _ in range(5):
            sock = _reusable(sock, target, context)[0]
            sent, received, stated = _server_time(target, sock)
            low, high = max(low, stated - received), min(high, stated + resolution - sent)
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError, OverflowError) as exc:
        source = "/api/v3/time" if target.binance_like else "the Date header"
        return _finding("clock offset", SKIP, f"no server time from {source}: {type(exc).__name__}"[:200], None, "")
    finally:
        if sock is not None:
            sock.close()
    if low > high:  # the server's clock moved under us: keep the widest honest statement
        low, high = min(low, high), max(low, high)
    return _clock_verdict(low, high, target)


def _clock_verdict(low: float, high: float, target: _Target) -> dict[str, Any]:
    source = "Binance's /api/v3/time" if target.binance_like else "the HTTP Date header (whole seconds)"
    measured = f"server minus this clock: {low:+.3f} s to {high:+.3f} s, from {source}"
    fix = "sync this clock (chrony against the Amazon Time Sync Service, 169.254.169.123, or the instance's PTP clock); until then a signed request's timestamp is refused"
    if high < -AHEAD_LIMIT_S:
        return _finding("clock offset", FAIL, f"{measured}: this clock is ahead; Binance answers -1021 to a timestamp over {AHEAD_LIMIT_S:g} s ahead", round(-high * 1e6), fix)
    if low > RECV_WINDOW_S:
        return _finding("clock offset", FAIL, f"{measured}: this clock is behind by more than the default recvWindow ({RECV_WINDOW_S:g} s): -1021", round(low * 1e6), fix)
    if low < -AHEAD_LIMIT_S or high > AHEAD_LIMIT_S:
        return _finding("clock offset", WARN, f"{measured}: possibly off by more than {AHEAD_LIMIT_S:g} s (near -1021 and eating recvWindow)", round(max(-low, high) * 1e6), fix)
    return _finding("clock offset", PASS, measured, None, "")


def finding_lines(prefix: str, findings: list[dict[str, Any]]) -> list[str]:
    """Findings as the CLI prints them: status, check, what was measured, its cost, the fix."""
    lines = []
    for finding in findings:
        cost = "" if finding["cost_us"] is None else f" ({_us(finding['cost_us'])})"
        lines.append(f"{prefix} {finding['status']:<5} {finding['check']}: {finding['measured']}{cost}")
        if finding["fix"]:
            lines.append(f"  fix: {finding['fix']}")
    return lines
