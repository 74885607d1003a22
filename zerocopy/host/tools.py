"""The external tools ``zerocopy host`` drives, each behind a small interface chosen by configuration.

* :class:`NitroCli` runs a ``nitro-cli`` command (``run-enclave``, ``describe-enclaves``,
  ``terminate-enclave``) and reads its JSON answer, with nitro-cli's field names (``EnclaveID``,
  ``ProcessID``, ``EnclaveCID``, ``NumberOfCPUs``, ``MemoryMiB``, ``State``, ``Flags``).
* :class:`VsockProxyProcess` runs ``vsock-proxy <port> <host> <port> --config FILE`` and watches it.
* :class:`InstanceMetadata` reads the instance role's credentials and the region from IMDSv2
  (``PUT /latest/api/token``, then ``GET`` with ``X-aws-ec2-metadata-token``).

Each takes the command or URL to use: on a Nitro instance the defaults (``nitro-cli``,
``vsock-proxy``, ``http://169.254.169.254``), under the emulator its stand-ins (``python -m
emulator.nitro_cli …``, ``python -m emulator.vsock_proxy …``, an IMDS on 127.0.0.1). The agent
has no other way to tell them apart.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HostToolError

__all__ = ["DEFAULT_IMDS_URL", "EnclaveInfo", "InstanceMetadata", "NitroCli", "VsockProxyProcess", "command_words", "parse_credentials"]

DEFAULT_IMDS_URL = "http://169.254.169.254"
_TOOL_TIMEOUT = 120.0
_IMDS_TIMEOUT = 5.0
_IMDS_TOKEN_TTL = 21600  # seconds, the longest IMDSv2 allows
_INSTALL = {
    "nitro-cli": "install it with `sudo dnf install -y aws-nitro-enclaves-cli` (Amazon Linux 2023) on an instance with enclave support",
    "vsock-proxy": "it comes with aws-nitro-enclaves-cli (`sudo dnf install -y aws-nitro-enclaves-cli`)",
}


def command_words(command: str | Sequence[str], tool: str) -> list[str]:
    """``command`` as argv words (a string is split as a shell would); the program must exist."""
    words = shlex.split(command) if isinstance(command, str) else list(command)
    if not words:
        raise HostToolError(f"{tool}: empty command")
    if shutil.which(words[0]) is None:
        raise HostToolError(f"{tool}: {words[0]} not found; {_INSTALL.get(tool, 'check the command')}")
    return words


@dataclass(frozen=True)
class EnclaveInfo:
    """One enclave as nitro-cli describes it."""

    enclave_id: str
    name: str
    cid: int
    process_id: int
    cpus: int
    memory_mib: int
    state: str
    flags: str

    @classmethod
    def from_json(cls, raw: Any, tool: str = "nitro-cli") -> "EnclaveInfo":
        try:
            return cls(
                enclave_id=str(raw["EnclaveID"]), name=str(raw.get("EnclaveName", "")), cid=int(raw["EnclaveCID"]),
                process_id=int(raw.get("ProcessID", 0)), cpus=int(raw.get("NumberOfCPUs", 0)), memory_mib=int(raw.get("MemoryMiB", 0)),
                state=str(raw.get("State", "RUNNING")).upper(), flags=str(raw.get("Flags", "NONE")),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise HostToolError(f"{tool}: unexpected answer ({type(exc).__name__}: {str(exc)[:100]}) in {str(raw)[:200]}") from None


class NitroCli:
    """``nitro-cli``, or whatever ``command`` names that speaks its options and JSON."""

    def __init__(self, command: str | Sequence[str] = "nitro-cli") -> None:
        self.words = command_words(command, "nitro-cli")

    def _run(self, *arguments: str) -> Any:
        argv = [*self.words, *arguments]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=_TOOL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise HostToolError(f"nitro-cli {arguments[0]}: no answer within {_TOOL_TIMEOUT:.0f}s") from None
        except OSError as exc:
            raise HostToolError(f"nitro-cli {arguments[0]}: cannot run {argv[0]}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
            raise HostToolError(f"nitro-cli {arguments[0]} failed (exit {done.returncode}): {said[-1] if said else 'no output'}")
        try:
            return json.loads(done.stdout)
        except ValueError:
            raise HostToolError(f"nitro-cli {arguments[0]}: answer is not JSON: {done.stdout[:200]!r}") from None

    def run_enclave(self, *, eif_path: str, cpu_count: int, memory_mib: int, cid: int, name: str, debug: bool = False) -> EnclaveInfo:
        arguments = ["run-enclave", "--eif-path", eif_path, "--cpu-count", str(cpu_count), "--memory", str(memory_mib), "--enclave-cid", str(cid), "--enclave-name", name]
        return EnclaveInfo.from_json(self._run(*arguments, *(["--debug-mode"] if debug else [])))

    def describe_enclaves(self) -> list[EnclaveInfo]:
        answer = self._run("describe-enclaves")
        if not isinstance(answer, list):
            raise HostToolError(f"nitro-cli describe-enclaves: expected a list, got {type(answer).__name__}")
        return [EnclaveInfo.from_json(item) for item in answer]

    def terminate_enclave(self, enclave_id: str) -> None:
        self._run("terminate-enclave", "--enclave-id", enclave_id)


def _die_with_parent() -> None:
    """Between fork and exec: the proxy gets SIGTERM when the agent dies, even by SIGKILL, so a
    restarted agent finds its vsock port free (Linux's PR_SET_PDEATHSIG; Nitro parents are Linux)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class VsockProxyProcess:
    """``vsock-proxy <vsock port> <host> <port> --config <allowlist>``, run as a child process."""

    def __init__(self, command: str | Sequence[str] = "vsock-proxy") -> None:
        self.words = command_words(command, "vsock-proxy")
        self._process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self, *, vsock_port: int, host: str, port: int, config: Path, log_path: Path, settle: float = 0.5) -> None:
        """Start it; the real proxy checks its allowlist and exits at once if the target is not in it."""
        self.stop()
        self.log_path = log_path
        argv = [*self.words, str(vsock_port), host, str(port), "--config", str(config)]
        with open(log_path, "ab") as log:
            try:
                self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as exc:
                raise HostToolError(f"vsock-proxy: cannot run {argv[0]}: {exc.strerror or exc}") from None
        try:
            self._process.wait(settle)
        except subprocess.TimeoutExpired:
            return  # still running: it accepted its allowlist and listens
        raise HostToolError(f"vsock-proxy exited at start (status {self._process.returncode}): {self.last_words()}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def last_words(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines() if self.log_path and self.log_path.exists() else []
        return lines[-1] if lines else "no output"

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class InstanceMetadata:
    """IMDSv2 at ``url``: the instance role's current credentials and the instance's region."""

    def __init__(self, url: str = DEFAULT_IMDS_URL) -> None:
        self.url = url.rstrip("/")

    def _open(self, request: urllib.request.Request) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=_IMDS_TIMEOUT) as answer:  # noqa: S310 - an http URL the operator configured
                return answer.read(65536)
        except urllib.error.HTTPError as exc:
            raise HostToolError(f"instance metadata {request.get_method()} {request.full_url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HostToolError(f"instance metadata at {self.url} unreachable ({reason}); on EC2 enable it with `aws ec2 modify-instance-metadata-options --http-tokens required`") from None

    def _token(self) -> str:
        request = urllib.request.Request(f"{self.url}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": str(_IMDS_TOKEN_TTL)})
        return self._open(request).decode()

    def get(self, path: str, token: str | None = None) -> str:
        request = urllib.request.Request(f"{self.url}/latest/{path}", headers={"X-aws-ec2-metadata-token": token or self._token()})
        return self._open(request).decode()

    def region(self) -> str:
        return self.get("meta-data/placement/region").strip()

    def credentials(self) -> tuple[dict[str, str], str]:
        """The role's credentials in the shape ``Signer.provision`` takes, and when they expire."""
        token = self._token()
        roles = self.get("meta-data/iam/security-credentials/", token).split()
        if not roles:
            raise HostToolError("instance metadata: this instance has no IAM role (attach an instance profile)")
        return parse_credentials(self.get(f"meta-data/iam/security-credentials/{roles[0]}", token), roles[0])


def parse_credentials(text: str, role: str) -> tuple[dict[str, str], str]:
    """IMDS's credentials document (``Code``, ``AccessKeyId``, ``SecretAccessKey``, ``Token``,
    ``Expiration``) as ``Signer.provision`` takes them, and the expiry; :class:`HostToolError` else."""
    try:
        found = json.loads(text)
        code = found.get("Code", "Success")
        values = {name: found[field] for name, field in (("access_key_id", "AccessKeyId"), ("secret_access_key", "SecretAccessKey"), ("session_token", "Token"))}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise HostToolError(f"instance metadata: the credentials of role {role} are not in IMDS's JSON form") from None
    if code != "Success":
        raise HostToolError(f"instance metadata: credentials of role {role}: {str(code)[:100]}")
    if not all(isinstance(value, str) and value for value in values.values()):
        raise HostToolError(f"instance metadata: the credentials of role {role} have empty or non-string fields")
    return values, str(found.get("Expiration", ""))[:64]
