"""The parent instance's metadata service, emulated: IMDSv2 on 127.0.0.1 with the host role's credentials.

As on EC2 (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html):
a session token comes from ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds``
(1-21600); every ``GET`` must carry it in ``X-aws-ec2-metadata-token`` or is answered 401 (IMDSv1 is
off, as ``--http-tokens required`` sets it). ``/latest/meta-data/iam/security-credentials/`` names
the role and ``…/<role>`` answers its credentials as JSON (``Code``, ``LastUpdated``, ``Type``,
``AccessKeyId``, ``SecretAccessKey``, ``Token``, ``Expiration``): sessions of the emulator's host
role from moto's STS, which the emulated KMS authenticates and expires as AWS does. Like EC2 it
hands out a new session before the current one expires (``refresh_before`` seconds ahead), and
:meth:`InstanceMetadataServer.rotate` makes the next answer a new session at once.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .account import HOST_ROLE_ARN, HOST_ROLE_NAME

__all__ = ["InstanceMetadataServer"]

_MAX_TOKEN_TTL = 21600


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_PUT(self) -> None:
        if self.path != "/latest/api/token":
            return self._answer(404, "Not Found")
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= _MAX_TOKEN_TTL:
            return self._answer(400, "Bad Request")
        self._answer(200, self.server.imds.new_token(int(ttl)))

    def do_GET(self) -> None:
        if not self.server.imds.token_valid(self.headers.get("X-aws-ec2-metadata-token", "")):
            return self._answer(401, "Unauthorized")
        found = self.server.imds.answer(self.path)
        self._answer(200, found) if found is not None else self._answer(404, "Not Found")

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, imds: "InstanceMetadataServer") -> None:
        self.imds = imds
        super().__init__(("127.0.0.1", 0), _Handler)


class InstanceMetadataServer:
    """IMDSv2 for one emulated instance; ``served`` lists (access key id, expiration) of each session handed out."""

    def __init__(self, moto_endpoint: str, *, region: str, instance_id: str, session_seconds: int = 3600, refresh_before: int = 300) -> None:
        import boto3

        self.region = region
        self.instance_id = instance_id
        self.session_seconds = session_seconds
        self.refresh_before = refresh_before
        self.served: list[tuple[str, str]] = []
        from botocore.config import Config

        # moto does not check the signature of STS calls; these keys name no one. Sessions shorter
        # than IAM's 900-second minimum are for tests that watch one expire: botocore would refuse
        # the call, moto honours it.
        config = Config(parameter_validation=session_seconds >= 900)
        session = boto3.session.Session(aws_access_key_id="emulator", aws_secret_access_key="emulator", region_name=region)
        self._sts = session.client("sts", endpoint_url=moto_endpoint, config=config)
        self._tokens: dict[str, float] = {}
        self._session: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "InstanceMetadataServer":
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="imds", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._sts.close()

    def __enter__(self) -> "InstanceMetadataServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rotate(self) -> None:
        """The next credentials answer is a new session (the current one stays valid until it expires)."""
        with self._lock:
            self._session = None

    def new_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
        return token

    def token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    def answer(self, path: str) -> str | None:
        prefix = "/latest/meta-data/iam/security-credentials/"
        fixed = {"/latest/meta-data/placement/region": self.region, "/latest/meta-data/instance-id": self.instance_id, prefix: HOST_ROLE_NAME}
        if path in fixed:
            return fixed[path]
        if path == prefix + HOST_ROLE_NAME:
            return json.dumps(self._credentials())
        return None

    def _credentials(self) -> dict[str, Any]:
        with self._lock:
            session = self._session
            if session is None or session["_expires"] - time.time() < self.refresh_before:
                session = self._session = self._assume()
            return {key: value for key, value in session.items() if not key.startswith("_")}

    def _assume(self) -> dict[str, Any]:
        found = self._sts.assume_role(RoleArn=HOST_ROLE_ARN, RoleSessionName=self.instance_id, DurationSeconds=self.session_seconds)["Credentials"]
        expiration = found["Expiration"].astimezone(timezone.utc)
        stamp = expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.served.append((found["AccessKeyId"], stamp))
        return {
            "Code": "Success", "LastUpdated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "Type": "AWS-HMAC",
            "AccessKeyId": found["AccessKeyId"], "SecretAccessKey": found["SecretAccessKey"], "Token": found["SessionToken"],
            "Expiration": stamp, "_expires": expiration.timestamp(),
        }  # fmt: skip
