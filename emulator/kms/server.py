"""The attesting KMS endpoint: HTTPS on 127.0.0.1, in a thread (after moto's ThreadedMotoServer).

It serves a certificate for ``kms.<region>.amazonaws.com`` (and 127.0.0.1) from the emulator's TLS
CA, answers what :mod:`.responses` decides, and forwards authorized calls to the moto server.
Every answer is AWS JSON, also for requests that never reach :func:`~.responses.dispatch` (another
method than ``POST``, a bad ``Content-Length``, a malformed request line) and for anything moto
answers that is not JSON.
"""

from __future__ import annotations

import http.client
import json
import selectors
import socket
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .exceptions import AccessDeniedException, KMSInternalException, KmsException, SerializationException
from .models import AttestingKms
from .responses import MAX_BODY, HttpResponse, Passthrough, dispatch, error_response

__all__ = ["KmsFrontServer"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}
# What AWS's JSON front end says to a request it cannot map to an operation (kinesalite records it
# for GET and other methods).
_NO_OPERATION = "Unable to determine service/operation name to be authorized"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and body of an answer leave in one write (flushed after each request): written
    # apart, the body waited under Nagle for the client's delayed ACK, about 40 ms every request.
    wbufsize = 1 << 16
    server: "_TlsServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet, like moto with verbose=False
        pass

    def do_POST(self) -> None:
        refusal = _framing_refusal(self.headers.get("Content-Length"), self.headers.get("Transfer-Encoding"))
        if refusal is not None:
            self.close_connection = True  # the body's end is unknown: do not read the next request from it
            self._answer(error_response(refusal))
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        result = dispatch(self.server.model, self.headers, body, method=self.command, path=self.path)
        if isinstance(result, Passthrough):
            result = self._forward(result.body)
        self._answer(result)

    def _refuse_method(self) -> None:
        self._answer(error_response(_status(AccessDeniedException(_NO_OPERATION), 403)))

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, unknown method, ...), as AWS JSON."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # a request line it could not parse: still answer with a status line
        if code in (404, 405, 501):
            exc: KmsException = _status(AccessDeniedException(_NO_OPERATION), 403)
        else:
            exc = _status(SerializationException(message or ""), code)
        self._answer(error_response(exc))

    def _answer(self, result: HttpResponse) -> None:
        self.send_response(result.status)
        self.send_header("Content-Type", result.content_type)
        self.send_header("Content-Length", str(len(result.body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))  # one per request, as AWS
        for name, value in result.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(result.body)

    def _forward(self, body: bytes) -> HttpResponse:
        target = urlsplit(self.server.model.moto_endpoint)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP}
            connection.request("POST", "/", body=body, headers=headers)
            response = connection.getresponse()
            return _json_only(HttpResponse(response.status, response.read(), response.getheader("Content-Type") or "application/x-amz-json-1.1"))
        except (OSError, http.client.HTTPException):
            return error_response(KMSInternalException("The KMS emulator's key store is unreachable."))
        finally:
            connection.close()


def _framing_refusal(content_length: str | None, transfer_encoding: str | None) -> KmsException | None:
    """Why the body of a request cannot be read as sent, or ``None``.

    Only ``Content-Length`` framing is read. A ``Transfer-Encoding`` (chunked) body is refused
    rather than misread as an empty body followed by garbage: 411 without a length, 400 with both
    (a request two parsers could split differently).
    """
    if transfer_encoding is not None:
        if content_length is None:
            return _status(SerializationException("Transfer-Encoding is not supported: send a Content-Length"), 411)
        return _status(SerializationException("Content-Length and Transfer-Encoding together"), 400)
    try:
        length = int(content_length or 0)
    except ValueError:
        length = -1
    if length > MAX_BODY:
        return _status(SerializationException("Request body is too large"), 413)
    if length < 0:
        return _status(SerializationException("Invalid Content-Length"), 400)
    return None


def _status(exc: KmsException, status: int) -> KmsException:
    exc.status = status
    return exc


def _json_only(response: HttpResponse) -> HttpResponse:
    """moto's answer if it is JSON; moto's HTML error pages become a JSON ``KMSInternalException``."""
    failed = error_response(KMSInternalException("The KMS emulator failed to process the request."))
    try:
        answer = json.loads(response.body)
    except ValueError:
        return failed
    if response.status >= 400 and not (isinstance(answer, dict) and isinstance(answer.get("__type"), str)):
        return failed
    if response.status < 400 and not isinstance(answer, dict):
        return HttpResponse(response.status, b"{}")  # moto answers `null` where KMS answers an empty object
    return HttpResponse(response.status, response.body)


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: AttestingKms, context: ssl.SSLContext) -> None:
        self.model = model
        self.context = context
        # Open connections by handler thread, so stop() can close them and join their handlers
        # (a keep-alive client would otherwise hold a handler thread for the full timeout).
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._connections_lock = threading.Lock()
        self._closing = False
        # serve_forever() sleeps in select() until a connection or this wake-up (see shutdown()).
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop_requested = threading.Event()
        self._loop_ended = threading.Event()
        super().__init__(address, _Handler)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """socketserver's accept loop, except that :meth:`shutdown` wakes it at once: socketserver's
        own only notices a shutdown at its next poll, up to ``poll_interval`` later (unused here)."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stop_requested.is_set():
                    ready = selector.select()
                    if not self._stop_requested.is_set() and any(key.fileobj is self for key, _ in ready):
                        self._handle_request_noblock()
        finally:
            self._loop_ended.set()

    def shutdown(self) -> None:
        """Stop serve_forever() (running in another thread) and wait until it has returned."""
        self._stop_requested.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # closed by server_close(): stopped before, the loop has ended
        self._loop_ended.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        # A client that went away mid-answer (an interrupted command, a timeout) is not the
        # endpoint's fault: socketserver would print its traceback on the command's terminal.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def _track(self, sock: socket.socket) -> bool:
        with self._connections_lock:
            if self._closing:
                return False
            self._connections[threading.current_thread()] = sock
            return True

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the connection's own thread, so a slow client cannot stall accept().
        request.settimeout(30)
        try:
            # wrap_socket detaches `request`, so shutdown_request() no longer closes it: close `tls`.
            tls = self.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError):
            return
        try:
            if not self._track(tls):
                return
            try:
                tls.do_handshake()
            except (ssl.SSLError, OSError):
                return
            super().finish_request(tls, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)
            tls.close()

    def close_connections(self) -> list[threading.Thread]:
        """Refuse new connections, shut the open ones down; return their handler threads."""
        with self._connections_lock:
            self._closing = True
            connections = dict(self._connections)
        for sock in connections.values():
            try:
                # The TCP socket underneath: wakes a handshake or a read blocked in another thread
                # with EOF (SSLSocket.shutdown would also drop the TLS object under its feet).
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        return list(connections)


class KmsFrontServer:
    def __init__(self, model: AttestingKms, *, certfile: str, keyfile: str, host: str = "127.0.0.1", port: int = 0) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile, keyfile)
        self._server = _TlsServer((host, port), model, context)
        self._thread = threading.Thread(target=self._server.serve_forever, name="kms-front", daemon=True)
        self._ready = threading.Event()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> "KmsFrontServer":
        self._thread.start()
        self._ready.set()
        return self

    def stop(self) -> None:
        if self._ready.is_set():  # shutdown() waits for serve_forever(): only once it runs
            self._server.shutdown()
        handlers = self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)
        for handler in handlers:
            handler.join(timeout=5)
