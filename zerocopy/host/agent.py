"""The parent-side agent: bring the enclave up, load its keys, keep it up.

At start it writes the vsock-proxy allowlist (only ``kms.<region>.amazonaws.com:443``) and starts
the proxy, runs the enclave with ``nitro-cli run-enclave``, and provisions the sealed bundles with
the instance role's credentials from IMDSv2 — fetched afresh for every provisioning, so rotated
credentials are always the ones used. Then it checks, every ``check_interval`` seconds, that
nitro-cli still lists the enclave and that an attested connection (PCR0 pinned) lists every key.
When either fails it terminates what is left, runs a new enclave and provisions it again, waiting
``backoff`` seconds before the first try and twice as long before each next one (at most
``max_backoff``), giving up after ``max_restarts`` failed tries in a row.

Provisioning is tried ``provision_attempts`` times with the same backoff; if KMS stays unreachable
(or refuses), :class:`~zerocopy.errors.ProvisioningFailed` ends the agent with the enclave's reason,
and the service manager's restart policy decides what next.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.protocol.bundle import SealedBundle

from .._client import Signer
from ..errors import AttestationError, BundleError, ConnectionFailed, HostAgentError, HostToolError, ProvisioningFailed, ZeroCopyError
from ..vsock_proxy import KMS_PORT, kms_allowlist, kms_host
from .log import AgentLog
from .tools import EnclaveInfo, InstanceMetadata, NitroCli, VsockProxyProcess

__all__ = ["HostAgent", "HostConfig", "read_bundles"]


@dataclass(frozen=True)
class HostConfig:
    eif_path: Path
    bundles: tuple[Path, ...]
    pcr0: bytes
    enclave_address: str
    proxy_config: Path
    state_dir: Path
    roots: tuple[Any, ...] | None = None  # None: the pinned AWS Nitro root
    region: str | None = None  # None: the instance's, from IMDS
    cpu_count: int = 2
    memory_mib: int = 1024
    cid: int = 16
    name: str = "zerocopy"
    proxy_port: int = 8000
    check_interval: float = 5.0
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_restarts: int = 10
    provision_attempts: int = 3
    start_timeout: float = 60.0


def read_bundles(paths: tuple[Path, ...]) -> list[tuple[str, bytes]]:
    """(key name, bundle bytes) for each file; a directory stands for its ``*.json`` files."""
    files = [found for path in paths for found in (sorted(path.glob("*.json")) if path.is_dir() else [path])]
    if not files:
        raise HostAgentError(f"no sealed bundles in {', '.join(map(str, paths))}")
    bundles = []
    for file in files:
        try:
            data = file.read_bytes()
            bundles.append((SealedBundle.from_json(data).name, data))
        except OSError as exc:
            raise HostAgentError(f"cannot read the bundle {file}: {exc.strerror or exc}") from None
        except BundleError as exc:
            raise HostAgentError(f"{file} is not a sealed bundle: {exc}") from None
    return bundles


class HostAgent:
    def __init__(self, config: HostConfig, *, nitro_cli: NitroCli, vsock_proxy: VsockProxyProcess, metadata: InstanceMetadata, log: AgentLog) -> None:
        self.config = config
        self.nitro_cli = nitro_cli
        self.vsock_proxy = vsock_proxy
        self.metadata = metadata
        self.log = log
        self.region = config.region
        self.enclave: EnclaveInfo | None = None
        self.signer: Signer | None = None
        self.bundles = read_bundles(config.bundles)

    # -- the loop --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Start everything, then keep the enclave healthy until ``stop`` is set; clean up always."""
        try:
            self.start_proxy()
            self.clear_leftovers()
            self.boot(stop)
            while not stop.wait(self.config.check_interval):
                problem = self.health_problem()
                if problem:
                    self.recover(problem, stop)
        finally:
            self.shutdown()

    def start_proxy(self) -> None:
        if self.region is None:
            self.region = self.metadata.region()
        config = self.config
        config.proxy_config.write_text(kms_allowlist(self.region))
        host = kms_host(self.region)
        self.vsock_proxy.start(vsock_port=config.proxy_port, host=host, port=KMS_PORT, config=config.proxy_config, log_path=config.state_dir / "vsock-proxy.log")
        self.log.event("proxy-started", f"vsock-proxy forwards vsock port {config.proxy_port} to {host}:{KMS_PORT} only", allowlist=str(config.proxy_config))

    def clear_leftovers(self) -> None:
        """An enclave of ours from an earlier run is terminated: the one we run is the one we pin."""
        for enclave in self.nitro_cli.describe_enclaves():
            if enclave.name == self.config.name or enclave.cid == self.config.cid:
                self.log.event("enclave-terminated", "an enclave from an earlier run was still there", enclave_id=enclave.enclave_id)
                self.nitro_cli.terminate_enclave(enclave.enclave_id)

    def boot(self, stop: threading.Event) -> None:
        """Run the enclave, connect with attestation, provision every bundle."""
        config = self.config
        self.enclave = self.nitro_cli.run_enclave(eif_path=str(config.eif_path), cpu_count=config.cpu_count, memory_mib=config.memory_mib, cid=config.cid, name=config.name)
        self.log.event("enclave-started", f"enclave {self.enclave.enclave_id} running", cid=self.enclave.cid, cpus=self.enclave.cpus, memory_mib=self.enclave.memory_mib, process_id=self.enclave.process_id)
        self.signer = self.connect()
        self.log.event("attested", f"the enclave at {config.enclave_address} attests the pinned image", pcr0=config.pcr0.hex()[:16] + "…", module_id=self.signer.attestation.module_id)
        self.provision(stop)

    def connect(self) -> Signer:
        """An attested Signer, once the new enclave listens (within ``start_timeout``)."""
        deadline = time.monotonic() + self.config.start_timeout
        while True:
            try:
                return Signer(self.config.enclave_address, expected_pcrs={0: self.config.pcr0}, roots=self.config.roots, timeout=30.0)
            except AttestationError as exc:
                raise HostAgentError(f"the enclave at {self.config.enclave_address} does not attest as the pinned image: {exc}") from None
            except ConnectionFailed as exc:
                if time.monotonic() > deadline:
                    raise ConnectionFailed(f"the enclave did not listen within {self.config.start_timeout:.0f}s: {exc}") from None
                time.sleep(0.1)

    def provision(self, stop: threading.Event) -> None:
        """Load every bundle, with fresh credentials each try; :class:`ProvisioningFailed` after the last."""
        attempts = self.config.provision_attempts
        for attempt in range(1, attempts + 1):
            refused = self._provision_once()
            if not refused:
                self.log.event("provisioned", f"{len(self.bundles)} key(s) loaded", keys=",".join(name for name, _ in self.bundles), attempt=attempt)
                return
            self.log.event("provision-failed", f"attempt {attempt} of {attempts}: {refused}", attempt=attempt)
            if attempt < attempts and stop.wait(self._delay(attempt)):
                return  # asked to stop: shut down, not a failure
        raise ProvisioningFailed(f"provisioning failed after {attempts} attempt(s): {refused}", attempts=attempts)

    def _provision_once(self) -> str | None:
        """None if every bundle loaded, else why not (each reason once, with the keys it refused)."""
        try:
            credentials, expiration = self.metadata.credentials()
        except HostToolError as exc:  # IMDS briefly unavailable: a failed attempt, tried again
            return str(exc)
        self.log.event("credentials", "instance role credentials from IMDSv2", expires=expiration)
        assert self.signer is not None
        try:
            results = self.signer.provision([data for _, data in self.bundles], credentials=credentials, region=self.region)
        except ZeroCopyError as exc:
            return str(exc)
        finally:
            del credentials
        refused: dict[str, list[str]] = {}  # the enclave's reason -> the keys it refused for it
        for (name, _), result in zip(self.bundles, results):
            if not result.loaded:
                reason = str(result.error).removeprefix(f"bundle {name!r}: ")  # the name is said once, before
                refused.setdefault(reason, []).append(result.name or name)
        return "; ".join(f"{', '.join(names)}: {reason}" for reason, names in refused.items()) or None

    # -- health and recovery -----------------------------------------------------------------------
    def health_problem(self) -> str | None:
        """None if nitro-cli lists our enclave running and it attests with every key loaded."""
        assert self.enclave is not None and self.signer is not None
        try:
            listed = {enclave.enclave_id: enclave for enclave in self.nitro_cli.describe_enclaves()}
        except HostToolError as exc:
            return str(exc)
        mine = listed.get(self.enclave.enclave_id)
        if mine is None or mine.state != "RUNNING":
            return f"nitro-cli no longer lists enclave {self.enclave.enclave_id} as running"
        try:
            loaded = {key.name for key in self.signer.keys()}
        except ZeroCopyError as exc:
            return f"the enclave does not answer: {exc}"
        missing = sorted({name for name, _ in self.bundles} - loaded)
        return f"keys missing from the enclave: {', '.join(missing)}" if missing else None

    def recover(self, problem: str, stop: threading.Event) -> None:
        self.log.event("unhealthy", problem)
        for attempt in range(1, self.config.max_restarts + 1):
            if stop.wait(self._delay(attempt)):
                return
            self.log.event("restarting", f"restart {attempt} of at most {self.config.max_restarts}", attempt=attempt)
            try:
                self._discard_enclave()
                self.boot(stop)
            except (HostToolError, ConnectionFailed) as exc:
                self.log.event("restart-failed", str(exc), attempt=attempt)
                continue
            self.log.event("recovered", "enclave running, attested and provisioned again", attempt=attempt)
            return
        raise HostAgentError(f"the enclave could not be restarted after {self.config.max_restarts} tries ({problem})")

    def _delay(self, attempt: int) -> float:
        return min(self.config.backoff * 2 ** (attempt - 1), self.config.max_backoff)

    def _discard_enclave(self) -> None:
        if self.signer is not None:
            self.signer.close()
            self.signer = None
        if self.enclave is not None:
            enclave, self.enclave = self.enclave, None
            if any(listed.enclave_id == enclave.enclave_id for listed in self.nitro_cli.describe_enclaves()):
                self.nitro_cli.terminate_enclave(enclave.enclave_id)

    def shutdown(self) -> None:
        """Terminate our enclave and stop the proxy; errors here are logged, not raised."""
        try:
            self._discard_enclave()
        except ZeroCopyError as exc:
            self.log.event("shutdown-error", str(exc))
        self.vsock_proxy.stop()
        self.log.event("stopped", "enclave terminated and vsock-proxy stopped")
