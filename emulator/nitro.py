"""The emulated parent's Nitro Enclaves device, and the ``nitro-cli`` that talks to it.

On an instance, ``nitro-cli run-enclave`` asks the Nitro Enclaves driver for CPUs and memory and
boots the image; ``describe-enclaves`` lists what runs; ``terminate-enclave`` stops one. Here
:class:`NitroDevice` plays the driver: a Unix socket in the emulated parent's run directory,
served by one long-lived thread that launches each enclave as :mod:`emulator.launcher` does (on
the emulator's attestation PKI and KMS, so its documents verify and KMS accepts them) — one thread,
because an enclave process dies with the thread that started it (``PR_SET_PDEATHSIG``).

``python -m emulator.nitro --device PATH <command> [options]`` is the emulated ``nitro-cli``: the
real one's commands and options (``run-enclave --eif-path --cpu-count --memory --enclave-cid
--enclave-name --debug-mode``, ``describe-enclaves``, ``terminate-enclave --enclave-id``), its JSON
answers with its field names (``EnclaveName``, ``EnclaveID``, ``ProcessID``, ``EnclaveCID``,
``NumberOfCPUs``, ``CPUIDs``, ``MemoryMiB``, ``State``, ``Flags``; ``Terminated``), and its
errors as one line on stderr with a non-zero exit. The image file must be a
well-formed EIF (read with :func:`zerocopy.eif.read_eif`); what boots is the emulator's enclave
package, measured the emulator's way (docs/architecture.md), not the EIF's kernel. An enclave whose
process died (a crash, a SIGKILL) is no longer listed, as a halted enclave is gone on Nitro.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import sys
import threading
from pathlib import Path
from typing import Any

from zerocopy.errors import ZeroCopyError

__all__ = ["NitroDevice", "main"]

_MAX_REQUEST = 65536


class _Handler(socketserver.StreamRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        line = self.rfile.readline(_MAX_REQUEST)
        try:
            request = json.loads(line)
            answer = {"ok": True, "answer": self.server.device.handle(request["command"], request.get("options", {}))}
        except NitroCliError as exc:
            answer = {"ok": False, "error": str(exc)}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            answer = {"ok": False, "error": f"nitro-cli: Invalid argument provided: {exc}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


class _Server(socketserver.UnixStreamServer):
    def __init__(self, path: str, device: "NitroDevice") -> None:
        self.device = device
        super().__init__(path, _Handler)


class NitroCliError(ZeroCopyError):
    """A refusal: one line on the emulated nitro-cli's stderr."""


class NitroDevice:
    """The enclaves of one emulated parent instance, started on ``emulator``'s PKI and KMS."""

    def __init__(self, emulator: Any, run_dir: Path, *, enclave_source: Path | None = None) -> None:
        self.emulator = emulator
        self.run_dir = run_dir
        self.enclave_source = enclave_source
        self.path = str(run_dir / "nitro-enclaves.sock")
        self.enclaves: dict[str, Any] = {}  # EnclaveID -> (EnclaveProcess, description)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "NitroDevice":
        self._server = _Server(self.path, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="nitro-device", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # after the request in hand: launches happen on that one thread
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for process, _ in self.enclaves.values():
            process.stop()
        self.enclaves.clear()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def command(self) -> list[str]:
        """The emulated ``nitro-cli`` for this device (what ``zerocopy host --nitro-cli`` runs)."""
        return [sys.executable, "-m", "emulator.nitro", "--device", self.path]

    def handle(self, command: str, options: dict[str, Any]) -> Any:
        self._forget_dead()
        if command == "run-enclave":
            return self._run(options)
        if command == "describe-enclaves":
            return [dict(description, State="RUNNING") for _, description in self.enclaves.values()]
        if command == "terminate-enclave":
            return self._terminate(str(options["enclave_id"]))
        raise NitroCliError(f"nitro-cli: Invalid argument provided: unknown command {command!r}")

    def _forget_dead(self) -> None:
        for enclave_id, (process, _) in list(self.enclaves.items()):
            if not process.running:
                process.stop()
                del self.enclaves[enclave_id]

    def _run(self, options: dict[str, Any]) -> dict[str, Any]:
        from zerocopy.eif import read_eif
        from zerocopy.errors import EifError

        from .launcher import LaunchError

        try:
            read_eif(options["eif_path"])
        except (OSError, EifError) as exc:
            raise NitroCliError(f"nitro-cli: EIF file parsing error: {options['eif_path']}: {exc}") from None
        cid, cpus, memory = int(options["enclave_cid"]), int(options["cpu_count"]), int(options["memory"])
        if any(description["EnclaveCID"] == cid for _, description in self.enclaves.values()):
            raise NitroCliError(f"nitro-cli: Enclave CID {cid} is already in use")
        try:
            process = self._launch(cid, bool(options.get("debug_mode")))
        except LaunchError as exc:
            raise NitroCliError(f"nitro-cli: Unspecified error: the enclave did not boot: {str(exc).splitlines()[0]}") from None
        name = options.get("enclave_name") or Path(options["eif_path"]).stem
        description = {
            "EnclaveName": name, "EnclaveID": process.module_id, "ProcessID": process.pid, "EnclaveCID": cid,
            "NumberOfCPUs": cpus, "CPUIDs": list(range(1, 2 * cpus, 2)), "MemoryMiB": memory, "Flags": "DEBUG_MODE" if process.debug else "NONE",
        }  # fmt: skip
        self.enclaves[process.module_id] = (process, description)
        return {key: value for key, value in description.items() if key != "Flags"}

    def _launch(self, cid: int, debug: bool) -> Any:
        from .account import HOST_ROLE_ARN
        from .launcher import EnclaveProcess

        emulator = self.emulator
        process = EnclaveProcess(
            run_dir=self.run_dir, cid=cid, pki=emulator.pki, region=emulator.region, kms_ca_path=emulator.tls_ca_path,
            enclave_source=self.enclave_source, debug=debug, role_arn=HOST_ROLE_ARN, seal_keys=emulator.seal_keys,
        )  # fmt: skip
        return process.start()

    def _terminate(self, enclave_id: str) -> dict[str, Any]:
        if enclave_id not in self.enclaves:
            raise NitroCliError(f"nitro-cli: Enclave process connection failure: no enclave with id {enclave_id}")
        process, description = self.enclaves.pop(enclave_id)
        process.stop()
        return {"EnclaveName": description["EnclaveName"], "EnclaveID": enclave_id, "Terminated": True}


# -- the emulated nitro-cli ------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nitro-cli (emulated)")
    parser.add_argument("--device", required=True, help="the emulated parent's Nitro Enclaves device socket")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run-enclave")
    run.add_argument("--eif-path", required=True)
    run.add_argument("--cpu-count", type=int, required=True)
    run.add_argument("--memory", type=int, required=True)
    run.add_argument("--enclave-cid", type=int, required=True)
    run.add_argument("--enclave-name")
    run.add_argument("--debug-mode", action="store_true")
    commands.add_parser("describe-enclaves")
    terminate = commands.add_parser("terminate-enclave")
    terminate.add_argument("--enclave-id", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = {key: value for key, value in vars(args).items() if key not in ("device", "command")}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(120)
            connection.connect(args.device)
            connection.sendall(json.dumps({"command": args.command, "options": options}).encode() + b"\n")
            answer = json.loads(connection.makefile("rb").readline(_MAX_REQUEST))
    except (OSError, ValueError) as exc:
        print(f"nitro-cli: Enclave process connection failure: {args.device}: {exc}", file=sys.stderr)
        return 1
    if not answer["ok"]:
        print(answer["error"], file=sys.stderr)
        return 1
    print(json.dumps(answer["answer"], indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
