"""The emulator's commands in the ``zerocopy`` CLI: ``demo`` and ``emulator up``.

They live with the emulator, so the host package never imports it: ``pyproject.toml`` names
:func:`add_demo` and :func:`add_emulator` in the ``zerocopy.commands`` entry-point group, and
``zerocopy._cli`` calls each one with its subparsers at run time, as pytest loads ``pytest11``
plugins. They are always there (stable commands); without the emulator's dependencies (the
``emulator`` extra) running one prints what is missing and how to install it, and exits 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["add_demo", "add_emulator", "cmd_demo", "cmd_emulator_up", "missing_dependencies"]

_NEEDS = {"moto": "moto", "yaml": "PyYAML"}  # the `emulator` extra: module -> distribution
_INSTALL = "pip install 'zerocopy[emulator]'"


def missing_dependencies() -> list[str]:
    """The distributions of the ``emulator`` extra that cannot be imported here."""
    return [distribution for module, distribution in _NEEDS.items() if importlib.util.find_spec(module) is None]


def _needs_emulator(command: Callable[[argparse.Namespace], int], name: str) -> Callable[[argparse.Namespace], int]:
    """``command`` (``zerocopy name``), run only when the emulator's dependencies are installed."""

    def run(args: argparse.Namespace) -> int:
        missing = missing_dependencies()
        if missing:
            _say(f"zerocopy: error: {name} needs the emulator's dependencies ({', '.join(missing)} missing): {_INSTALL}")
            return 1
        return command(args)

    return run


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def add_demo(commands: Any) -> None:
    """Add ``demo`` to the ``zerocopy`` subparsers ``commands``."""
    demo = commands.add_parser("demo", help="run the whole flow on the embedded emulator", description="Seal a secret, provision an emulated enclave, sign, and show an enclave with other code being refused.")
    demo.add_argument("--samples", type=int, default=2000, help="sign round trips to time (default: %(default)s)")
    demo.set_defaults(handler=_needs_emulator(cmd_demo, "demo"))


def add_emulator(commands: Any) -> None:
    """Add ``emulator up`` to the ``zerocopy`` subparsers ``commands``."""
    emulator = commands.add_parser("emulator", help="run the emulator", description="Local stand-ins for Nitro (vsock, NSM, attesting KMS).")
    actions = emulator.add_subparsers(dest="emulator_command", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start the emulator in the foreground and print the addresses", description="Start the emulator and keep it running until Ctrl-C; prints shell exports for the addresses.")
    up.add_argument("--debug", action="store_true", help="launch the enclave in debug mode (zero PCR0-2)")
    up.add_argument("--clock", help="enclave clock: system, fixed:<ms|ISO> or offset:<seconds>")
    up.add_argument("--enclave-dir", help="launch this enclave package instead of the installed one")
    up.add_argument("--region", default="us-east-1")
    up.set_defaults(handler=_needs_emulator(cmd_emulator_up, "emulator up"))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(samples=args.samples)


def _print_exports(emulator: Any) -> None:
    credentials, operator = emulator.credentials, emulator.operator_credentials
    print(f"export ZEROCOPY_ENCLAVE={emulator.address}")
    print(f"export ZEROCOPY_KMS_ENDPOINT={emulator.kms_endpoint_url}")
    print(f"export ZEROCOPY_KMS_CA={emulator.tls_ca_path}")
    print(f"export AWS_REGION={emulator.region}")
    print(f"export AWS_ACCESS_KEY_ID={credentials['access_key_id']}")
    print(f"export AWS_SECRET_ACCESS_KEY={credentials['secret_access_key']}")
    print(f"export AWS_SESSION_TOKEN={credentials['session_token']}")
    print(f"# the host role's session (kms:Decrypt, kms:GenerateDataKey), expires {emulator.credentials_expiration:%Y-%m-%dT%H:%M:%SZ}")
    # The operator's key (the account root), for creating keys and key policies; pytest's
    # --zerocopy-enclave creates its test key with it.
    print(f"export ZEROCOPY_KMS_OPERATOR_ACCESS_KEY_ID={operator['access_key_id']}")
    print(f"export ZEROCOPY_KMS_OPERATOR_SECRET_ACCESS_KEY={operator['secret_access_key']}")
    root_path = emulator.run_dir / "attestation-root.pem"
    root_path.write_bytes(emulator.root_certificate)
    print(f"# attestation root: {root_path}")
    print(f"# PCR0: {emulator.pcrs[0].hex()}")
    if emulator.seal_key:
        print(f"# seal key (the enclave's --seal-key, measured in PCR0; zerocopy generate seals to it): {emulator.seal_key}")
    sys.stdout.flush()


def cmd_emulator_up(args: argparse.Namespace) -> int:
    import signal
    import threading

    from . import Emulator

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with Emulator(debug=args.debug, clock=args.clock, enclave_dir=args.enclave_dir, region=args.region) as emulator:
        _print_exports(emulator)
        _say("emulator running; paste the exports above into another shell. Ctrl-C stops it.")
        try:
            while not stopped.wait(0.5):
                emulator.check()
        except KeyboardInterrupt:
            pass
    _say("emulator stopped")
    return 0
