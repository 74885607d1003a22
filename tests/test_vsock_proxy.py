"""The emulated vsock-proxy behaves as AWS's, the enclave keeps within it, and the host writes its
allowlist.

AWS's proxy (aws-nitro-enclaves-cli ``vsock_proxy/``) checks its target against a YAML allowlist
before it listens, serves ``--num_workers`` (default 4) connections at once from a thread pool and
queues the rest. Real sockets and processes throughout; the shipped example config is
``tests/data/vsock-proxy/vsock-proxy.yaml`` (see ``tests/data/PROVENANCE.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from emulator import Emulator
from emulator.nsm import EmulatedNsm, NsmDeviceServer
from emulator.vsock_proxy import AllowlistError, TargetNotAllowed, VsockProxy, VsockProxyError, is_allowed, load_allowlist
from enclave.forwarder import Relay
from enclave.kms import AttestedKms, Credentials, KmsSettings
from enclave.nsm import Nsm, SocketDevice
from enclave.protocol.address import parse_address
from zerocopy._cli import main
from zerocopy.kms_policy import attested_key_policy
from zerocopy import Signer
from zerocopy.sealing import seal
from zerocopy.vsock_proxy import AllowlistConfigError, allowlist_yaml, kms_allowlist, kms_host

REAL_CONFIG = Path(__file__).parent / "data" / "vsock-proxy" / "vsock-proxy.yaml"
REAL_KMS_ENTRY = re.compile(r"- \{address: kms\.([a-z0-9-]+)\.amazonaws\.com, port: 443\}")
ROOT = Path(__file__).resolve().parent.parent


# -- helpers: a TCP service behind the proxy, and the proxy itself -----------------------------------
class EchoServer(Relay):
    """A TCP echo service on 127.0.0.1 standing in for KMS; counts the connections it accepted.

    With ``farewell`` it answers a half-close (EOF from its client) with those bytes before closing.
    """

    thread_name = "echo-server"

    def __init__(self, farewell: bytes = b"") -> None:
        super().__init__()
        self.accepted = 0
        self.farewell = farewell

    @property
    def port(self) -> int:
        assert self._listener is not None
        return self._listener.getsockname()[1]

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        return listener

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self.accepted += 1
        try:
            while data := client.recv(4096):
                client.sendall(data)
            if self.farewell:
                client.sendall(self.farewell)
        except OSError:
            pass

    def __enter__(self) -> "EchoServer":
        return self.start()  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _allowlist(tmp_path: Path, *entries: tuple[str, int]) -> Path:
    path = tmp_path / "vsock-proxy.yaml"
    path.write_text(allowlist_yaml(entries))
    return path


@contextmanager
def _proxy(tmp_path: Path, port: int, *, num_workers: int = 4) -> Iterator[VsockProxy]:
    target = ("127.0.0.1", port)
    proxy = VsockProxy(str(tmp_path / "p.sock"), target, allowlist=_allowlist(tmp_path, target), num_workers=num_workers).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def connect() -> Iterator[Callable[[VsockProxy], socket.socket]]:
    """Connect to a proxy's emulated vsock port; every socket is closed after the test."""
    opened: list[socket.socket] = []

    def connect(proxy: VsockProxy) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        opened.append(sock)
        sock.settimeout(5)
        sock.connect(proxy.listen_path)
        return sock

    yield connect
    for sock in opened:
        sock.close()


def _echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = sock.recv(len(data) - len(received))
        if not chunk:
            break
        received += chunk
    return received


def _eventually(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def new_threads() -> Callable[[str], list[str]]:
    """Names of threads started during the test (the session emulator has proxy threads of its own)."""
    before = set(threading.enumerate())
    return lambda prefix: [thread.name for thread in threading.enumerate() if thread not in before and thread.name.startswith(prefix)]


# -- the allowlist, as the real proxy reads it ---------------------------------------------------------
def test_the_stored_real_config_is_the_one_provenance_md_records():
    recorded = re.search(r"`vsock-proxy/vsock-proxy.yaml`.*?SHA-256 `([0-9a-f]{64})`", (REAL_CONFIG.parent.parent / "PROVENANCE.md").read_text())
    assert recorded and hashlib.sha256(REAL_CONFIG.read_bytes()).hexdigest() == recorded.group(1)


def test_the_real_shipped_config_is_read_as_the_real_proxy_reads_it():
    allowlist = load_allowlist(REAL_CONFIG)
    assert len(allowlist) == 76 and all(port == 443 for _, port in allowlist)
    assert ("kms.us-east-1.amazonaws.com", 443) in allowlist and ("kms-fips.eu-west-1.amazonaws.com", 443) in allowlist
    assert is_allowed(("kms.eu-central-1.amazonaws.com", 443), allowlist)


@pytest.mark.parametrize("target", [
    ("kms.us-east-1.amazonaws.com", 80),                      # the port is matched first
    ("s3.us-east-1.amazonaws.com", 443),                      # another service
    ("kms.us-east-1.amazonaws.com.attacker.example", 443),    # the whole name, not a prefix
])
def test_a_proxy_whose_target_is_not_allowlisted_does_not_start(tmp_path, target, new_threads):
    proxy = VsockProxy(str(tmp_path / "p.sock"), target, allowlist=REAL_CONFIG)
    with pytest.raises(TargetNotAllowed, match="the given address and port are not allowed") as refused:
        proxy.start()
    assert refused.value.target == target and refused.value.config == REAL_CONFIG
    # Refused before anything listens, as the real one: no socket file, no thread.
    assert not (tmp_path / "p.sock").exists()
    assert new_threads("") == []


def test_a_proxy_for_a_listed_kms_endpoint_starts_with_the_real_config(tmp_path, new_threads):
    proxy = VsockProxy(str(tmp_path / "p.sock"), ("kms.ap-southeast-7.amazonaws.com", 443), allowlist=REAL_CONFIG).start()
    try:
        assert (tmp_path / "p.sock").exists()
    finally:
        proxy.stop()
    assert not (tmp_path / "p.sock").exists() and new_threads("vsock-proxy") == []


def test_an_ip_entry_allows_the_same_ip_written_differently():
    assert is_allowed(("::1", 443), (("0:0:0:0:0:0:0:1", 443),))
    assert not is_allowed(("127.0.0.2", 443), (("127.0.0.1", 443),))


@pytest.mark.parametrize("content, message", [
    (None, "could not read the allowlist"),
    ("allowlist: [", "bad YAML format"),
    ("", "no allowlist field"),
    ("services:\n- {address: 127.0.0.1, port: 443}\n", "no allowlist field"),
    ("allowlist: {address: 127.0.0.1, port: 443}\n", "no allowlist field"),
    ("allowlist:\n- {port: 443}\n", "entry 1: no address field"),
    ("allowlist:\n- {address: 127.0.0.1, port: 443}\n- {address: 127.0.0.1, port: '443'}\n", "entry 2: no port field or invalid type"),
    ("allowlist:\n- {address: 127.0.0.1, port: true}\n", "no port field or invalid type"),
    ("allowlist:\n- {address: 127.0.0.1, port: 70000}\n", "no port field or invalid type"),
])
def test_a_malformed_allowlist_is_a_typed_error(tmp_path, content, message):
    path = tmp_path / "vsock-proxy.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AllowlistError, match=message):
        VsockProxy(str(tmp_path / "p.sock"), ("127.0.0.1", 443), allowlist=path).start()
    assert not (tmp_path / "p.sock").exists()


@pytest.mark.parametrize("workers", [0, -1, True, 2.5])
def test_a_proxy_needs_at_least_one_worker(tmp_path, workers):
    with pytest.raises(VsockProxyError, match="number of workers"):
        VsockProxy(str(tmp_path / "p.sock"), ("127.0.0.1", 443), allowlist=REAL_CONFIG, num_workers=workers)


def test_a_socket_path_someone_else_holds_is_not_taken_or_removed(tmp_path, new_threads):
    taken = tmp_path / "p.sock"
    taken.write_text("not ours")
    proxy = VsockProxy(str(taken), ("127.0.0.1", 443), allowlist=_allowlist(tmp_path, ("127.0.0.1", 443)))
    with pytest.raises(OSError):
        proxy.start()
    proxy.stop()
    assert taken.read_text() == "not ours" and new_threads("vsock-proxy") == []


# -- workers and the queue ---------------------------------------------------------------------
def test_a_fifth_connection_waits_for_a_free_worker_then_is_served(tmp_path, connect):
    with EchoServer() as server, _proxy(tmp_path, server.port, num_workers=4) as proxy:
        busy = [connect(proxy) for _ in range(4)]
        assert [_echo(sock, b"hello") for sock in busy] == [b"hello"] * 4
        fifth = connect(proxy)  # accepted, not refused
        fifth.sendall(b"queued")
        fifth.settimeout(0.5)
        with pytest.raises(TimeoutError):
            fifth.recv(100)
        # It waits inside the proxy: the target has not even seen a connection for it yet.
        assert (proxy.active, proxy.waiting, server.accepted) == (4, 1, 4)
        busy.pop(0).close()
        fifth.settimeout(5)
        assert fifth.recv(100) == b"queued"  # the bytes it sent while queued arrive intact
        assert _echo(fifth, b"and more") == b"and more"
        assert (server.accepted, proxy.peak_active) == (5, 4)


def test_a_half_close_ends_the_whole_connection_and_frees_the_worker(tmp_path, connect):
    with EchoServer(farewell=b"bye") as server, _proxy(tmp_path, server.port, num_workers=1) as proxy:
        first = connect(proxy)
        assert _echo(first, b"x") == b"x"
        first.shutdown(socket.SHUT_WR)
        # The real worker drops both sides at the first EOF: what the target sends after it is lost.
        assert first.recv(10) == b""
        assert _eventually(lambda: proxy.active == 0)
        assert _echo(connect(proxy), b"y") == b"y"


def test_stop_closes_served_and_queued_connections_and_joins_every_thread(tmp_path, connect, new_threads):
    with EchoServer() as server:
        with _proxy(tmp_path, server.port, num_workers=2) as proxy:
            served = [connect(proxy) for _ in range(2)]
            assert [_echo(sock, b"hi") for sock in served] == [b"hi", b"hi"]
            queued = [connect(proxy) for _ in range(3)]
            assert _eventually(lambda: proxy.waiting == 3)
        for sock in served + queued:
            assert sock.recv(10) == b""  # closed by the proxy, not left hanging
        assert not Path(proxy.listen_path).exists()
        assert new_threads("vsock-proxy") == []
    assert new_threads("echo-server") == []


# -- the emulator and the enclave ---------------------------------------------------------------
@pytest.fixture(scope="module")
def emulator():
    # An emulator of its own: 64 more keys would change what the session enclave attests to.
    with Emulator() as running:
        yield running


@pytest.fixture(scope="module")
def pinned_key(emulator):
    policy = attested_key_policy(emulator.account_id, image_sha384=emulator.pcrs[0])
    return emulator.kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]


def _no_connection_holds_a_worker(emulator) -> bool:
    proxy = emulator.vsock_proxy
    return _eventually(lambda: proxy.active == 0 and proxy.waiting == 0, timeout=5)


def test_the_emulator_starts_its_proxy_from_an_allowlist_in_the_production_format(emulator):
    proxy = emulator.vsock_proxy
    assert proxy.allowlist == emulator.run_dir / "vsock-proxy.yaml" and proxy.num_workers == 4
    assert yaml.safe_load(proxy.allowlist.read_text()) == {"allowlist": [{"address": "127.0.0.1", "port": proxy.target[1]}]}
    assert proxy.target == ("127.0.0.1", int(emulator.kms_endpoint_url.rsplit(":", 1)[1]))


def test_a_provisioning_leaves_no_idle_connection_holding_a_worker(emulator, pinned_key):
    bundle = seal(emulator.kms, key_id=pinned_key, name="idle-check", scheme="hmac-sha256", secret=b"idle-check-secret")
    with emulator.signer() as signer:
        (result,) = signer.provision([bundle.to_json()], credentials=emulator.credentials)
        assert result.loaded
        assert _no_connection_holds_a_worker(emulator)
        signer.generate("idle-check-generated", "ed25519", credentials=emulator.credentials)
        assert _no_connection_holds_a_worker(emulator)


@contextmanager
def _enclave_kms_in_this_process(emulator) -> Iterator[AttestedKms]:
    """The enclave's own KMS client (``enclave.kms``), run here on the emulator's NSM, proxy and CA."""
    server_end, client_end = socket.socketpair()
    nsm = EmulatedNsm(emulator.pki, module_id=emulator.enclave.module_id, pcrs=emulator.pcrs)
    device = NsmDeviceServer(nsm, server_end).start()
    settings = KmsSettings(emulator.region, parse_address(f"unix://{emulator.vsock_proxy.listen_path}"), str(emulator.tls_ca_path))
    kms = AttestedKms(settings, Nsm(SocketDevice(client_end)))
    try:
        yield kms
    finally:
        kms.close()
        client_end.close()
        device.stop()


def test_an_open_kms_session_holds_one_worker_until_it_is_closed(emulator, pinned_key):
    bundle = seal(emulator.kms, key_id=pinned_key, name="held", scheme="hmac-sha256", secret=b"held-secret")
    request = {"key_id": bundle.kms_key_id, "ciphertext_blob": bundle.encrypted_data_key, "encryption_context": bundle.encryption_context()}
    proxy = emulator.vsock_proxy
    with _enclave_kms_in_this_process(emulator) as kms:
        session = kms.session(Credentials.from_fields(emulator.credentials))
        try:
            assert len(session.decrypt(**request)) == 32
            # The keep-alive connection stays open while the session does: it holds a worker.
            assert proxy.active == 1
            assert len(session.decrypt(**request)) == 32 and proxy.active == 1  # reused, not a second
        finally:
            session.close()
        assert _no_connection_holds_a_worker(emulator)


def test_64_bundles_provision_through_a_4_worker_proxy(emulator, pinned_key):
    def sealed(index: int) -> bytes:
        return seal(emulator.kms, key_id=pinned_key, name=f"bulk-{index}", scheme="hmac-sha256", secret=f"bulk-secret-{index}".encode()).to_json()

    def provision(share: list[bytes]) -> list:
        # Four bundles per PROVISION, each PROVISION a KMS session (and connection) of its own.
        with Signer(fresh.address, expected_pcrs={0: emulator.pcrs[0]}, roots=[emulator.root_certificate]) as signer:
            return [result for start in range(0, len(share), 4) for result in signer.provision(share[start:start + 4], credentials=emulator.credentials)]

    # A fresh enclave of the same image (the same PCR0): 64 keys is as many as one enclave holds.
    with emulator.launch() as fresh, ThreadPoolExecutor(max_workers=8) as clients:  # twice as many callers as proxy workers
        assert fresh.pcrs[0] == emulator.pcrs[0]
        bundles = list(clients.map(sealed, range(64)))
        results = [result for share in clients.map(provision, [bundles[i::8] for i in range(8)]) for result in share]
        assert len(results) == 64 and all(result.loaded for result in results), [result.error for result in results if not result.loaded]
        proxy = emulator.vsock_proxy
        assert proxy.num_workers == 4 and proxy.peak_active <= 4
        assert _no_connection_holds_a_worker(emulator)
        with Signer(fresh.address) as signer:
            assert {key.name for key in signer.keys()} == {f"bulk-{index}" for index in range(64)}


# -- the allowlist the host writes ---------------------------------------------------------------
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-southeast-7", "us-gov-west-1"])
def test_the_kms_allowlist_reads_back_as_what_the_real_proxy_expects(tmp_path, region):
    text = kms_allowlist(region)
    assert yaml.safe_load(text) == {"allowlist": [{"address": f"kms.{region}.amazonaws.com", "port": 443}]}
    path = tmp_path / "vsock-proxy.yaml"
    path.write_text(text)
    assert is_allowed((f"kms.{region}.amazonaws.com", 443), load_allowlist(path))


def test_the_kms_allowlist_has_the_structure_of_the_real_shipped_config():
    real_lines = REAL_CONFIG.read_text().splitlines()
    regions = [match.group(1) for line in real_lines if (match := REAL_KMS_ENTRY.fullmatch(line))]
    assert len(regions) == 38
    real = yaml.safe_load(REAL_CONFIG.read_text())
    for region in regions:
        ours_lines = kms_allowlist(region).splitlines()
        # Line for line the format AWS ships: the same header and the region's entry verbatim.
        assert ours_lines[0] == real_lines[0] == "allowlist:"
        assert ours_lines[1] in real_lines
        ours = yaml.safe_load(kms_allowlist(region))
        assert _shape(ours) == _shape(real)


def _shape(document: dict) -> tuple:
    entries = document["allowlist"]
    return (sorted(document), {tuple(sorted(entry)) for entry in entries}, {(type(entry["address"]), type(entry["port"])) for entry in entries})


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-2", "cn-north-1"])
def test_the_allowlisted_host_is_the_one_the_enclave_connects_to(region):
    assert KmsSettings(region=region, proxy=parse_address("vsock://3:8000")).host == kms_host(region)


@pytest.mark.parametrize("address, port", [
    ("yes", 443), ("1.5", 443), ("2001-12-14", 443), ("KMS.us-east-1.amazonaws.com", 443), ("::1", 443),
    ("kms.us-east-1.amazonaws.com, port: 80", 443), ("kms.us-east-1.amazonaws.com", 0), ("kms.us-east-1.amazonaws.com", True),
])
def test_values_yaml_would_read_differently_are_refused(address, port):
    with pytest.raises(AllowlistConfigError):
        allowlist_yaml([(address, port)])


@pytest.mark.parametrize("region", ["US-EAST-1", "us-east-1.evil", "us_east_1", ""])
def test_a_bad_region_is_a_typed_error(region):
    with pytest.raises(AllowlistConfigError, match="is not an AWS region name"):
        kms_allowlist(region)


def test_the_cli_writes_the_allowlist_file(tmp_path, capsys):
    path = tmp_path / "vsock-proxy.yaml"
    assert main(["vsock-proxy-config", "--region", "eu-west-1", "-o", str(path)]) == 0
    assert path.read_text() == kms_allowlist("eu-west-1")
    assert f"vsock-proxy 8000 kms.eu-west-1.amazonaws.com 443 --config {path}" in capsys.readouterr().err


def test_the_cli_prints_the_allowlist_and_refuses_a_bad_region_in_one_line(capsys, monkeypatch):
    assert main(["vsock-proxy-config", "--region", "us-east-2"]) == 0
    assert capsys.readouterr().out == "allowlist:\n- {address: kms.us-east-2.amazonaws.com, port: 443}\n"
    assert main(["vsock-proxy-config", "--region", "mars-1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'mars-1' is not an AWS region name" in err
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    assert main(["vsock-proxy-config"]) == 1
    assert "no AWS region" in capsys.readouterr().err


def test_the_cli_command_has_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["vsock-proxy-config", "--help"])
    assert done.value.code == 0 and "allowlist" in capsys.readouterr().out


def test_the_host_writes_the_allowlist_without_a_yaml_library():
    code = (
        "import sys, zerocopy._cli\n"
        "assert zerocopy._cli.main(['vsock-proxy-config', '--region', 'us-west-2']) == 0\n"
        "print('yaml' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout == kms_allowlist("us-west-2") and done.stderr.strip() == "False"
