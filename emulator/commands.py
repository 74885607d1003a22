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
import json
import shlex
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["OPERATOR_KEY_ALIAS", "add_demo", "add_emulator", "cmd_demo", "cmd_emulator_up", "create_operator_key", "missing_dependencies"]

_NEEDS = {"moto": "moto", "yaml": "PyYAML"}  # the `emulator` extra: module -> distribution
_INSTALL = "pip install -e '.[emulator]' in ZeroCopy's checkout"


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
    up = actions.add_parser("up", help="start the emulator in the foreground and print the addresses", description="Start the emulator, with a KMS key under alias/zerocopy whose policy pins its image, and keep it running until Ctrl-C; prints shell exports (addresses, attestation root, PCR0, region, account, credentials) for the README's operator commands.")
    up.add_argument("--debug", action="store_true", help="launch the enclave in debug mode (zero PCR0-2)")
    up.add_argument("--clock", help="enclave clock: system, fixed:<ms|ISO> or offset:<seconds>")
    up.add_argument("--enclave-dir", help="launch this enclave package instead of the installed one")
    up.add_argument("--region", default="us-east-1")
    up.set_defaults(handler=_needs_emulator(cmd_emulator_up, "emulator up"))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(samples=args.samples)


#: The KMS key the README's operator commands seal under (``zerocopy seal --kms-key alias/zerocopy``).
OPERATOR_KEY_ALIAS = "alias/zerocopy"


def create_operator_key(emulator: Any) -> str | None:
    """The key an operator creates once on AWS, made here so ``zerocopy seal --kms-key
    alias/zerocopy`` works in the shell ``emulator up`` prints exports for: its policy is
    ``zerocopy kms-policy --pcr0 <PCR0>``'s (the same function), pinning the emulated image, with
    the host role as a second sealer — that one shell seals as the operator and provisions as the
    host; on AWS the operator seals with credentials of their own and the host role is no sealer.
    A debug enclave's all-zero PCR0 cannot be pinned: then no key (``None``)."""
    from zerocopy.kms_policy import attested_key_policy

    from .account import ACCOUNT_ID, HOST_ROLE_ARN

    if not any(emulator.pcrs[0]):
        return None
    sealers = [f"arn:aws:iam::{ACCOUNT_ID}:root", HOST_ROLE_ARN]
    policy = attested_key_policy(ACCOUNT_ID, image_sha384=emulator.pcrs[0], sealers=sealers)
    created = emulator.kms.create_key(Policy=json.dumps(policy), Description="ZeroCopy bundles (zerocopy emulator up)")
    arn = created["KeyMetadata"]["Arn"]
    emulator.kms.create_alias(AliasName=OPERATOR_KEY_ALIAS, TargetKeyId=arn)
    return arn


def _export(name: str, value: str) -> None:
    print(f"export {name}={shlex.quote(value)}")


def _print_exports(emulator: Any, operator_key: str | None) -> None:
    credentials, operator = emulator.credentials, emulator.operator_credentials
    root_path = emulator.run_dir / "attestation-root.pem"
    root_path.write_bytes(emulator.root_certificate)
    _export("ZEROCOPY_ENCLAVE", emulator.address)
    _export("ZEROCOPY_KMS_ENDPOINT", emulator.kms_endpoint_url)
    _export("ZEROCOPY_KMS_CA", str(emulator.tls_ca_path))
    # The emulator's attestation root, and the image it must attest: the CLI's attest verify,
    # audit verify and stethoscope trust this root, and Signer.from_env() attests with both.
    _export("ZEROCOPY_ATTESTATION_ROOT", str(root_path))
    _export("ZEROCOPY_EXPECTED_PCR0", emulator.pcrs[0].hex())
    _export("AWS_REGION", emulator.region)
    _export("AWS_DEFAULT_REGION", emulator.region)  # what botocore and the aws CLI read
    _export("AWS_ACCOUNT_ID", emulator.account_id)  # zerocopy kms-policy --account "$AWS_ACCOUNT_ID"
    _export("AWS_ACCESS_KEY_ID", credentials["access_key_id"])
    _export("AWS_SECRET_ACCESS_KEY", credentials["secret_access_key"])
    _export("AWS_SESSION_TOKEN", credentials["session_token"])
    print(f"# the host role's session (kms:Decrypt, kms:GenerateDataKey), expires {emulator.credentials_expiration:%Y-%m-%dT%H:%M:%SZ}")
    # The operator's key (the account root), for creating keys and key policies; pytest's
    # --zerocopy-enclave creates its test key with it.
    _export("ZEROCOPY_KMS_OPERATOR_ACCESS_KEY_ID", operator["access_key_id"])
    _export("ZEROCOPY_KMS_OPERATOR_SECRET_ACCESS_KEY", operator["secret_access_key"])
    if operator_key:
        print(f"# {OPERATOR_KEY_ALIAS}: {operator_key}, its policy pins PCR0 (zerocopy kms-policy); sealers: the account root and, in the emulator only, the host role")
    else:
        print(f"# no {OPERATOR_KEY_ALIAS}: a debug enclave's all-zero PCR0 cannot be pinned in a key policy")
        print("# debug mode: accept its documents with --allow-debug (CLI) or allow_debug=True (Signer.from_env, Signer)")
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
        _print_exports(emulator, create_operator_key(emulator))
        _say("emulator running; paste the exports above into another shell. Ctrl-C stops it.")
        try:
            while not stopped.wait(0.5):
                emulator.check()
        except KeyboardInterrupt:
            pass
    _say("emulator stopped")
    return 0
