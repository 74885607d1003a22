"""The parent instance's vsock-proxy, emulated: raw TCP from an emulated vsock port to KMS.

It behaves as AWS's ``vsock-proxy`` does (aws-nitro-enclaves-cli, ``vsock_proxy/src/main.rs`` and
``proxy.rs``), so that an enclave that works here keeps within what the real one allows:

* Before it listens, it checks its one target against the YAML allowlist file (``--config``) and
  refuses to start when the target is not listed (the real one exits with ``Error at checking the
  allowlist: The given address and port are not allowed``): :class:`TargetNotAllowed`, and nothing
  is bound or started.
* It accepts every connection at once and hands it to a pool of ``num_workers`` threads (default 4,
  ``--num_workers``). The pool's queue is unbounded, so a connection beyond that is accepted and
  waits, not yet connected upstream, until a worker is free; it is never refused.
* A worker connects to the target only when it takes the connection, copies bytes both ways in one
  thread and drops both sides as soon as either one closes (there is no half-close).

Like the real one it forwards bytes only — the enclave's TLS session runs through it untouched.
Where it differs it is stricter or simpler, never more permissive: it does no DNS (a listed name
matches only that same name, a listed IP only that IP); it checks every entry of the file, not only
those before the match; a port outside 0–65535 is an error instead of being cut to 16 bits.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import selectors
import socket
import sys
from pathlib import Path

from enclave.forwarder import Relay
from zerocopy.errors import ZeroCopyError

__all__ = [
    "AllowlistError",
    "DEFAULT_WORKERS",
    "TargetNotAllowed",
    "VsockProxy",
    "VsockProxyError",
    "is_allowed",
    "load_allowlist",
    "main",
]

log = logging.getLogger("emulator.vsock_proxy")

DEFAULT_WORKERS = 4  # the real proxy's --num_workers default
_CHUNK = 8192  # the real worker's buffer size
_CONNECT_TIMEOUT = 10.0

Endpoint = tuple[str, int]


class VsockProxyError(ZeroCopyError, RuntimeError):
    """The emulated vsock-proxy could not start."""


class AllowlistError(VsockProxyError):
    """The allowlist file is missing or not in the vsock-proxy's format."""


class TargetNotAllowed(VsockProxyError):
    """The proxy's target is not in its allowlist, so (like the real proxy) it does not start."""

    def __init__(self, target: Endpoint, config: Path) -> None:
        super().__init__(
            f"error at checking the allowlist: {target[0]}:{target[1]} is not in {config} "
            "(the given address and port are not allowed)"
        )
        self.target = target
        self.config = config


def load_allowlist(path: str | os.PathLike) -> tuple[Endpoint, ...]:
    """The ``(address, port)`` entries of a vsock-proxy config file.

    The format is the real proxy's: the first YAML document is a map whose ``allowlist`` is a list
    of maps with a string ``address`` and an integer ``port`` (extra keys are ignored, as there).
    """
    import yaml  # the emulator's own dependency; the host package writes this file by hand

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AllowlistError(f"could not read the allowlist {path}: {exc}") from None
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise AllowlistError(f"{path}: bad YAML format: {str(exc).splitlines()[0]}") from None
    services = documents[0].get("allowlist") if documents and isinstance(documents[0], dict) else None
    if not isinstance(services, list):
        raise AllowlistError(f"{path}: no allowlist field (a list of {{address, port}} maps)")
    return tuple(_service(path, index, raw) for index, raw in enumerate(services, 1))


def _service(path: Path, index: int, raw: object) -> Endpoint:
    address = raw.get("address") if isinstance(raw, dict) else None
    port = raw.get("port") if isinstance(raw, dict) else None
    if not isinstance(address, str):
        raise AllowlistError(f"{path}: allowlist entry {index}: no address field")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 0xFFFF:
        raise AllowlistError(f"{path}: allowlist entry {index}: no port field or invalid type")
    return address, port


def is_allowed(target: Endpoint, allowlist: tuple[Endpoint, ...]) -> bool:
    """The real proxy's rule without DNS: same port, then the same name or the same IP address."""
    host, port = target
    return any(port == allowed_port and (host == address or _same_ip(host, address)) for address, allowed_port in allowlist)


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


class VsockProxy(Relay):
    """``vsock-proxy <port> <target host> <target port> --config <allowlist> --num_workers <n>``.

    The listening side is the emulated vsock port (a Unix socket at ``listen_path``); ``target`` is
    a TCP ``(host, port)``; ``allowlist`` is the config file, in the real proxy's format.
    """

    thread_name = "vsock-proxy"

    def __init__(self, listen_path: str, target: Endpoint, *, allowlist: str | os.PathLike, num_workers: int = DEFAULT_WORKERS, connect_to: Endpoint | None = None) -> None:
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
            raise VsockProxyError(f"the number of workers must be at least 1, not {num_workers!r}")
        super().__init__()
        self.listen_path = listen_path
        self.target = (target[0], int(target[1]))
        # Where the target's name leads (the emulator's DNS): the allowlist is checked on `target`.
        self.connect_to = (connect_to[0], int(connect_to[1])) if connect_to else self.target
        self.allowlist = Path(allowlist)
        self.num_workers = num_workers
        self.peak_active = 0  # most connections served at once since start (tests read it)
        self._waiting: queue.SimpleQueue[socket.socket | None] = queue.SimpleQueue()
        self._active = 0
        self._bound = False

    @property
    def active(self) -> int:
        """Connections a worker is serving now."""
        with self._lock:
            return self._active

    @property
    def waiting(self) -> int:
        """Accepted connections queued for a free worker."""
        return self._waiting.qsize()

    def start(self) -> "VsockProxy":
        # As the real proxy: the allowlist is checked before anything listens or runs.
        if not is_allowed(self.target, load_allowlist(self.allowlist)):
            raise TargetNotAllowed(self.target, self.allowlist)
        super().start()
        try:
            for index in range(self.num_workers):
                self._spawn(self._work, f"{self.thread_name}-worker-{index}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        super().stop()
        if self._bound:  # never unlink a path another process bound before us
            self._bound = False
            try:
                os.unlink(self.listen_path)
            except FileNotFoundError:
                pass

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.listen_path)
            self._bound = True
            listener.listen(128)
        except BaseException:
            listener.close()
            self.stop()  # unlinks the path if it was ours
            raise
        return listener

    def _dispatch(self, client: socket.socket) -> None:
        self._waiting.put(client)  # unbounded, as the real proxy's thread pool queue

    def _release_waiting(self) -> None:
        # Called by stop() after the accept loop has ended: one wake-up per worker, behind every
        # connection still queued, which the workers then close without serving.
        for _ in range(self.num_workers):
            self._waiting.put(None)

    def _work(self) -> None:
        while (client := self._waiting.get()) is not None:
            if self._stopping.is_set():
                self._forget(client)
                continue
            self._count(+1)
            try:
                self._handle(client)
            except Exception:  # one bad connection must not shrink the pool (the real one respawns)
                log.exception("vsock-proxy connection failed")
            finally:
                self._count(-1)

    def _count(self, change: int) -> None:
        with self._lock:
            self._active += change
            self.peak_active = max(self.peak_active, self._active)

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.connect_to, timeout=_CONNECT_TIMEOUT)
        except OSError as exc:
            # The real worker panics here (the pool replaces it); either way the client is dropped.
            log.warning("could not connect to %s:%s: %s", *self.target, exc)
            return
        self._register(upstream)
        try:
            upstream.settimeout(None)
            relay_until_either_side_closes(client, upstream)
        finally:
            self._forget(upstream)


def relay_until_either_side_closes(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways in this one thread until either side closes or fails."""
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        while True:
            for key, _ in selector.select():
                if not _transfer(key.fileobj, key.data):  # type: ignore[arg-type]
                    return


def _transfer(source: socket.socket, sink: socket.socket) -> bool:
    try:
        chunk = source.recv(_CHUNK)
        if chunk:
            sink.sendall(chunk)
    except OSError:
        return False
    return bool(chunk)


def _endpoint(text: str) -> Endpoint:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """``python -m emulator.vsock_proxy [--vsock-dir DIR] [--connect HOST:PORT] <local port> <remote
    addr> <remote port> --config FILE [--num_workers N]``: the real proxy's command line, plus where
    the emulated vsock ports live (``vsock-3-<port>.sock`` in DIR) and where the remote name leads.
    Runs until SIGTERM; a target not in the allowlist is one line on stderr and exit 1, as there."""
    import argparse
    import signal
    import threading

    from .launcher import PARENT_CID, emulated_vsock_path

    parser = argparse.ArgumentParser(prog="vsock-proxy (emulated)")
    parser.add_argument("local_port", type=int)
    parser.add_argument("remote_addr")
    parser.add_argument("remote_port", type=int)
    parser.add_argument("--config", required=True)
    parser.add_argument("--num_workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--vsock-dir", required=True, help="the emulated parent's run directory")
    parser.add_argument("--connect", type=_endpoint, help="HOST:PORT the remote name resolves to (default: itself)")
    args = parser.parse_args(argv)
    listen = emulated_vsock_path(args.vsock_dir, PARENT_CID, args.local_port)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        proxy = VsockProxy(listen, (args.remote_addr, args.remote_port), allowlist=args.config, num_workers=args.num_workers, connect_to=args.connect).start()
    except VsockProxyError as exc:
        print(f"vsock-proxy: {exc}", file=sys.stderr)
        return 1
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
