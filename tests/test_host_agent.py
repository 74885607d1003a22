"""``zerocopy host`` end to end on the emulator (issue 13): the real agent, as a process, drives an
emulated parent instance (emulator.parent: its nitro-cli, vsock-proxy and IMDSv2) beside an
Emulator whose moto, attesting KMS and PKI play AWS. It starts the enclave, provisions it with
the role's credentials, survives a SIGKILL of the enclave (restart, re-provision, with rotated
credentials), and stops cleanly; with KMS unreachable it retries a bounded number of times and
fails with one typed line; a missing tool is one line naming it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from enclave.protocol.bundle import SealedBundle
from emulator import ACCOUNT_ID, Emulator
from emulator.launcher import set_parent_death_signal
from emulator.parent import EmulatedParent
from zerocopy import Signer
from zerocopy.eif import write_eif
from zerocopy.host.tools import InstanceMetadata
from zerocopy.kms_policy import attested_key_policy
from zerocopy.sealing import seal

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("host-main", "host-spare")
SECRET = b"host-agent-test-secret-not-real"


@pytest.fixture(scope="module")
def aws():
    """AWS's side (moto, the attesting KMS, the attestation PKI); its own enclave is not used."""
    with Emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def bundle_dir(aws, tmp_path_factory):
    """Two bundles sealed by the operator under a key pinned to the image's PCR0."""
    policy = attested_key_policy(ACCOUNT_ID, image_sha384=aws.pcrs[0])
    key = aws.kms.create_key(Policy=json.dumps(policy), Description="zerocopy host test")["KeyMetadata"]["Arn"]
    directory = tmp_path_factory.mktemp("bundles")
    for name in KEYS:
        bundle = seal(aws.kms, key_id=key, name=name, scheme="hmac-sha256", secret=SECRET)
        (directory / f"{name}.json").write_bytes(bundle.to_json())
    return directory


@pytest.fixture(scope="module")
def eif(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "zerocopy.eif"
    path.write_bytes(write_eif(b"kernel", "console=ttyS0", [b"ramdisk"], default_memory=512 << 20))
    return path


@pytest.fixture
def parent(aws, request):
    """The emulated instance; ``indirect`` parametrization gives its IMDS sessions' lifetime."""
    seconds = getattr(request, "param", 3600)
    with EmulatedParent(aws, session_seconds=seconds, refresh_before=seconds // 2) as instance:
        yield instance


class Agent:
    """``zerocopy host --json`` as a process; its events, read as they come."""

    def __init__(self, argv: list[str]) -> None:
        environment = dict(os.environ, PYTHONPATH=str(ROOT))
        # Dies with the test process even if it is killed: the agent never outlives its test.
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, cwd=ROOT, preexec_fn=set_parent_death_signal)
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def wait_for(self, name: str, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event is None:
                raise AssertionError(f"the agent exited before {name!r}: {self.seen} {self.stderr()}")
            self.seen.append(event)
            if event["event"] == name:
                return event
        raise AssertionError(f"no {name!r} event within {timeout}s: {self.seen}")

    def stderr(self) -> str:
        return self.process.stderr.read().decode(errors="replace") if self.process.poll() is not None and self.process.stderr else ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()
        return self.process.returncode


@pytest.fixture
def start_agent(aws, parent, eif, bundle_dir):
    started: list[Agent] = []

    def start(*extra: str, kms_address: tuple[str, int] | None = None) -> Agent:
        argv = [sys.executable, "-m", "zerocopy._cli", "host", "--json", "--eif", str(eif), "--pcr0", aws.pcrs[0].hex(), "--check-interval", "0.5", "--backoff", "0.2", "--max-backoff", "1"]
        agent = Agent([*argv, *parent.host_options(kms_address=kms_address), *extra, str(bundle_dir)])
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def describe(parent: EmulatedParent) -> list[dict]:
    done = subprocess.run([*parent.device.command(), "describe-enclaves"], capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60, check=True)
    return json.loads(done.stdout)


def signs_with_every_key(aws, parent) -> None:
    with Signer(parent.enclave_address(16), expected_pcrs={0: aws.pcrs[0]}, roots=[aws.root_certificate]) as signer:
        assert sorted(key.name for key in signer.keys()) == sorted(KEYS)
        import hashlib
        import hmac

        assert signer.sign(KEYS[0], b"payload") == hmac.new(SECRET, b"payload", hashlib.sha256).digest()


# IMDS hands out a new session after 6 s; the first one expires after 12 s. The test waits for that
# expiry, so it is short; 6 s is ample for the agent to provision with the first session.
SESSION_SECONDS = 12


@pytest.mark.parametrize("parent", [SESSION_SECONDS], indirect=True)
def test_the_agent_provisions_recovers_from_a_killed_enclave_with_fresh_credentials_and_stops_cleanly(aws, parent, bundle_dir, start_agent):
    agent = start_agent()
    agent.wait_for("proxy-started")
    started = agent.wait_for("enclave-started")
    first_credentials = agent.wait_for("credentials")
    agent.wait_for("provisioned")
    used, expires = InstanceMetadata(parent.imds_url).credentials()  # the session the agent used (asked first: it is renewed soon)
    assert expires == first_credentials["expires"]
    signs_with_every_key(aws, parent)
    (listed,) = describe(parent)
    assert listed["EnclaveID"] == started["message"].split()[1] and listed["State"] == "RUNNING" and listed["EnclaveCID"] == 16

    wait_until_expired(expires)
    key = SealedBundle.from_json((bundle_dir / f"{KEYS[0]}.json").read_bytes()).kms_key_id
    extra = seal(aws.kms, key_id=key, name="host-extra", scheme="hmac-sha256", secret=SECRET).to_json()
    with Signer(parent.enclave_address(16), expected_pcrs={0: aws.pcrs[0]}, roots=[aws.root_certificate]) as signer:
        (stale,) = signer.provision([extra], credentials=used)
    assert not stale.loaded and "expired" in stale.error, stale  # what the agent would meet with the old session
    os.kill(listed["ProcessID"], signal.SIGKILL)  # the enclave crashes: its memory, and keys, are gone
    # Whichever the agent's health check meets first: nitro-cli no longer listing it, or its socket gone
    unhealthy = agent.wait_for("unhealthy")["message"]
    assert "no longer lists" in unhealthy or "the enclave does not answer" in unhealthy, unhealthy
    fresh_credentials = agent.wait_for("credentials")
    agent.wait_for("recovered")
    assert fresh_credentials["expires"] != first_credentials["expires"] == parent.imds.served[0][1]
    assert [served[1] for served in parent.imds.served] == [first_credentials["expires"], fresh_credentials["expires"]]
    signs_with_every_key(aws, parent)
    (relaunched,) = describe(parent)
    assert relaunched["EnclaveID"] != listed["EnclaveID"]

    assert agent.stop() == 0
    assert agent.wait_for("stopped")
    assert describe(parent) == []
    assert not Path(parent.enclave_address(16)[len("unix://"):]).exists()
    assert all(SECRET.decode() not in json.dumps(event) for event in agent.seen)


def wait_until_expired(expires: str) -> None:
    deadline = datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp() + 1.5
    time.sleep(max(0.0, deadline - time.time()))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_kms_unreachable_is_retried_a_bounded_number_of_times_then_one_typed_line(parent, start_agent):
    agent = start_agent("--provision-attempts", "2", kms_address=("127.0.0.1", _closed_port()))
    failures = [agent.wait_for("provision-failed"), agent.wait_for("provision-failed")]
    assert [failure["attempt"] for failure in failures] == [1, 2]
    agent.wait_for("failed")
    agent.process.wait(60)
    assert agent.process.returncode == 1
    errors = agent.stderr().strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("zerocopy: error: provisioning failed after 2 attempt(s): "), errors
    assert "KMS could not be reached" in errors[0] and errors[0].count("KMS could not be reached") == 1, errors  # one reason, once
    assert describe(parent) == []  # the agent terminated the enclave it started


def test_a_missing_nitro_cli_is_one_line_naming_it_and_how_to_get_it(start_agent):
    agent = start_agent("--nitro-cli", "/nonexistent/nitro-cli")
    agent.process.wait(60)
    assert agent.process.returncode == 1
    errors = agent.stderr().strip().splitlines()
    assert len(errors) == 1 and "nitro-cli: /nonexistent/nitro-cli not found" in errors[0] and "aws-nitro-enclaves-cli" in errors[0], errors


def test_an_enclave_that_does_not_attest_the_pinned_image_gets_no_bundles(parent, start_agent):
    agent = start_agent("--pcr0", "ab" * 48)  # the image the operator pinned is not the one that runs
    agent.wait_for("enclave-started")
    agent.wait_for("failed")
    agent.process.wait(60)
    assert agent.process.returncode == 1
    errors = agent.stderr().strip().splitlines()
    assert len(errors) == 1 and "does not attest as the pinned image" in errors[0], errors
    assert not any(event["event"] in ("credentials", "provisioned") for event in agent.seen)
    assert describe(parent) == []


def test_a_restarted_agent_replaces_the_enclave_a_killed_agent_left(aws, parent, start_agent):
    """What systemd's Restart=on-failure leads to: the agent dies (SIGKILL, no clean-up), its
    proxy dies with it, the enclave it ran is still there; the next agent terminates that one,
    runs its own and provisions it."""
    first = start_agent()
    first.wait_for("provisioned")
    (left,) = describe(parent)
    first.process.kill()
    first.process.wait(30)
    second = start_agent()
    assert second.wait_for("enclave-terminated")["enclave_id"] == left["EnclaveID"]
    second.wait_for("provisioned")
    (running,) = describe(parent)
    assert running["EnclaveID"] != left["EnclaveID"]
    signs_with_every_key(aws, parent)
    assert second.stop() == 0


def test_an_unreachable_instance_metadata_service_is_retried_then_one_line(parent, start_agent):
    agent = start_agent("--imds", f"http://127.0.0.1:{_closed_port()}", "--region", "us-east-1", "--provision-attempts", "2")
    assert [agent.wait_for("provision-failed")["attempt"], agent.wait_for("provision-failed")["attempt"]] == [1, 2]
    agent.process.wait(60)
    errors = agent.stderr().strip().splitlines()
    assert agent.process.returncode == 1 and len(errors) == 1 and "instance metadata at http://127.0.0.1:" in errors[0] and "unreachable" in errors[0], errors
    assert describe(parent) == []
