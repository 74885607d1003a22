"""The pieces of ``zerocopy host`` one by one (issue 13): the IMDSv2 client against the emulated
IMDS (tokens required, rotation), the vsock-proxy refusing a target outside its allowlist, nitro-cli
answers and IMDS documents that are garbage (typed errors, never a crash), and the systemd unit."""

from __future__ import annotations

import configparser
import os
import subprocess
import json
import shlex
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.account import HostRole
from emulator.imds import InstanceMetadataServer
from emulator_helpers import REGION, moto_process
from zerocopy.errors import HostToolError
from zerocopy.host.tools import EnclaveInfo, InstanceMetadata, VsockProxyProcess, parse_credentials
from zerocopy.vsock_proxy import allowlist_yaml

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "zerocopy-host.service"


@pytest.fixture(scope="module")
def imds(tmp_path_factory):
    with moto_process(tmp_path_factory.mktemp("moto")) as endpoint:
        role = HostRole(endpoint, region=REGION, session_name="i-0123456789abcdef0").create()
        try:
            with InstanceMetadataServer(endpoint, region=REGION, instance_id="i-0123456789abcdef0") as server:
                yield server
        finally:
            role.close()


def test_imds_answers_only_with_a_session_token(imds):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{imds.url}/latest/meta-data/placement/region", timeout=5)
    assert refused.value.code == 401
    refused.value.close()
    bad_ttl = urllib.request.Request(f"{imds.url}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "21601"})
    with pytest.raises(urllib.error.HTTPError) as too_long:
        urllib.request.urlopen(bad_ttl, timeout=5)
    assert too_long.value.code == 400
    too_long.value.close()
    assert InstanceMetadata(imds.url).region() == REGION


def test_imds_credentials_are_the_roles_and_rotate(imds):
    metadata = InstanceMetadata(imds.url)
    first, expires = metadata.credentials()
    assert set(first) == {"access_key_id", "secret_access_key", "session_token"} and expires.endswith("Z")
    assert metadata.credentials()[0] == first  # the same session until it nears expiry
    imds.rotate()
    second, _ = metadata.credentials()
    assert second["access_key_id"] != first["access_key_id"]
    assert [served[0] for served in imds.served[-2:]] == [first["access_key_id"], second["access_key_id"]]


def test_an_unreachable_imds_is_a_typed_error_naming_it():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(HostToolError, match="instance metadata at .* unreachable"):
        InstanceMetadata(url).credentials()


def test_the_vsock_proxy_refuses_a_target_outside_its_allowlist_and_the_agent_says_so(tmp_path):
    config = tmp_path / "vsock-proxy.yaml"
    config.write_text(allowlist_yaml([("kms.eu-west-1.amazonaws.com", 443)]))
    proxy = VsockProxyProcess([sys.executable, "-m", "emulator.vsock_proxy", "--vsock-dir", str(tmp_path)])
    with pytest.raises(HostToolError, match=r"vsock-proxy exited at start \(status 1\): .*not in .*allowlist|not allowed"):
        proxy.start(vsock_port=8000, host="kms.us-east-1.amazonaws.com", port=443, config=config, log_path=tmp_path / "proxy.log", settle=10)
    assert not proxy.running


def test_a_missing_vsock_proxy_names_the_tool_and_how_to_get_it():
    with pytest.raises(HostToolError, match="vsock-proxy: no-such-vsock-proxy not found; it comes with aws-nitro-enclaves-cli"):
        VsockProxyProcess("no-such-vsock-proxy")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6), max_leaves=20)
enclave_like = st.fixed_dictionaries({"EnclaveID": json_values, "EnclaveCID": json_values}, optional={"ProcessID": json_values, "NumberOfCPUs": json_values, "MemoryMiB": json_values, "State": json_values})


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, enclave_like))
def test_any_nitro_cli_answer_is_an_enclave_or_a_typed_error(raw):
    try:
        info = EnclaveInfo.from_json(raw)
    except HostToolError:
        return
    assert isinstance(info.cid, int) and isinstance(info.enclave_id, str)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps), st.fixed_dictionaries({"AccessKeyId": json_values, "SecretAccessKey": json_values, "Token": json_values}).map(json.dumps)))
def test_any_imds_credentials_document_is_credentials_or_a_typed_error_without_its_content(text):
    try:
        credentials, _ = parse_credentials(text, "role")
    except HostToolError as exc:
        assert text not in str(exc) or len(text) < 4  # never echoes the document (it holds secrets)
        return
    assert all(isinstance(value, str) and value for value in credentials.values())


# -- the systemd unit -------------------------------------------------------------------------------
def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(UNIT.read_text())
    return unit


def test_the_systemd_unit_parses_and_runs_the_real_command():
    from zerocopy._cli import build_parser

    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    words = shlex.split(unit["Service"]["ExecStart"])
    assert Path(words[0]).name == "zerocopy" and words[1] == "host"
    args = build_parser().parse_args(words[1:])
    assert args.handler.__name__ == "cmd_host" and args.json
    runtime = "/run/" + unit["Service"]["RuntimeDirectory"]
    assert Path(args.proxy_config).parent == Path(runtime) and args.state_dir == runtime  # files the agent writes are in its own runtime dir
    assert runtime in unit["Service"]["ReadWritePaths"].split()
    assert unit["Service"]["Restart"] == "on-failure" and "multi-user.target" in unit["Install"]["WantedBy"]
    assert "nitro-enclaves-allocator.service" in unit["Unit"]["Requires"]


def test_the_deploy_guides_host_role_may_do_what_the_emulators_host_role_does_and_nothing_else():
    """docs/deploy.md's role policy grants exactly SECURITY.md's host actions (the ones the emulator's
    host role has, with which every provisioning test runs), and is assumable by EC2 only."""
    from emulator.account import HOST_ROLE_ACTIONS

    policy = json.loads((ROOT / "deploy" / "iam" / "host-role-policy.json").read_text())
    assert [statement["Effect"] for statement in policy["Statement"]] == ["Allow"]
    assert sorted(policy["Statement"][0]["Action"]) == sorted(HOST_ROLE_ACTIONS)
    trust = json.loads((ROOT / "deploy" / "iam" / "ec2-trust-policy.json").read_text())
    assert [statement["Principal"] for statement in trust["Statement"]] == [{"Service": "ec2.amazonaws.com"}]


def test_the_agent_log_is_one_plain_or_json_line_per_event():
    import io

    from zerocopy.host.log import AgentLog

    plain, structured = io.StringIO(), io.StringIO()
    AgentLog(stream=plain).event("enclave-started", "enclave i-0-enc1 running", cid=16)
    AgentLog(as_json=True, stream=structured).event("enclave-started", "enclave i-0-enc1 running", cid=16)
    (line,) = plain.getvalue().splitlines()
    assert line.endswith("Z enclave-started: enclave i-0-enc1 running cid=16")
    (record,) = map(json.loads, structured.getvalue().splitlines())
    assert record["event"] == "enclave-started" and record["cid"] == 16 and record["time"].endswith("Z")


def test_the_emulated_nitro_device_answers_garbage_with_an_error_line(tmp_path):
    """The emulated nitro-cli's device socket: a malformed request is refused in one JSON line, and
    the device keeps serving (no emulator is needed before an enclave is asked for)."""
    from emulator.nitro import NitroDevice

    device = NitroDevice(emulator=None, run_dir=tmp_path).start()
    try:
        for request in (b"not json\n", b"[]\n", b'{"command": "run-enclave", "options": []}\n', b'{"command": "nope"}\n', b"\xff" * 70000):
            with socket.socket(socket.AF_UNIX) as connection:
                connection.settimeout(10)
                connection.connect(device.path)
                connection.sendall(request)
                answer = json.loads(connection.makefile("rb").readline())
            assert answer["ok"] is False and answer["error"].startswith("nitro-cli: "), answer
        done = subprocess.run([*device.command(), "describe-enclaves"], capture_output=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert done.returncode == 0 and json.loads(done.stdout) == []
        missing = subprocess.run([*device.command(), "terminate-enclave", "--enclave-id", "i-0-enc0"], capture_output=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert missing.returncode == 1 and missing.stderr.decode().count("\n") == 1 and b"no enclave with id i-0-enc0" in missing.stderr
    finally:
        device.stop()
