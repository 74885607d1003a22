"""``python -m enclave``: start the signer.

Production defaults listen on vsock port 5000 for any CID, talk to ``/dev/nsm`` and reach KMS
through the parent's vsock-proxy on CID 3, port 8000. In the image the entrypoint is
``python -m enclave --config /etc/zerocopy/enclave.toml``: the operator's settings are a file in the
EIF, so in its PCRs (enclave/protocol/config.py). Every option is part of the launch command
line, which the emulator measures into PCR0. That is why the
KMS keys the enclave seals generated keys to are an option (``--seal-key``) and never a field of a
request: the host cannot choose them, and changing them changes PCR0.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import socket
import struct
import sys
import threading

from . import __version__
from .clock import parse_clock
from .kms import AttestedKms, KmsSettings
from .nsm import Nsm, open_device
from .protocol.address import AddressError, parse_address
from .protocol.config import CONFIG_PATH, load_config
from .server import Server, listen
from .service import EnclaveService

VMADDR_CID_ANY = 0xFFFFFFFF


#: The longest the enclave spins for a request before sleeping (10 ms: beyond it, sleep).
MAX_BUSY_POLL_US = 10_000


def _busy_poll_us(text: str) -> int:
    """``--busy-poll-us``: refused out of range (a usage error), never silently clamped."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of microseconds: {text!r}") from None
    if not 0 <= value <= MAX_BUSY_POLL_US:
        raise argparse.ArgumentTypeError(f"must be 0 (off) to {MAX_BUSY_POLL_US:,} microseconds, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m enclave", description="The ZeroCopy signer, inside a Nitro Enclave.")
    parser.add_argument("--listen", default=f"vsock://{VMADDR_CID_ANY}:5000", help="vsock://CID:PORT, unix:///path or tcp://127.0.0.1:PORT (default: %(default)s)")
    parser.add_argument("--nsm", default="/dev/nsm", help="the NSM device: a path, or fd://N for an inherited socket (default: %(default)s)")
    parser.add_argument("--region", default="us-east-1", help="AWS region of KMS; the forwarder only lets botocore reach kms.<region>.amazonaws.com (default: %(default)s)")
    parser.add_argument("--kms-proxy", default="vsock://3:8000", help="the parent's vsock-proxy towards KMS (default: %(default)s)")
    parser.add_argument("--kms-ca", default=None, help="CA bundle for KMS's TLS certificate (default: botocore's public CAs)")
    parser.add_argument("--seal-key", action="append", default=[], metavar="ARN", help="ARN of a KMS key that GENERATE may seal new keys to (repeat; the first is the default); the operator's key, pinned to this image's PCR0")
    parser.add_argument("--clock", default="system", help="system, fixed:<ms|ISO time> or offset:<seconds>; read only by policy freshness and receipts")
    parser.add_argument("--max-connections", type=int, default=64, help="connections served at once; when all are taken a newcomer evicts one the host can spare (never an attested session), and two more slots serve control messages only (the operator's way in)")
    parser.add_argument("--idle-timeout", type=float, default=600.0, metavar="S", help="close a connection that has sent nothing for this long (default: %(default)s)")
    parser.add_argument("--frame-timeout", type=float, default=10.0, metavar="S", help="close a connection that started a frame and has not finished it within this long (default: %(default)s)")
    parser.add_argument("--busy-poll-us", type=_busy_poll_us, default=0, metavar="US", help=f"spin this long (0 to {MAX_BUSY_POLL_US:,}) for the next request before sleeping; worth it where the enclave's vCPUs are its own, as on Nitro (the EIF runs 100) (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--loopback-up", action="store_true", help="bring the loopback interface up first: an enclave boots with it down, and the KMS forwarder listens on 127.0.0.1")
    parser.add_argument("--config", metavar="FILE", help=f"settings file (TOML; keys are these options' names with _), in the image {CONFIG_PATH}: its measured configuration; flags given as well win")
    parser.add_argument("--version", action="version", version=f"zerocopy-enclave {__version__}")
    return parser


_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags in the 24-byte union


def bring_up_loopback() -> None:
    """``ip link set lo up`` without iproute2 in the image (OSError if not permitted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _, flags = _IFREQ.unpack(fcntl.ioctl(sock, _SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0)))
        if not flags & _IFF_UP:
            fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The options; with ``--config``, the file's settings are the defaults the flags override."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        return args
    try:
        with open(args.config, "rb") as file:
            settings = load_config(file.read(), source=args.config)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    parser.set_defaults(**settings)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="enclave %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("enclave")
    try:
        if args.loopback_up:
            bring_up_loopback()
        address = parse_address(args.listen)
        settings = KmsSettings(region=args.region, proxy=parse_address(args.kms_proxy), ca_bundle=args.kms_ca, seal_keys=tuple(args.seal_key))
        clock = parse_clock(args.clock)
    except (AddressError, ValueError, OSError) as exc:
        print(f"enclave: {exc}", file=sys.stderr)
        return 2
    nsm = Nsm(open_device(args.nsm))
    description = nsm.describe_nsm()
    service = EnclaveService(nsm=nsm, kms=AttestedKms(settings, nsm), clock=clock)
    server = Server(
        listen(address), service.handle, max_connections=args.max_connections, busy_poll_us=args.busy_poll_us,
        idle_timeout=max(0.1, args.idle_timeout), frame_timeout=max(0.1, args.frame_timeout),
    )

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on %s (NSM module %s, KMS %s via %s, clock %s, seal keys %s)", address, description.get("module_id"), settings.host, settings.proxy, clock, ", ".join(settings.seal_keys) or "none")
    try:
        server.serve_forever()
    finally:
        service.kms.close()
        if address.scheme == "unix":
            try:
                os.unlink(address.path)
            except FileNotFoundError:
                pass
    log.info("stopped")
    return 0


def exit_now(status: int) -> None:
    """Exit without the interpreter's teardown: main() has closed everything that needs closing,
    and tearing down the modules and objects of an enclave that has provisioned (boto3's among
    them) took 0.2–0.5 s of a SIGTERM's stop. Logs are flushed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_now(main())
