"""``zerocopy host``: the agent as a command (``deploy/systemd/zerocopy-host.service`` runs it)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from ..errors import EifError, HostAgentError
from ..vsock_proxy import DEFAULT_CONFIG_PATH, DEFAULT_PROXY_PORT
from .agent import HostAgent, HostConfig
from .log import AgentLog
from .tools import DEFAULT_IMDS_URL, InstanceMetadata, NitroCli, VsockProxyProcess

__all__ = ["add_host", "cmd_host"]

DEFAULT_CID = 16
ENCLAVE_PORT = 5000  # the enclave's --listen port (enclave/__main__.py)
DEFAULT_CPUS, DEFAULT_MEMORY_MIB = 2, 1024


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    return convert


def add_host(commands: Any) -> None:
    """Add ``host`` to the ``zerocopy`` subparsers ``commands``."""
    from .._cli import _address, _measurement, _Parents, _root_certificate

    host = commands.add_parser(
        "host", parents=[_Parents.json], help="run the parent-side agent: start the enclave, provision it, keep it up",
        description="Start the vsock-proxy (KMS only) and the enclave (nitro-cli run-enclave), provision the sealed bundles with the instance role's "
        "credentials (IMDSv2), and keep checking the enclave (listed, attested, keys loaded): after a crash, restart and provision again with backoff. "
        "Logs one line per event on stdout (--json: one JSON object per line). SIGTERM terminates the enclave and the proxy.",
    )  # fmt: skip
    host.add_argument("bundles", nargs="+", metavar="BUNDLE", help="sealed bundle files, or directories of *.json bundles")
    host.add_argument("--eif", required=True, metavar="FILE", help="the enclave image (zerocopy eif build)")
    host.add_argument("--pcr0", metavar="HEX", type=_measurement, help="PCR0 the enclave must attest (default: computed from --eif)")
    host.add_argument("--root", action="append", metavar="PEM", type=_root_certificate, help="trusted attestation root (repeat; default: the pinned AWS Nitro root)")
    host.add_argument("--region", help="AWS region of KMS (default: the instance's, from IMDS)")
    host.add_argument("--cpu-count", type=_positive(int), help=f"enclave vCPUs (default: the EIF's, else {DEFAULT_CPUS})")
    host.add_argument("--memory", type=_positive(int), metavar="MIB", help=f"enclave memory in MiB (default: the EIF's, else {DEFAULT_MEMORY_MIB})")
    host.add_argument("--enclave-cid", type=_positive(int), default=DEFAULT_CID, metavar="CID", help="the enclave's vsock CID (default: %(default)s)")
    host.add_argument("--enclave", metavar="ADDR", type=_address, help=f"where the enclave listens (default: vsock://CID:{ENCLAVE_PORT})")
    host.add_argument("--enclave-name", default="zerocopy", metavar="NAME", help="nitro-cli enclave name (default: %(default)s)")
    tools = host.add_argument_group("external tools (defaults: the real ones on a Nitro instance)")
    tools.add_argument("--nitro-cli", default="nitro-cli", metavar="CMD", help="nitro-cli command (default: %(default)s)")
    tools.add_argument("--vsock-proxy", default="vsock-proxy", metavar="CMD", help="vsock-proxy command (default: %(default)s)")
    tools.add_argument("--proxy-port", type=_positive(int), default=DEFAULT_PROXY_PORT, metavar="PORT", help="vsock port of the proxy, the enclave's --kms-proxy (default: %(default)s)")
    tools.add_argument("--proxy-config", default=DEFAULT_CONFIG_PATH, metavar="FILE", help="allowlist file to write (default: %(default)s)")
    tools.add_argument("--imds", default=DEFAULT_IMDS_URL, metavar="URL", help="instance metadata service (default: %(default)s)")
    tools.add_argument("--state-dir", default="/run/zerocopy", metavar="DIR", help="for the proxy's log (default: %(default)s)")
    timing = host.add_argument_group("timing")
    timing.add_argument("--check-interval", type=_positive(float), default=5.0, metavar="S", help="seconds between health checks (default: %(default)s)")
    timing.add_argument("--backoff", type=_positive(float), default=1.0, metavar="S", help="first wait before a restart or a provisioning retry, doubled each time (default: %(default)s)")
    timing.add_argument("--max-backoff", type=_positive(float), default=60.0, metavar="S", help="longest wait (default: %(default)s)")
    timing.add_argument("--max-restarts", type=_positive(int), default=10, metavar="N", help="failed restarts in a row before giving up (default: %(default)s)")
    timing.add_argument("--provision-attempts", type=_positive(int), default=3, metavar="N", help="provisioning tries before giving up (default: %(default)s)")
    host.set_defaults(handler=cmd_host)


def _image_defaults(args: argparse.Namespace) -> tuple[bytes, int, int]:
    """PCR0, vCPUs and MiB: the flags, else what the EIF says, else the defaults."""
    from ..eif import read_eif

    try:
        image = read_eif(args.eif)
    except OSError as exc:
        raise HostAgentError(f"cannot read the enclave image {args.eif}: {exc.strerror or exc}") from None
    except EifError as exc:
        raise HostAgentError(f"{args.eif}: {exc}") from None
    cpus = args.cpu_count or image.default_cpus or DEFAULT_CPUS
    memory = args.memory or (image.default_memory >> 20) or DEFAULT_MEMORY_MIB  # the header gives bytes
    return args.pcr0 or image.pcrs[0], cpus, memory


def host_config(args: argparse.Namespace) -> HostConfig:
    pcr0, cpus, memory = _image_defaults(args)
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    return HostConfig(
        eif_path=Path(args.eif), bundles=tuple(Path(path) for path in args.bundles), pcr0=pcr0,
        enclave_address=str(args.enclave or f"vsock://{args.enclave_cid}:{ENCLAVE_PORT}"), proxy_config=Path(args.proxy_config),
        state_dir=state_dir, roots=tuple(args.root) if args.root else None, region=args.region, cpu_count=cpus, memory_mib=memory,
        cid=args.enclave_cid, name=args.enclave_name, proxy_port=args.proxy_port, check_interval=args.check_interval,
        backoff=args.backoff, max_backoff=args.max_backoff, max_restarts=args.max_restarts, provision_attempts=args.provision_attempts,
    )  # fmt: skip


def cmd_host(args: argparse.Namespace) -> int:
    config = host_config(args)
    log = AgentLog(as_json=args.json)
    agent = HostAgent(config, nitro_cli=NitroCli(args.nitro_cli), vsock_proxy=VsockProxyProcess(args.vsock_proxy), metadata=InstanceMetadata(args.imds), log=log)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    try:
        agent.run(stop)
    except HostAgentError as exc:
        log.event("failed", str(exc))
        raise
    return 0
