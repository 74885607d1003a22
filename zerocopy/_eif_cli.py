"""``zerocopy eif describe`` and ``zerocopy eif build``: read an enclave image, or make one.

``eif build`` has two ways. With ``--kernel``/``--ramdisk`` it writes the EIF itself
(:func:`zerocopy.eif.write_eif`), no Docker. Otherwise it does what a parent instance does: stage a
build context (the wheel built from this checkout, ``enclave/requirements.lock``, the
``enclave/Dockerfile`` and the operator's measured configuration), ``docker buildx build`` it with
``SOURCE_DATE_EPOCH`` and rewritten timestamps, and ``nitro-cli build-enclave`` the image. Either way
the measurements are printed (stdout, JSON as ``nitro-cli build-enclave`` prints them) and saved
next to the EIF as ``<name>.measurements.json``, the same JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .eif import EifImage, identity_metadata, parse_eif, read_eif, write_eif
from .errors import EifError

__all__ = ["add_eif_commands", "build_wheel", "measurements_path", "REPOSITORY"]

REPOSITORY = Path(__file__).resolve().parent.parent
IMAGE_TAG = "zerocopy-enclave"
# One line each: what is missing and how to get it.
_HOW_TO_GET = {
    "docker": "docker: sudo dnf install -y docker",
    "buildx": "the docker buildx plugin (for rewrite-timestamp): https://github.com/docker/buildx#installing",
    "daemon": "a running Docker daemon: sudo systemctl start docker",
    "nitro-cli": "nitro-cli: sudo dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel",
}


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def measurements_path(output: str | Path) -> Path:
    """Where the measurements of the EIF ``output`` are saved: ``zerocopy.eif`` -> ``zerocopy.measurements.json``."""
    return Path(output).with_suffix(".measurements.json")


def _save_measurements(image: EifImage, output: Path, target: str | None) -> None:
    document = json.dumps({"Measurements": image.measurements()}, indent=2)
    path = Path(target) if target else measurements_path(output)
    path.write_text(document + "\n")
    print(document)
    _say(f"{output}: PCR0 {image.pcrs[0].hex()}; measurements -> {path}")


# -- describe --------------------------------------------------------------------------------------


def cmd_eif_describe(args: argparse.Namespace) -> int:
    image = read_eif(args.file)
    info = image.describe()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_description(info)
    if not image.crc_ok:
        _say(f"{args.file}: the CRC-32 does not match: the file is damaged or was edited")
        return 1
    if image.signature_ok is False:
        _say(f"{args.file}: the signature section does not sign this image's PCR0 with its certificate")
        return 1
    return 0


def _print_description(info: dict) -> None:
    print(f"EifVersion     {info['EifVersion']}")
    for name, value in info["Measurements"].items():
        print(f"{name:<14} {value}")
    print(f"IsSigned       {info['IsSigned']}")
    print(f"CheckCRC       {info['CheckCRC']}")
    if "SignatureCheck" in info:
        print(f"SignatureCheck {info['SignatureCheck']}")
    for name in ("ImageName", "ImageVersion"):
        if name in info:
            print(f"{name:<14} {info[name]}")
    if "Metadata" in info:
        print(f"Metadata       {json.dumps(info['Metadata'], sort_keys=True)}")
    for section in info["Sections"]:
        print(f"  {section['Type']:<9} {section['Size']:>12} bytes at {section['Offset']}")


# -- build with the writer -------------------------------------------------------------------------


def _source_date_epoch() -> int:
    """``SOURCE_DATE_EPOCH``, else the checkout's last commit time, else now."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is not None:
        if not value.isdigit():
            raise ValueError(f"SOURCE_DATE_EPOCH={value!r} must be seconds since 1970")
        return int(value)
    try:
        found = subprocess.run(["git", "-C", str(REPOSITORY), "log", "-1", "--format=%ct"], capture_output=True, text=True, timeout=30, check=True)
        return int(found.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return int(time.time())


def _custom_metadata(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        value = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise ValueError(f"--metadata {path}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"--metadata {path}: must hold a JSON object")
    return value


def _signing(args: argparse.Namespace) -> dict:
    if not args.signing_certificate:
        return {}
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(Path(args.private_key).read_bytes(), password=None)
    return {"signing_key": key, "signing_certificate": Path(args.signing_certificate).read_bytes()}


def _build_with_writer(args: argparse.Namespace) -> int:
    from . import __version__

    build_time = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(_source_date_epoch()))
    metadata = identity_metadata(
        args.name, args.image_version or __version__, build_time=build_time, build_tool="zerocopy eif build",
        build_tool_version=__version__, custom=_custom_metadata(args.metadata),
    )  # fmt: skip
    data = write_eif(
        Path(args.kernel).read_bytes(), args.cmdline, [Path(path).read_bytes() for path in args.ramdisk], metadata=metadata,
        default_memory=args.memory << 20, default_cpus=args.cpus, arm64=args.arm64, **_signing(args),
    )  # fmt: skip
    output = Path(args.output)
    output.write_bytes(data)
    _save_measurements(parse_eif(data), output, args.measurements)
    return 0


# -- build with Docker and nitro-cli ---------------------------------------------------------------


def _succeeds(command: list[str]) -> bool:
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _missing_tools() -> list[str]:
    """What the Docker build needs and this machine lacks, of :data:`_HOW_TO_GET`."""
    missing = []
    docker = shutil.which("docker")
    if docker is None:
        missing.append("docker")
    else:
        missing += [] if _succeeds([docker, "buildx", "version"]) else ["buildx"]
        missing += [] if _succeeds([docker, "info"]) else ["daemon"]
    return missing + (["nitro-cli"] if shutil.which("nitro-cli") is None else [])


def _enclave_config(args: argparse.Namespace) -> str:
    """The measured launch configuration: the operator's ``--config`` file or one from the flags."""
    from enclave.protocol.config import load_config, render_config

    if args.config:
        text = Path(args.config).read_text()
        load_config(text, source=args.config)
        return text
    settings = {"region": args.region, "seal_key": args.seal_key, "busy_poll_us": args.busy_poll_us, "loopback_up": True}
    return render_config(settings, port=args.port)


def build_wheel(directory: Path, epoch: int) -> Path:
    """The zerocopy wheel of this checkout's sources, byte for byte the same for the same sources
    and ``epoch``: built from a copy (no stale build/ tree), by the hash-pinned backend of
    enclave/build-constraints.txt, with ``SOURCE_DATE_EPOCH`` as every file's time."""
    if not (REPOSITORY / "pyproject.toml").is_file():
        raise ValueError(f"eif build needs a checkout of the repository (no pyproject.toml in {REPOSITORY})")
    with tempfile.TemporaryDirectory(prefix="zerocopy-wheel-") as scratch:
        source = _copy_sources(Path(scratch) / "src")
        backend = _install_pinned_backend(Path(scratch) / "backend")
        # Without build isolation pip would use whatever setuptools this environment has; the
        # pinned backend goes first on the path instead.
        environment = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), PYTHONPATH=str(backend))
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(directory), str(source)]
        if subprocess.run(command, env=environment, stdout=sys.stderr, timeout=600).returncode != 0:
            raise ValueError("building the zerocopy wheel failed (pip wheel, above)")
    (wheel,) = directory.glob("zerocopy-*.whl")
    return wheel


def _copy_sources(source: Path) -> Path:
    import tomllib

    packages = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPOSITORY / name, source / name)
    for top in sorted({package.split(".")[0] for package in packages}):
        shutil.copytree(REPOSITORY / top, source / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return source


def _install_pinned_backend(target: Path) -> Path:
    """setuptools and wheel, exactly the bytes whose hashes build-constraints.txt pins."""
    constraints = REPOSITORY / "enclave" / "build-constraints.txt"
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes", "--only-binary=:all:",
        "--target", str(target), "-r", str(constraints),
    ]  # fmt: skip
    if subprocess.run(command, stdout=sys.stderr, timeout=600).returncode != 0:
        raise ValueError(f"installing the pinned build backend failed (pip install -r {constraints}, above)")
    return target


def _stage(context: Path, config: str, epoch: int) -> None:
    """The build context: Dockerfile, lock, configuration and the wheel of this checkout."""
    for name in ("Dockerfile", "requirements.lock"):
        shutil.copyfile(REPOSITORY / "enclave" / name, context / name)
    (context / "enclave.toml").write_text(config)
    build_wheel(context / "wheel", epoch)


def _run_tool(command: list[str], **options: Any) -> subprocess.CompletedProcess:
    _say("+ " + " ".join(command))
    try:
        return subprocess.run(command, check=True, **options)
    except subprocess.CalledProcessError as exc:
        raise ValueError(f"{command[0]} {command[1]} failed with exit status {exc.returncode}") from None


def _build_with_docker(args: argparse.Namespace) -> int:
    missing = _missing_tools()
    if missing:
        needed = "; ".join(_HOW_TO_GET[tool] for tool in missing)
        _say(f"zerocopy: error: eif build needs Docker (with buildx and its daemon) and nitro-cli; missing {needed} (or, without Docker: zerocopy eif build --kernel K --ramdisk R -o OUT.eif)")
        return 1
    epoch = _source_date_epoch()
    config = _enclave_config(args)
    output = Path(args.output)
    with tempfile.TemporaryDirectory(prefix="zerocopy-eif-") as staging:
        context = Path(staging)
        _stage(context, config, epoch)
        _run_tool([
            "docker", "buildx", "build", "--build-arg", f"SOURCE_DATE_EPOCH={epoch}",
            "--output", f"type=docker,name={args.tag},rewrite-timestamp=true", "-f", str(context / "Dockerfile"), str(context),
        ], stdout=sys.stderr)  # fmt: skip
    built = _run_tool(["nitro-cli", "build-enclave", "--docker-uri", args.tag, "--output-file", str(output)], stdout=subprocess.PIPE, text=True)
    image = read_eif(output)
    reported = json.loads(built.stdout).get("Measurements", {})
    if {key: value for key, value in reported.items() if key.startswith("PCR")} != {key: value for key, value in image.measurements().items() if key.startswith("PCR")}:
        raise EifError(f"{output}: nitro-cli reports other PCRs than the file has ({reported}); not saving them")
    _save_measurements(image, output, args.measurements)
    return 0


def cmd_eif_build(args: argparse.Namespace) -> int:
    return _build_with_writer(args) if args.kernel else _build_with_docker(args)


def _build_usage(args: argparse.Namespace) -> str | None:
    writer_only = [flag for dest, flag in (("ramdisk", "--ramdisk"), ("metadata", "--metadata"), ("signing_certificate", "--signing-certificate")) if getattr(args, dest)]
    if not args.kernel:
        return f"{' and '.join(writer_only)} go with --kernel (writing an EIF without Docker)" if writer_only else None
    if not args.ramdisk:
        return "--kernel needs at least one --ramdisk"
    docker_only = [flag for dest, flag in (("config", "--config"), ("seal_key", "--seal-key")) if getattr(args, dest)]
    if docker_only:
        return f"{' and '.join(docker_only)} configure the Docker image; with --kernel the ramdisks are given as they are"
    if bool(args.signing_certificate) != bool(args.private_key):
        return "--signing-certificate and --private-key go together"
    return None


# -- the parser ------------------------------------------------------------------------------------


def _add_build(actions: Any, check_usage: Any) -> None:
    build = actions.add_parser(
        "build", help="build the enclave image (Docker + nitro-cli), or write an EIF from a kernel and ramdisks",
        description="Build the EIF and save its measurements next to it (<name>.measurements.json, as nitro-cli build-enclave prints them). "
        "Without --kernel: the Docker image of this checkout (wheel + hash-pinned lock + the measured configuration), then nitro-cli build-enclave; needs docker and nitro-cli. "
        "With --kernel and --ramdisk: write the EIF directly, no Docker.",
    )  # fmt: skip
    build.add_argument("-o", "--output", default="zerocopy.eif", metavar="FILE", help="the EIF to write (default: %(default)s)")
    build.add_argument("--measurements", metavar="FILE", help="where to save the measurements (default: next to the EIF, .measurements.json)")
    measured = build.add_argument_group("the measured configuration (Docker build)")
    measured.add_argument("--config", metavar="FILE", help="the enclave's configuration file (TOML, as enclave/enclave.toml); instead of the flags below")
    measured.add_argument("--region", default="us-east-1", help="AWS region of KMS (default: %(default)s)")
    measured.add_argument("--seal-key", action="append", default=[], metavar="ARN", help="KMS key ARN that GENERATE may seal to (repeat)")
    measured.add_argument("--busy-poll-us", type=int, default=100, metavar="US", help="spin this long for the next request (default: %(default)s)")
    measured.add_argument("--port", type=int, default=5000, help="vsock port the enclave listens on (default: %(default)s)")
    measured.add_argument("--tag", default=IMAGE_TAG, help="Docker image name (default: %(default)s)")
    writer = build.add_argument_group("writing an EIF without Docker")
    writer.add_argument("--kernel", metavar="FILE", help="the kernel (bzImage or Image)")
    writer.add_argument("--ramdisk", action="append", default=[], metavar="FILE", help="a ramdisk, in boot order (repeat; the first is measured into PCR1, the others into PCR2)")
    writer.add_argument("--cmdline", default="", help="the kernel command line")
    writer.add_argument("--metadata", metavar="FILE", help="JSON object to store as CustomMetadata")
    writer.add_argument("--name", default=IMAGE_TAG, help="ImageName in the metadata (default: %(default)s)")
    writer.add_argument("--image-version", metavar="VERSION", help="ImageVersion in the metadata (default: the zerocopy version)")
    writer.add_argument("--memory", type=int, default=1024, metavar="MIB", help="default enclave memory in the header (default: %(default)s)")
    writer.add_argument("--cpus", type=int, default=2, help="default enclave CPUs in the header (default: %(default)s)")
    writer.add_argument("--arm64", action="store_true", help="mark the image as aarch64")
    writer.add_argument("--signing-certificate", metavar="PEM", help="sign: the certificate (its hash is PCR8)")
    writer.add_argument("--private-key", metavar="PEM", help="sign: the certificate's EC private key")
    build.set_defaults(handler=cmd_eif_build)
    check_usage(build, _build_usage)


def add_eif_commands(commands: Any, *, json_parent: argparse.ArgumentParser, check_usage: Any) -> None:
    eif = commands.add_parser("eif", help="describe or build an enclave image file (EIF)", description="Enclave Image Files: what nitro-cli describe-eif and build-enclave do, in Python.")
    actions = eif.add_subparsers(dest="eif_command", metavar="ACTION", required=True)
    describe = actions.add_parser(
        "describe", parents=[json_parent], help="print an EIF's header, sections, CRC check, PCRs and metadata",
        description="Parse an EIF and print what nitro-cli describe-eif prints (EifVersion, Measurements, IsSigned, CheckCRC, SignatureCheck, ImageName, ImageVersion, Metadata; --json: the same field names) and its sections. Exit 1 when the CRC or the signature does not check.",
    )  # fmt: skip
    describe.add_argument("file", metavar="FILE")
    describe.set_defaults(handler=cmd_eif_describe)
    _add_build(actions, check_usage)
