"""``Emulator``: everything Nitro provides, on one machine, around the real enclave code."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zerocopy.errors import ZeroCopyError

from .account import ACCOUNT_ID, HOST_ROLE_ARN, HostRole
from .kms.moto_process import MotoProcess, MotoStartError
from . import _boto
from .launcher import KMS_PROXY_PORT, PARENT_CID, EnclaveProcess, LaunchError, emulated_vsock_path
from .nsm import DOCUMENT_ENCODINGS
from .pki import AttestationPki, TlsAuthority

# The attesting KMS and the vsock-proxy are imported when start() needs them, after moto's process
# was started: their imports (about 0.2 s) then overlap moto's own.
if TYPE_CHECKING:
    from .kms.server import KmsFrontServer
    from .vsock_proxy import VsockProxy

__all__ = ["Emulator", "EmulatorError", "FIRST_ENCLAVE_CID", "ACCOUNT_ID"]

FIRST_ENCLAVE_CID = 16
#: The account root's access key: the operator's client (``Emulator.kms``), which creates keys and
#: key policies. The host's credentials are sessions of the host role (``Emulator.credentials``).
ADMIN_CREDENTIALS = {"access_key_id": "zerocopy-emulator", "secret_access_key": "zerocopy-emulator-secret"}


class EmulatorError(ZeroCopyError, RuntimeError):
    """The emulator could not start (the message says which part, with its log)."""


class Emulator:
    """Start the emulated KMS, vsock-proxy and NSM, and launch the enclave code on them.

    ``document_encoding`` is how the emulated NSM encodes attestation payloads: ``"indefinite"``
    (what Nitro emits since about September 2025, the default) or ``"definite"`` (before).

    ``seal_key`` (default true): create a KMS key for ``GENERATE`` to seal to, the way an operator
    does in production — created locked (:func:`~zerocopy.kms_policy.locked_key_policy`), its ARN
    passed as the enclave's ``--seal-key`` (so it is part of PCR0), then pinned to the measured
    PCR0 with ``PutKeyPolicy``. A debug enclave has no PCR0 to pin, so there the key stays locked.

    Use as a context manager; everything it starts (processes, threads, socket files in a private
    0700 directory) is gone after ``stop()``, also when start-up fails halfway.
    """

    def __init__(
        self,
        *,
        debug: bool = False,
        enclave_dir: str | os.PathLike | None = None,
        clock: str | None = None,
        region: str = "us-east-1",
        document_encoding: str = "indefinite",
        seal_key: bool = True,
    ) -> None:
        if document_encoding not in DOCUMENT_ENCODINGS:
            raise ValueError(f"document_encoding must be one of {', '.join(DOCUMENT_ENCODINGS)}, not {document_encoding!r}")
        self.debug = debug
        self.document_encoding = document_encoding
        self.enclave_dir = Path(enclave_dir) if enclave_dir is not None else None
        self.clock = clock
        self.region = region
        self.create_seal_key = seal_key
        self.seal_keys: tuple[str, ...] = ()
        self.run_dir: Path | None = None
        self.enclave: EnclaveProcess | None = None
        self._enclaves: list[EnclaveProcess] = []
        self._next_cid = FIRST_ENCLAVE_CID
        self._moto: MotoProcess | None = None
        self._front: KmsFrontServer | None = None
        self._proxy: VsockProxy | None = None
        self._kms_client: Any = None
        self._host_role: HostRole | None = None
        self._lock = threading.Lock()
        #: Seconds from ``start()`` to the end of each of its phases, in order: ``local`` (certificates,
        #: enclave image, boto models: done while moto's process starts), ``moto`` (it serves),
        #: ``kms_front`` (the attesting KMS and its vsock-proxy), ``seal_key``, ``enclave`` (it
        #: listens), ``pinned`` (the seal key's policy), ``host_role`` (made while the enclave booted).
        self.start_phases: dict[str, float] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Emulator":
        began = time.perf_counter()
        self.start_phases = {}
        mark = lambda phase: self.start_phases.setdefault(phase, time.perf_counter() - began)  # noqa: E731
        self.run_dir = Path(tempfile.mkdtemp(prefix="zc-"))
        os.chmod(self.run_dir, 0o700)
        host_role: _InThread | None = None
        try:
            # moto's process spends about half a second importing: meanwhile, all that needs no moto.
            self._moto = MotoProcess(self.run_dir / "moto.log").spawn()
            cert_path, key_path = self._issue_certificates()
            main = self._new_enclave(enclave_dir=self.enclave_dir, debug=self.debug, clock=self.clock, seal_keys=()).prepare()
            _boto.preload()
            _import_the_rest()
            mark("local")
            self.moto_endpoint_url = self._moto.wait_ready().endpoint_url
            mark("moto")
            self._start_kms(cert_path, key_path)
            mark("kms_front")
            self.seal_keys = main.seal_keys = (self._new_seal_key(),) if self.create_seal_key else ()
            mark("seal_key")
            assert self._host_role is not None
            host_role = _InThread(self._host_role.create)  # moto's IAM and STS, while the enclave boots
            self.enclave = main.start()
            mark("enclave")
            self._pin_seal_keys(self.enclave)
            mark("pinned")
            host_role.result()
            mark("host_role")
        except BaseException as exc:
            self.stop()
            if host_role is not None:
                host_role.join(5.0)  # its calls fail fast now that moto is gone
            if isinstance(exc, (LaunchError, MotoStartError)):
                raise EmulatorError(str(exc)) from None
            raise
        return self

    def _start_kms(self, cert_path: Path, key_path: Path) -> None:
        """The attesting KMS on moto: its model, its HTTPS front, the vsock-proxy to it; the host role's clients."""
        from .kms.models import AttestingKms
        from .kms.server import KmsFrontServer

        assert self.run_dir is not None
        self.kms_model = AttestingKms(
            self.moto_endpoint_url,
            attestation_roots=[self.pki.root_pem],
            account_id=ACCOUNT_ID,
            region=self.region,
            root_credentials={ADMIN_CREDENTIALS["access_key_id"]: ADMIN_CREDENTIALS["secret_access_key"]},  # the account root
        )
        self._host_role = HostRole(self.moto_endpoint_url, region=self.region, session_name=self.pki.instance_id)
        self._front = KmsFrontServer(self.kms_model, certfile=str(cert_path), keyfile=str(key_path)).start()
        proxy_path = emulated_vsock_path(str(self.run_dir), PARENT_CID, KMS_PROXY_PORT)
        self._proxy = self._start_vsock_proxy(proxy_path, ("127.0.0.1", self._front.port))

    def _issue_certificates(self) -> tuple[Path, Path]:
        """The attestation PKI, and the TLS CA and certificate of the KMS endpoint (as files)."""
        assert self.run_dir is not None
        self.pki = AttestationPki(self.region)
        self._tls = TlsAuthority()
        self.tls_ca_path = self.run_dir / "tls-ca.pem"
        self.tls_ca_path.write_bytes(self._tls.root_pem)
        served = self._tls.server_certificate(f"kms.{self.region}.amazonaws.com")
        cert_path, key_path = self.run_dir / "kms-cert.pem", self.run_dir / "kms-key.pem"
        cert_path.write_bytes(served.pem)
        key_path.touch(0o600)
        key_path.write_bytes(TlsAuthority.key_pem(served))
        return cert_path, key_path

    def _start_vsock_proxy(self, listen_path: str, target: tuple[str, int]) -> VsockProxy:
        from zerocopy.vsock_proxy import allowlist_yaml

        from .vsock_proxy import VsockProxy

        # From an allowlist file in the production format, so every run goes through that check.
        assert self.run_dir is not None
        allowlist = self.run_dir / "vsock-proxy.yaml"
        allowlist.write_text(allowlist_yaml([target]))
        return VsockProxy(listen_path, target, allowlist=allowlist).start()

    def _new_seal_key(self) -> str:
        """The operator's first step: a key that allows nothing until an image is pinned."""
        from zerocopy.kms_policy import locked_key_policy

        created = self.kms.create_key(Policy=json.dumps(locked_key_policy(ACCOUNT_ID)), Description="ZeroCopy seal key (GENERATE)")
        return created["KeyMetadata"]["Arn"]

    def _pin_seal_keys(self, enclave: EnclaveProcess) -> None:
        """The operator's last step: the image that names the keys is measured, so pin its PCR0."""
        if enclave.debug:
            return  # all-zero PCR0: nothing to pin, and the key stays locked
        from zerocopy.kms_policy import attested_key_policy

        policy = json.dumps(attested_key_policy(ACCOUNT_ID, image_sha384=enclave.pcrs[0]))
        for arn in enclave.seal_keys:
            self.kms.put_key_policy(KeyId=arn, PolicyName="default", Policy=policy)

    def launch(
        self,
        *,
        enclave_dir: str | os.PathLike | None = None,
        debug: bool = False,
        clock: str | None = None,
        busy_poll_us: int = 0,
        seal_keys: tuple[str, ...] | None = None,
    ) -> EnclaveProcess:
        """Launch another enclave (its own CID and PCRs) on this emulator's KMS and PKI.

        ``seal_keys`` are its ``--seal-key`` options (``None``: the emulator's own seal key). They
        are part of PCR0; only the main enclave's PCR0 is pinned in the seal key's policy.
        """
        if self.run_dir is None:
            raise EmulatorError("start the emulator first")
        return self._new_enclave(enclave_dir=enclave_dir, debug=debug, clock=clock, busy_poll_us=busy_poll_us, seal_keys=seal_keys).start()

    def _new_enclave(
        self, *, enclave_dir: str | os.PathLike | None, debug: bool, clock: str | None, busy_poll_us: int = 0, seal_keys: tuple[str, ...] | None
    ) -> EnclaveProcess:
        """An enclave on the next CID, not started yet (``stop()`` stops it either way)."""
        assert self.run_dir is not None
        with self._lock:
            cid, self._next_cid = self._next_cid, self._next_cid + 1
        process = EnclaveProcess(
            run_dir=self.run_dir,
            cid=cid,
            pki=self.pki,
            region=self.region,
            kms_ca_path=self.tls_ca_path,
            enclave_source=Path(enclave_dir) if enclave_dir is not None else None,
            debug=debug,
            clock=clock,
            busy_poll_us=busy_poll_us,
            role_arn=HOST_ROLE_ARN,  # the role whose sessions Emulator.credentials are
            document_encoding=self.document_encoding,
            seal_keys=self.seal_keys if seal_keys is None else seal_keys,
        )
        self._enclaves.append(process)
        return process

    def stop(self) -> None:
        try:
            self._stop_processes()
        finally:  # whatever failed or was interrupted above, no file is left behind
            if self.run_dir is not None:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                self.run_dir = None

    def _stop_processes(self) -> None:
        # Every enclave is told first, so they exit together; then each is waited for. moto goes
        # last (it exits at once): a request the KMS front is still answering needs it.
        for process in self._enclaves:
            process.terminate()
        for process in reversed(self._enclaves):
            process.stop()
        self._enclaves.clear()
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._front is not None:
            self._front.stop()
            self._front = None
            self.kms_model.close()  # its boto3 clients to moto
        if self._host_role is not None:
            self._host_role.close()
            self._host_role = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests and tools use -------------------------------------------------------------
    @property
    def address(self) -> str:
        return self._main_enclave().address

    @property
    def pcrs(self) -> dict[int, bytes]:
        return dict(self._main_enclave().pcrs)

    @property
    def root_certificate(self) -> bytes:
        """The PEM of the emulator's attestation root (pass it as ``roots=[...]``)."""
        return self.pki.root_pem

    @property
    def vsock_proxy(self) -> VsockProxy:
        """The emulated parent's vsock-proxy towards KMS (``.num_workers``, ``.active``, ``.allowlist``)."""
        if self._proxy is None:
            raise EmulatorError("the emulator is not running")
        return self._proxy

    @property
    def seal_key(self) -> str | None:
        """ARN of the KMS key ``GENERATE`` seals to (the main enclave's first ``--seal-key``), if any."""
        return self.seal_keys[0] if self.seal_keys else None

    @property
    def kms_endpoint_url(self) -> str:
        assert self._front is not None
        return self._front.endpoint_url

    @property
    def credentials(self) -> dict[str, str]:
        """The host's AWS credentials: a session of the host role (``access_key_id``,
        ``secret_access_key``, ``session_token``), refreshed before it expires.

        The role is SECURITY.md's host role: ``kms:Decrypt`` and ``kms:GenerateDataKey`` only
        (:mod:`emulator.account`), both of which the attested key policy denies without the
        enclave's attestation. Key administration is ``Emulator.kms``'s, the account root's.
        """
        if self._host_role is None:
            raise EmulatorError("the emulator is not running")
        return self._host_role.credentials

    @property
    def operator_credentials(self) -> dict[str, str]:
        """The account root's access key, which ``Emulator.kms`` uses (key administration)."""
        return dict(ADMIN_CREDENTIALS)

    @property
    def credentials_expiration(self) -> Any:
        """When the session ``credentials`` last returned expires (an aware datetime)."""
        if self._host_role is None:
            raise EmulatorError("the emulator is not running")
        return self._host_role.expiration

    @property
    def account_id(self) -> str:
        return ACCOUNT_ID

    @property
    def kms(self) -> Any:
        """A boto3 KMS client bound to the emulated (attesting) KMS endpoint, as the account root
        (the operator: it creates keys and key policies)."""
        if self._kms_client is None:
            self._kms_client = kms_client(self.kms_endpoint_url, str(self.tls_ca_path), self.region)
        return self._kms_client

    def host_kms(self) -> Any:
        """A new boto3 KMS client with the host's credentials (the host role's current session); close it after use."""
        return kms_client(self.kms_endpoint_url, str(self.tls_ca_path), self.region, self.credentials)

    def signer(self, **kwargs: Any) -> Any:
        """A ``Signer`` that first checks the enclave's attestation against this emulator's root and
        PCR0 — in debug mode the all-zero PCR0 a debug enclave reports, pinned explicitly (an
        attesting Signer always pins PCR0), with ``allow_debug``."""
        from zerocopy import Signer

        kwargs.setdefault("expected_pcrs", {0: self.pcrs[0]})
        kwargs.setdefault("roots", [self.root_certificate])
        kwargs.setdefault("allow_debug", self.debug)
        return Signer(self.address, **kwargs)

    def check(self) -> None:
        """Raise if an enclave process died (with its log), as pytest-httpserver's ``check()``."""
        for process in self._enclaves:
            if not process.running and not process.stopped:
                raise EmulatorError(f"the enclave at {process.address} is not running:\n{process.log_tail()}")

    def _main_enclave(self) -> EnclaveProcess:
        if self.enclave is None:
            raise EmulatorError("the emulator is not running")
        return self.enclave


def kms_client(endpoint_url: str, ca_path: str, region: str, credentials: dict[str, str] = ADMIN_CREDENTIALS) -> Any:
    """A boto3 KMS client for the emulated endpoint with ``credentials`` (the account root's by default)."""
    return _boto.client("kms", endpoint_url=endpoint_url, region=region, credentials=credentials, verify=ca_path)


def _import_the_rest() -> None:
    """Import what start() needs once moto serves (the attesting KMS and its front, the vsock-proxy,
    key policies): start() calls it while moto's process starts."""
    import zerocopy.kms_policy  # noqa: F401
    import zerocopy.vsock_proxy  # noqa: F401

    from . import vsock_proxy  # noqa: F401
    from .kms import models, server  # noqa: F401


class _InThread:
    """``function()`` in a daemon thread; :meth:`result` waits for it and raises what it raised."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(function,), name="emulator-start", daemon=True)
        self._thread.start()

    def _run(self, function: Callable[[], Any]) -> None:
        try:
            function()
        except BaseException as exc:  # handed to result(), in the thread that waits
            self._error = exc

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
