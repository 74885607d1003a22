"""``zerocopy eif build``: the writer path (no Docker) everywhere, the Docker path where it can run,
and one clear line where the tools it needs are missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from test_eif import SIGNER, spec_measurements

from zerocopy._cli import main
from zerocopy._eif_cli import _missing_tools, measurements_path
from zerocopy.eif import read_eif

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Path]:
    made = {"kernel": tmp_path / "bzImage", "init": tmp_path / "init.cpio", "app": tmp_path / "app.cpio", "custom": tmp_path / "custom.json"}
    made["kernel"].write_bytes(b"\x7fkernel" * 300)
    made["init"].write_bytes(b"bootstrap ramdisk" * 20)
    made["app"].write_bytes(b"application ramdisk" * 20)
    made["custom"].write_text(json.dumps({"team": "desk-a"}))
    return made


def _build(parts: dict[str, Path], output: Path, *extra: str) -> int:
    return main([
        "eif", "build", "--kernel", str(parts["kernel"]), "--ramdisk", str(parts["init"]), "--ramdisk", str(parts["app"]),
        "--cmdline", "console=ttyS0", "--metadata", str(parts["custom"]), "-o", str(output), *extra,
    ])  # fmt: skip


def test_the_writer_path_saves_the_measurements_nitro_cli_would_print(parts, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    output = tmp_path / "zerocopy.eif"
    assert _build(parts, output) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "zerocopy.measurements.json").read_text())
    spec = spec_measurements(output.read_bytes())
    assert printed == saved == {"Measurements": {"HashAlgorithm": "Sha384 { ... }", **{f"PCR{i}": value.hex() for i, value in spec["pcrs"].items()}}}
    image = read_eif(output)
    assert image.metadata["CustomMetadata"] == {"team": "desk-a"} and image.metadata["BuildMetadata"]["BuildTime"] == "2026-01-01T00:00:00+00:00"
    assert (image.default_memory, image.default_cpus) == (1024 << 20, 2)
    # the same inputs and SOURCE_DATE_EPOCH: the same bytes
    again = tmp_path / "again.eif"
    assert _build(parts, again, "--measurements", str(tmp_path / "again.json")) == 0
    assert again.read_bytes() == output.read_bytes() and measurements_path(again) == tmp_path / "again.measurements.json"


def test_the_writer_path_signs(parts, tmp_path, capsys):
    key, pem = SIGNER
    (tmp_path / "cert.pem").write_bytes(pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    output = tmp_path / "signed.eif"
    assert _build(parts, output, "--signing-certificate", str(tmp_path / "cert.pem"), "--private-key", str(tmp_path / "key.pem")) == 0
    measurements = json.loads(capsys.readouterr().out)["Measurements"]
    assert measurements["PCR8"] == spec_measurements(output.read_bytes())["pcrs"][8].hex() and read_eif(output).signature_ok


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--ramdisk", "r"], "--ramdisk go with --kernel"),
        (["--kernel", "k"], "--kernel needs at least one --ramdisk"),
        (["--kernel", "k", "--ramdisk", "r", "--seal-key", "arn"], "--seal-key configure the Docker image"),
        (["--kernel", "k", "--ramdisk", "r", "--private-key", "p"], "go together"),
    ],
)
def test_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["eif", "build", *argv])
    assert exit.value.code == 2 and words in capsys.readouterr().err


def _run_build(path: str, tmp_path: Path) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PATH=path, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "zerocopy._cli", "eif", "build", "-o", str(tmp_path / "out.eif")]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_missing_docker_and_nitro_cli_is_one_line_and_a_failure(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _run_build(str(empty), tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("zerocopy: error: eif build needs Docker") and "docker: sudo dnf install -y docker" in line
    assert "nitro-cli: sudo dnf install -y aws-nitro-enclaves-cli" in line and "--kernel K --ramdisk R" in line
    assert not (tmp_path / "out.eif").exists() and not (tmp_path / "out.measurements.json").exists()


def test_a_docker_without_buildx_or_daemon_is_named(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, script in (("docker", "#!/bin/sh\nexit 1\n"), ("nitro-cli", "#!/bin/sh\nexit 0\n")):
        (tools / name).write_text(script)
        (tools / name).chmod(0o755)
    result = _run_build(str(tools), tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "the docker buildx plugin" in line and "a running Docker daemon: sudo systemctl start docker" in line
    assert "docker: sudo dnf" not in line and "aws-nitro-enclaves-cli" not in line


def test_two_builds_of_this_checkout_give_the_same_pcrs(tmp_path):
    missing = _missing_tools()
    if missing:
        pytest.skip(f"needs Docker with buildx and a daemon, and nitro-cli; this machine lacks: {', '.join(missing)}")
    outputs = []
    for name in ("first", "second"):
        output = tmp_path / f"{name}.eif"
        assert main(["eif", "build", "--tag", f"zerocopy-enclave-test-{name}", "-o", str(output)]) == 0
        outputs.append(json.loads(measurements_path(output).read_text())["Measurements"])
    assert outputs[0] == outputs[1]


def test_the_docker_context_holds_what_the_dockerfile_copies(tmp_path):
    """What the Docker path hands to `docker buildx build`, short of running it: every COPY source of
    enclave/Dockerfile, the wheel, and the configuration the flags ask for, read by the enclave's loader."""
    from enclave.protocol.config import load_config
    from zerocopy._cli import build_parser
    from zerocopy._eif_cli import _enclave_config, _stage

    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    args = build_parser().parse_args(["eif", "build", "--region", "eu-west-1", "--seal-key", key, "--port", "7000", "--busy-poll-us", "50"])
    _stage(tmp_path, _enclave_config(args), 1767225600)
    copies = [line.split()[1] for line in (tmp_path / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    assert copies == ["requirements.lock", "wheel/", "enclave.toml"]
    assert all((tmp_path / source).exists() for source in copies) and len(list((tmp_path / "wheel").glob("zerocopy-*.whl"))) == 1
    assert (tmp_path / "requirements.lock").read_bytes() == (ROOT / "enclave" / "requirements.lock").read_bytes()
    settings = load_config((tmp_path / "enclave.toml").read_text())
    assert settings == {"region": "eu-west-1", "seal_key": [key], "busy_poll_us": 50, "loopback_up": True, "listen": "vsock://4294967295:7000"}
