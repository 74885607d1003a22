"""A bare pipelined Python server: the floor under ``sign_many``.

It reads the same SIGN frames the enclave reads (header, key-name length, key name, payload) and
answers each with the same HMAC-SHA256 in a SIGNATURE frame, as many per read as arrived: the
least Python can do for this job — no policy, no audit, no sessions, no checks beyond the frame
boundaries. ``sign_many`` against it and against the enclave is the same client code, so the ratio
is what the enclave's server side costs on a pipelined connection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

_BARE = """\
import hashlib, hmac, json, os, socket, struct, sys, threading
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()  # never outlive our starter
HEADER, SIGNATURE = struct.Struct(">IBBI"), 0x81
SECRETS = {name.encode(): bytes.fromhex(secret) for name, secret in json.loads(sys.argv[2]).items()}
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1]); listener.listen(1)
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    pending = b""
    with conn:
        while data := conn.recv(262144):
            pending += data
            answers, offset = [], 0
            while len(pending) - offset >= 10:
                length, _, _, request_id = HEADER.unpack_from(pending, offset)
                end = offset + 10 + length
                if end > len(pending):
                    break
                name_end = offset + 11 + pending[offset + 10]
                digest = hmac.new(SECRETS[pending[offset + 11 : name_end]], pending[name_end:end], hashlib.sha256).digest()
                answers.append(HEADER.pack(32, 1, SIGNATURE, request_id) + digest)
                offset = end
            pending = pending[offset:]
            if answers:
                conn.sendall(b"".join(answers))
"""


class BarePipelinedServer:
    """The bare server in a process of its own on a Unix socket, signing with ``secrets``
    (key name → secret); ``address`` is what a ``Signer`` connects to."""

    def __init__(self, secrets: dict[str, bytes]) -> None:
        import json

        self._secrets = json.dumps({name: secret.hex() for name, secret in secrets.items()})
        self._dir = tempfile.mkdtemp(prefix="zc-bare-")
        self.path = os.path.join(self._dir, "bare.sock")
        self.address = f"unix://{self.path}"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "BarePipelinedServer":
        self._process = subprocess.Popen([sys.executable, "-I", "-c", _BARE, self.path, self._secrets], stdin=subprocess.PIPE, stdout=subprocess.PIPE, process_group=0)
        try:
            assert self._process.stdout is not None
            if self._process.stdout.readline() != b"ready\n":
                raise RuntimeError("the bare pipelined server did not start")
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    pipe.close()
        shutil.rmtree(self._dir, ignore_errors=True)
