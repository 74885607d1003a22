"""An emulated parent instance for ``zerocopy host``: its Nitro device, vsock-proxy command and IMDS.

:class:`EmulatedParent` stands beside an :class:`~emulator.Emulator` (whose moto, attesting KMS and
attestation PKI play AWS) as a second EC2 instance with nothing running yet: ``zerocopy host``
starts its enclave through :attr:`nitro_cli` (:mod:`emulator.nitro`), its vsock-proxy through
:attr:`vsock_proxy` (:mod:`emulator.vsock_proxy`, the name ``kms.<region>.amazonaws.com`` leading
to the emulated KMS), and reads the host role's credentials from :attr:`imds_url`
(:mod:`emulator.imds`). The agent is given these as options; it has no emulator branch.
Everything lives in a private 0700 directory (the instance's vsock namespace), removed by ``stop()``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .imds import InstanceMetadataServer
from .launcher import ENCLAVE_PORT, emulated_vsock_path
from .nitro import NitroDevice

__all__ = ["EmulatedParent"]


class EmulatedParent:
    def __init__(self, emulator: Any, *, session_seconds: int = 3600, refresh_before: int = 300, enclave_source: Path | None = None) -> None:
        self.emulator = emulator
        self.session_seconds = session_seconds
        self.refresh_before = refresh_before
        self.enclave_source = enclave_source
        self.run_dir: Path | None = None
        self.device: NitroDevice | None = None
        self.imds: InstanceMetadataServer | None = None

    def start(self) -> "EmulatedParent":
        self.run_dir = Path(tempfile.mkdtemp(prefix="zc-p-"))
        os.chmod(self.run_dir, 0o700)
        try:
            self.device = NitroDevice(self.emulator, self.run_dir, enclave_source=self.enclave_source).start()
            imds = InstanceMetadataServer(self.emulator.moto_endpoint_url, region=self.emulator.region, instance_id=self.emulator.pki.instance_id, session_seconds=self.session_seconds, refresh_before=self.refresh_before)
            self.imds = imds.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.imds is not None:
            self.imds.stop()
            self.imds = None
        if self.device is not None:
            self.device.stop()
            self.device = None
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def __enter__(self) -> "EmulatedParent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def nitro_cli(self) -> str:
        assert self.device is not None
        return shlex.join(self.device.command())

    def vsock_proxy(self, *, kms_address: tuple[str, int] | None = None) -> str:
        """The emulated vsock-proxy command; ``kms_address`` overrides where the KMS name leads (to make KMS unreachable)."""
        assert self.run_dir is not None
        host, port = kms_address or ("127.0.0.1", urlsplit(self.emulator.kms_endpoint_url).port)
        return shlex.join([sys.executable, "-m", "emulator.vsock_proxy", "--vsock-dir", str(self.run_dir), "--connect", f"{host}:{port}"])

    @property
    def imds_url(self) -> str:
        assert self.imds is not None
        return self.imds.url

    def enclave_address(self, cid: int) -> str:
        assert self.run_dir is not None
        return f"unix://{emulated_vsock_path(str(self.run_dir), cid, ENCLAVE_PORT)}"

    def host_options(self, *, cid: int = 16, kms_address: tuple[str, int] | None = None) -> list[str]:
        """The ``zerocopy host`` options that point the agent at this instance's tools."""
        assert self.run_dir is not None
        return [
            "--nitro-cli", self.nitro_cli, "--vsock-proxy", self.vsock_proxy(kms_address=kms_address), "--imds", self.imds_url,
            "--enclave-cid", str(cid), "--enclave", self.enclave_address(cid), "--proxy-config", str(self.run_dir / "vsock-proxy.yaml"),
            "--state-dir", str(self.run_dir), "--root", str(self._root_path()),
        ]  # fmt: skip

    def _root_path(self) -> Path:
        assert self.run_dir is not None
        path = self.run_dir / "attestation-root.pem"
        if not path.exists():
            path.write_bytes(self.emulator.root_certificate)
        return path
