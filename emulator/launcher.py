"""Start the real enclave code as its own process, with emulated devices underneath.

The launcher copies the enclave package into a private image directory (what runs is exactly
what was measured), measures it into PCRs, creates the NSM device on one end of a socket pair and
passes the other end to the child as an inherited descriptor (``--nsm fd://N``). The child runs
with a scrubbed environment, Python's isolated mode, a parent-death signal and an audit hook that
refuses AF_VSOCK connections (vsock on a developer machine may lead somewhere real).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._process import set_parent_death_signal
from .account import HOST_ROLE_ARN
from .bytecode import write_bytecode
from .measure import image_files, measure
from .nsm import EmulatedNsm, NsmDeviceServer
from .pki import AttestationPki, new_module_id

__all__ = ["EnclaveProcess", "LaunchError", "BOOTSTRAP", "ENCLAVE_PORT", "VSOCK_GUARD", "install_vsock_guard", "emulated_vsock_path"]

ENCLAVE_PORT = 5000
KMS_PROXY_PORT = 8000
PARENT_CID = 3


def emulated_vsock_path(directory: str, cid: int, port: int) -> str:
    """Where the emulator puts the Unix socket that stands for ``vsock://cid:port``."""
    return f"{directory.rstrip('/')}/vsock-{cid}-{port}.sock"


# Refuses AF_VSOCK connects in a process: on developer machines and CI, vsock may lead out of
# the sandbox. Audit hooks cannot be removed once installed.
VSOCK_GUARD = """\
import socket as _socket, sys as _sys
def _refuse_vsock(event, args):
    if event == "socket.connect" and getattr(args[0], "family", None) == getattr(_socket, "AF_VSOCK", -1):
        raise PermissionError("AF_VSOCK connect refused: ZeroCopy's emulator and tests never use real vsock")
_sys.addaudithook(_refuse_vsock)
"""

# Runs in the child before the enclave package; part of the measured argv.
BOOTSTRAP = VSOCK_GUARD + """\
import runpy, sys
sys.path.insert(0, sys.argv.pop(1))
runpy.run_module("enclave", run_name="__main__", alter_sys=True)
"""


def install_vsock_guard() -> None:
    """Install the same AF_VSOCK guard in this process (the test suite does, at start-up)."""
    exec(VSOCK_GUARD, {})


class LaunchError(RuntimeError):
    """The enclave process did not come up; the message ends with its log."""


def default_enclave_source() -> Path:
    import enclave

    return Path(enclave.__file__).resolve().parent


class EnclaveProcess:
    def __init__(
        self,
        *,
        run_dir: Path,
        cid: int,
        pki: AttestationPki,
        region: str,
        kms_ca_path: Path,
        enclave_source: Path | None = None,
        debug: bool = False,
        clock: str | None = None,
        busy_poll_us: int = 0,
        role_arn: str = HOST_ROLE_ARN,
        document_encoding: str = "indefinite",
        seal_keys: Sequence[str] = (),
    ) -> None:
        self.run_dir = run_dir
        self.cid = cid
        self.pki = pki
        self.debug = debug
        self.enclave_source = Path(enclave_source) if enclave_source else default_enclave_source()
        self.image_root = run_dir / f"image-{cid}"
        self.socket_path = emulated_vsock_path(str(run_dir), cid, ENCLAVE_PORT)
        self.address = f"unix://{self.socket_path}"
        self.log_path = run_dir / f"enclave-{cid}.log"
        # Device wiring: where the emulator put its stand-ins for vsock and /dev/nsm. On Nitro these
        # are fixed devices, not part of the image, so PCR0 measures them by role, not by path.
        self.wiring = {
            "--listen": (self.address, f"vsock://ANY:{ENCLAVE_PORT}"),
            "--kms-proxy": (f"unix://{emulated_vsock_path(str(run_dir), PARENT_CID, KMS_PROXY_PORT)}", f"vsock://{PARENT_CID}:{KMS_PROXY_PORT}"),
            "--kms-ca": (str(kms_ca_path), "emulator-tls-ca.pem"),
        }
        # The operator's launch configuration: measured as written (the seal keys too, so the host
        # cannot change which KMS keys generated keys are sealed to without changing PCR0).
        self.seal_keys = tuple(seal_keys)  # may be set until start(): the emulator creates them meanwhile
        self.region, self.clock, self.busy_poll_us = region, clock, busy_poll_us
        self.env = {"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"}
        self.module_id = ""  # set at each start: a relaunched enclave has a new id, as on Nitro
        self.document_encoding = document_encoding
        self.role_arn = role_arn
        self.pcrs: dict[int, bytes] = {}
        self.stopped = False
        self._process: subprocess.Popen | None = None
        self._nsm_server: NsmDeviceServer | None = None
        self._prepared = False
        self._terminating = False

    @property
    def options(self) -> list[str]:
        return (
            ["--region", self.region]
            + [item for arn in self.seal_keys for item in ("--seal-key", arn)]
            + (["--clock", self.clock] if self.clock else [])
            + (["--busy-poll-us", str(self.busy_poll_us)] if self.busy_poll_us else [])
        )

    def argv(self, *, nsm_fd: int) -> list[str]:
        wiring = [item for flag, (actual, _) in self.wiring.items() for item in (flag, actual)]
        return [sys.executable, *self._interpreter_flags(), str(self.image_root), *wiring, "--nsm", f"fd://{nsm_fd}", *self.options]

    @property
    def measured_argv(self) -> list[str]:
        wiring = [item for flag, (_, role) in self.wiring.items() for item in (flag, role)]
        return ["python", *self._interpreter_flags(), "<image>", *wiring, "--nsm", "<nsm device>", *self.options]

    @staticmethod
    def _interpreter_flags() -> list[str]:
        return ["-I", "-B", "-c", BOOTSTRAP]

    def prepare(self) -> "EnclaveProcess":
        """Build the image (a copy of the enclave package, and its bytecode); ``start()`` does it
        if this was not called. It depends on nothing but the package, so the emulator calls it
        while other parts start."""
        if not self._prepared:
            self._build_image()
            self._prepared = True
        return self

    def _build_image(self) -> None:
        target = self.image_root / "enclave"
        shutil.copytree(self.enclave_source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
        if not (target / "__main__.py").is_file() or not image_files(target):
            raise LaunchError(f"{self.enclave_source} is not an enclave package (no __main__.py)")
        write_bytecode(target)  # checked against the measured source at import: see emulator.bytecode

    def start(self, timeout: float = 30.0) -> "EnclaveProcess":
        self.stopped = False
        self.module_id = new_module_id(self.pki.instance_id)
        self.prepare()
        self.pcrs = measure(self.image_root / "enclave", self.measured_argv, self.env, role_arn=self.role_arn, instance_id=self.pki.instance_id, debug=self.debug)
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        nsm = EmulatedNsm(self.pki, module_id=self.module_id, pcrs=self.pcrs, document_encoding=self.document_encoding)
        self._nsm_server = NsmDeviceServer(nsm, parent_end).start()
        with open(self.log_path, "ab") as log, child_end:
            self._process = subprocess.Popen(
                self.argv(nsm_fd=child_end.fileno()),
                env=self.env,
                cwd=self.image_root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(child_end.fileno(),),
                preexec_fn=set_parent_death_signal,
                process_group=0,  # a terminal's Ctrl-C reaches the emulator, which stops the enclave in order
                close_fds=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        # The enclave says nothing when it listens (its code is the production code), so probe its
        # socket: a refused connect costs microseconds, so probe often, backing off to 10 ms.
        deadline = time.monotonic() + timeout
        pause = 0.001
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LaunchError(f"the enclave exited with status {self._process.returncode}:\n{self.log_tail()}")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.socket_path)
                return
            except OSError:
                time.sleep(pause)
                pause = min(2 * pause, 0.01)
            finally:
                probe.close()
        raise LaunchError(f"the enclave did not listen on {self.address} within {timeout:.0f}s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def terminate(self) -> None:
        """Ask the enclave to stop (SIGTERM) without waiting: :meth:`stop` waits and cleans up."""
        if self._process is not None and self._process.poll() is None and not self._terminating:
            self._terminating = True  # once: a second SIGTERM could land in the interpreter's exit
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped = True
        self._prepared = False  # the image goes below
        self.terminate()
        process, self._process, self._terminating = self._process, None, False
        if process is not None and process.poll() is None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._nsm_server is not None:
            self._nsm_server.stop()
            self._nsm_server = None
        for leftover in (Path(self.socket_path),):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
        shutil.rmtree(self.image_root, ignore_errors=True)

    def restart(self, timeout: float = 30.0) -> "EnclaveProcess":
        """Stop and start again at the same address: like an enclave reboot, memory is lost."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> "EnclaveProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
