"""The reproducible enclave image, as far as it can be checked without Docker: the Dockerfile's
pins, the lock file against the registry, and the measured configuration file read by the enclave's
own loader. (Two builds giving the same PCRs: tests/test_eif_build.py, where Docker exists.)"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from packaging.requirements import Requirement

from enclave.__main__ import bring_up_loopback, parse_arguments
from enclave.protocol.config import CONFIG_FIELDS, CONFIG_PATH, load_config, render_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "enclave" / "Dockerfile").read_text()
LOCK = ROOT / "enclave" / "requirements.lock"
ENCLAVE_DEPENDENCIES = ("cryptography", "cbor2", "asn1crypto", "boto3")  # DESIGN.md: what enclave/ may import


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "") for line in text.splitlines() if line.strip()]


def locked() -> dict[str, tuple[str, set[str]]]:
    """name -> (version, sha256 hashes) from the lock file."""
    entries = {}
    text = re.sub(r"\\\n", " ", "\n".join(line for line in LOCK.read_text().splitlines() if not line.startswith("#")))
    for line in filter(str.strip, text.splitlines()):
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        hashes = {option.removeprefix("--hash=sha256:") for option in options}
        assert version and all(re.fullmatch(r"[0-9a-f]{64}", value) for value in hashes) and len(hashes) == len(options) >= 1, line
        entries[name.lower()] = (version, hashes)
    return entries


def test_the_base_image_is_pinned_by_digest_and_nothing_unpinned_is_fetched():
    steps = instructions()
    bases = [arguments for instruction, arguments in steps if instruction == "FROM"]
    assert bases and all(re.fullmatch(r"\S+:\S+@sha256:[0-9a-f]{64}", base) for base in bases)
    runs = [arguments for instruction, arguments in steps if instruction == "RUN"]
    assert not re.search(r"\b(apt-get|apt|apk|dnf|yum|curl|wget|git)\b", " ".join(runs))
    installs = [found for run in runs for found in re.findall(r"pip install ([^&]*)", run)]
    assert len(installs) == 2
    assert all(flag in installs[0] for flag in ("--require-hashes", "--only-binary=:all:", "--no-deps", "-r /tmp/build/requirements.lock"))
    assert "--no-index" in installs[1] and "--no-deps" in installs[1] and "wheel/zerocopy-*.whl" in installs[1]
    assert ("ARG", "SOURCE_DATE_EPOCH") in steps and "PYTHONDONTWRITEBYTECODE=1" in dict(steps)["ENV"]


def test_the_entrypoint_runs_the_enclave_with_the_measured_configuration():
    steps = instructions()
    assert ("COPY", f"enclave.toml {CONFIG_PATH}") in steps
    assert steps[-1] == ("ENTRYPOINT", f'["python", "-B", "-m", "enclave", "--config", "{CONFIG_PATH}"]')
    assert not any(instruction == "CMD" for instruction, _ in steps)


def _closure(names: tuple[str, ...]) -> dict[str, str]:
    """name -> installed version of ``names`` and everything they require (no extras)."""
    found: dict[str, str] = {}
    pending = list(names)
    while pending:
        name = pending.pop().lower()
        if name in found:
            continue
        dist = distribution(name)
        found[name] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": "", "python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64"}):
                pending.append(requirement.name)
    return found


def test_the_lock_holds_exactly_the_enclave_dependencies_at_the_tested_versions():
    assert {name: version for name, (version, _) in locked().items()} == _closure(ENCLAVE_DEPENDENCIES)


def _download(arch: str, target: Path) -> subprocess.CompletedProcess:
    platforms = [arg for tag in ("manylinux_2_34", "manylinux_2_28", "manylinux2014", "manylinux_2_17") for arg in ("--platform", f"{tag}_{arch}")]
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes", "--python-version", "3.11",
        "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none", *platforms, "-r", str(LOCK), "-d", str(target),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_lock_hashes_are_those_of_the_registry_wheels(arch, tmp_path):
    result = _download(arch, tmp_path)
    if result.returncode != 0 and "HASHES" not in result.stderr and re.search(r"(?i)connection|network|resolve|timed out|no matching distribution", result.stderr):
        pytest.skip(f"the package registry is not reachable from here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-2000:]
    wheels = sorted(tmp_path.glob("*.whl"))
    assert len(wheels) == len(locked())
    for wheel in wheels:
        name = wheel.name.split("-")[0].replace("_", "-").lower()
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() in locked()[name][1], wheel.name


def test_the_shipped_configuration_parses_with_the_enclaves_loader():
    settings = load_config((ROOT / "enclave" / "enclave.toml").read_bytes(), source="enclave/enclave.toml")
    assert settings == {"region": "us-east-1", "kms_proxy": "vsock://3:8000", "seal_key": [], "busy_poll_us": 100, "loopback_up": True, "listen": "vsock://4294967295:5000"}


def test_the_enclave_reads_its_configuration_file_and_flags_win(tmp_path):
    path = tmp_path / "enclave.toml"
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    path.write_text(render_config({"region": "eu-west-1", "seal_key": [key], "busy_poll_us": 250, "idle_timeout": 30}, port=7000))
    args = parse_arguments(["--config", str(path)])
    assert (args.region, args.seal_key, args.busy_poll_us, args.idle_timeout, args.listen) == ("eu-west-1", [key], 250, 30.0, "vsock://4294967295:7000")
    assert parse_arguments(["--config", str(path), "--busy-poll-us", "0"]).busy_poll_us == 0


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("regoin = 'us-east-1'", "unknown setting 'regoin'"),
        ("busy_poll_us = '100'", "busy_poll_us must be int, not str"),
        ("loopback_up = 1", "loopback_up must be bool, not int"),
        ("seal_key = [1]", "seal_key must be a list of strings"),
        ("region = ", "is not TOML"),
    ],
)
def test_a_bad_configuration_stops_the_enclave_with_one_line(text, words, tmp_path):
    path = tmp_path / "enclave.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=words):
        load_config(text)
    result = subprocess.run([sys.executable, "-m", "enclave", "--config", str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 2 and words in result.stderr.splitlines()[-1]


_SETTING = {
    str: st.text(max_size=40), int: st.integers(-(2**63), 2**63 - 1), float: st.floats(allow_nan=False), bool: st.booleans(), list: st.lists(st.text(max_size=20), max_size=4),
}  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({}, optional={key: _SETTING[kind] for key, (kind, _) in CONFIG_FIELDS.items()}))
def test_render_and_load_round_trip(settings_written):
    assert load_config(render_config(settings_written)) == settings_written


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_garbage_configuration_is_a_value_error(data):
    try:
        load_config(data)
    except ValueError:
        pass


def test_bringing_up_loopback_leaves_an_up_interface_up():
    """Here lo is already up, so this reads its flags through the same ioctl and changes nothing."""
    bring_up_loopback()
    assert int(Path("/sys/class/net/lo/flags").read_text(), 16) & 1


def test_the_wheel_of_this_checkout_is_the_same_bytes_when_built_twice(tmp_path):
    """What the image installs: the same sources and SOURCE_DATE_EPOCH, the same wheel (needs the
    package registry for the pinned build backend, as the lock test does)."""
    from zerocopy._eif_cli import build_wheel

    left_behind = {path for path in (ROOT / "build", ROOT / "zerocopy.egg-info") if not path.exists()}
    first, second = (build_wheel(tmp_path / name, 1767225600) for name in ("first", "second"))  # pip fetches the pinned backend
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as wheel:
        assert wheel.read("enclave/__main__.py") == (ROOT / "enclave" / "__main__.py").read_bytes()
        assert {info.date_time for info in wheel.infolist()} == {(2026, 1, 1, 0, 0, 0)}
        generator = re.search(rb"^Generator: setuptools \((\S+)\)", wheel.read("zerocopy-0.1.0.dist-info/WHEEL"), re.MULTILINE)
    # built by the hash-pinned backend, not by whatever setuptools this environment has
    assert generator and f"setuptools=={generator.group(1).decode()}" in (ROOT / "enclave" / "build-constraints.txt").read_text()
    assert not any(path.exists() for path in left_behind)  # built from a copy: nothing left in the checkout


def test_the_build_backend_is_pinned_by_hash_and_a_wrong_hash_stops_the_build(tmp_path, monkeypatch):
    """The wheel's build backend is installed with --require-hashes: a constraints file whose hash
    does not match the registry's wheel (what a swapped setuptools would look like) fails the build
    with one line, and builds nothing."""
    from zerocopy import _eif_cli

    pins = (ROOT / "enclave" / "build-constraints.txt").read_text()
    assert re.findall(r"^(\w+)==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}$", pins, re.MULTILINE) == ["setuptools", "wheel"]
    fake_repository = tmp_path / "checkout"
    (fake_repository / "enclave").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        (fake_repository / name).write_bytes((ROOT / name).read_bytes())
    for top in ("enclave", "emulator", "zerocopy", "pytest_zerocopy"):
        (fake_repository / top).mkdir(exist_ok=True)
    wrong = re.sub(r"(setuptools==\S+ \\\n\s+--hash=sha256:)[0-9a-f]{64}", lambda match: match.group(1) + "0" * 64, pins)
    (fake_repository / "enclave" / "build-constraints.txt").write_text(wrong)
    monkeypatch.setattr(_eif_cli, "REPOSITORY", fake_repository)
    with pytest.raises(ValueError, match="pinned build backend failed"):
        _eif_cli.build_wheel(tmp_path / "out", 1767225600)
    assert not list((tmp_path / "out").glob("*.whl"))
