"""``zerocopy stethoscope``'s host findings, read from fake ``/proc`` and ``/sys`` trees: a badly
set up host is diagnosed check by check (each WARN or FAIL with its cost and fix), a well set up
one passes, a missing file is a SKIP, and garbage in any file never crashes the reader.

The NIC findings come from ``ethtool``: here always a fake one on PATH (the suite refuses to run
the real one, tests/conftest.py) printing real ``ethtool -k``/``-c`` output from tests/data/ethtool/
(see tests/data/PROVENANCE.md), good and bad, errors, garbage, or nothing at all."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zerocopy._cli import main
from zerocopy import _stethoscope_nic
from zerocopy._stethoscope import FAIL, PASS, SKIP, WARN, cpu_list, host_findings
from zerocopy._stethoscope_nic import parse_coalesce, parse_features

BOT_CPUS = {0, 1}
SAMPLES = Path(__file__).resolve().parent / "data" / "ethtool"
HOST_CHECKS = 8  # then the NIC findings: two per device-backed interface
FAKE_ETHTOOL = """#!/bin/sh
# A fake ethtool: prints the sample set for "$2" ("-k": features, "-c": coalescing) and logs its arguments.
here=$(dirname "$0")
echo "$@" >> "$here/calls"
case "$1" in -k) kind=features ;; -c) kind=coalesce ;; *) echo "fake ethtool: only -k and -c" >&2; exit 64 ;; esac
[ -f "$here/$2.$kind" ] || { echo "fake ethtool: no $kind sample for $2" >&2; exit 75; }
cat "$here/$2.$kind"
exit "$(cat "$here/$2.$kind.rc" 2>/dev/null || echo 0)"
"""


class FakeEthtool:
    """A fake ``ethtool`` first on PATH, printing what each interface is given (real samples)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        script = directory / "ethtool"
        script.write_text(FAKE_ETHTOOL)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.path = str(script)

    def show(self, iface: str, *, features: str | bytes | None = None, coalesce: str | bytes | None = None, rc: int = 0) -> None:
        for kind, sample in (("features", features), ("coalesce", coalesce)):
            if sample is not None:
                data = sample if isinstance(sample, bytes) else (SAMPLES / sample).read_bytes()
                (self.directory / f"{iface}.{kind}").write_bytes(data)
                (self.directory / f"{iface}.{kind}.rc").write_text(str(rc))

    def calls(self) -> list[str]:
        log = self.directory / "calls"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture(autouse=True)
def ethtool(tmp_path_factory, monkeypatch) -> FakeEthtool:
    fake = FakeEthtool(tmp_path_factory.mktemp("ethtool"))
    fake.show("eth0", features="features-bond0-gro-lro-on.txt", coalesce="coalesce-tg3-eth0-rx-usecs-20.txt")
    monkeypatch.setenv("PATH", f"{fake.directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return fake


def _tree(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text + "\n")
    return root


def _host(*, swappiness="60", thp="[always] madvise never", governor="powersave", c6_disabled="0", isolated="", irq="0-3",
          clocksource="hpet", ne_cpus="1,3", siblings=("0,2", "1,3", "0,2", "1,3")) -> dict[str, str]:
    """A four-CPU host (siblings 0+2 and 1+3) with one NIC, eth0, and lo; by default set up badly
    in every way (the fake ethtool's default samples for eth0 are the bad ones)."""
    files = {
        "/proc/sys/vm/swappiness": swappiness, "/sys/kernel/mm/transparent_hugepage/enabled": thp,
        "/sys/devices/system/cpu/isolated": isolated, "/sys/devices/system/clocksource/clocksource0/current_clocksource": clocksource,
        "/sys/module/nitro_enclaves/parameters/ne_cpus": ne_cpus,
        "/sys/class/net/eth0/device/vendor": "0x8086", "/sys/class/net/lo/mtu": "65536",
    }
    for cpu in range(4):
        files[f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"] = governor
        files[f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"] = siblings[cpu]
        for index, (name, latency, disabled) in enumerate((("POLL", "0", "0"), ("C1", "2", "0"), ("C6", "133", c6_disabled))):
            state = f"/sys/devices/system/cpu/cpu{cpu}/cpuidle/state{index}"
            files.update({f"{state}/name": name, f"{state}/latency": latency, f"{state}/disable": disabled})
    for number in (0, 24, 25):
        files[f"/proc/irq/{number}/smp_affinity_list"] = irq
    return files


def _by_check(findings: list[dict]) -> dict[str, dict]:
    return {finding["check"]: finding for finding in findings}


def test_a_badly_set_up_host_is_diagnosed_check_by_check(tmp_path):
    found = _by_check(host_findings(_tree(tmp_path, _host()), bot_cpus={0, 1}))
    expected = {"swappiness": WARN, "transparent huge pages": WARN, "CPU frequency governor": WARN, "C-states": WARN,
                "isolated cores": WARN, "IRQ affinity": WARN, "clocksource": FAIL, "enclave vCPUs vs the bot": FAIL,
                "receive offloads (eth0)": FAIL, "interrupt coalescing (eth0)": WARN}
    assert {check: finding["status"] for check, finding in found.items()} == expected
    for finding in found.values():
        assert finding["fix"] and finding["cost_us"] > 0, finding
    assert "C6, exit latency 133 µs" in found["C-states"]["measured"] and found["C-states"]["cost_us"] == 133
    assert "vm.swappiness = 60" in found["swappiness"]["measured"] and "hpet" == found["clocksource"]["measured"]
    assert "3 of 3 IRQs" in found["IRQ affinity"]["measured"] and "1" in found["enclave vCPUs vs the bot"]["measured"]
    offloads, coalescing = found["receive offloads (eth0)"], found["interrupt coalescing (eth0)"]
    assert offloads["measured"] == "GRO on, LRO on" and offloads["fix"].startswith("ethtool -K eth0 gro off lro off (") and offloads["cost_us"] == 40
    assert "rx-usecs 20" in coalescing["measured"] and coalescing["cost_us"] == 20 and coalescing["fix"].startswith("ethtool -C eth0 adaptive-rx off rx-usecs 0")


def test_a_bot_on_the_enclaves_hyperthread_siblings_is_a_warning(tmp_path):
    found = _by_check(host_findings(_tree(tmp_path, _host(ne_cpus="2")), bot_cpus={0}))
    assert found["enclave vCPUs vs the bot"]["status"] == WARN and "siblings of the enclave's CPUs 2" in found["enclave vCPUs vs the bot"]["measured"]


def test_a_well_set_up_host_passes_every_check(tmp_path, ethtool):
    good = _host(swappiness="1", thp="always [madvise] never", governor="performance", c6_disabled="1", isolated="0-1", irq="2-3",
                 clocksource="tsc", ne_cpus="2-3", siblings=("0,1", "0,1", "2,3", "2,3"))
    ethtool.show("eth0", features="features-igb-i210-offloads-off.txt", coalesce="coalesce-ixgbe-ten1-rx-usecs-1.txt")
    findings = host_findings(_tree(tmp_path, good), bot_cpus={0, 1})
    assert [finding["status"] for finding in findings] == [PASS] * (HOST_CHECKS + 2), findings
    assert all(finding["fix"] == "" for finding in findings)
    assert ethtool.calls() == ["-k eth0", "-c eth0"]  # lo, which has no device, is not asked about


def test_an_empty_tree_is_all_skipped_not_a_crash(tmp_path, ethtool):
    findings = host_findings(tmp_path, bot_cpus=BOT_CPUS)
    assert len(findings) == HOST_CHECKS + 1 and {finding["status"] for finding in findings} == {SKIP}
    assert "no device-backed network interface" in findings[-1]["measured"] and ethtool.calls() == []


@pytest.mark.parametrize(("text", "cpus"), [("0-3,8,10-11", {0, 1, 2, 3, 8, 10, 11}), ("", set()), ("5", {5}), ("3-1", None), ("a-b", None), ("1,,2", {1, 2}), ("0-99999", None)])
def test_cpu_lists_are_parsed_as_the_kernel_writes_them(text, cpus):
    assert cpu_list(text) == cpus


FILES = list(_host())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.dictionaries(st.sampled_from(FILES), st.binary(max_size=200), max_size=len(FILES)))
def test_garbage_in_any_file_gives_findings_never_an_exception(garbage, tmp_path_factory):
    root = _tree(tmp_path_factory.mktemp("garbage"), _host())
    for path, data in garbage.items():
        (root / path.lstrip("/")).write_bytes(data)
    findings = host_findings(root, bot_cpus=BOT_CPUS)
    assert len(findings) == HOST_CHECKS + 2 and all(finding["status"] in (PASS, WARN, FAIL, SKIP) for finding in findings)
    json.dumps(findings)


@pytest.mark.zerocopy
def test_the_stethoscope_command_reports_the_host_it_is_given(zerocopy_emulator, tmp_path, capsys):
    root = _tree(tmp_path / "host", _host())
    assert main(["stethoscope", "--enclave", zerocopy_emulator.address, "--pcr0", zerocopy_emulator.pcrs[0].hex(), "--samples", "20", "--host-root", str(root), "--json"]) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    assert _by_check(report["host"])["clocksource"]["status"] == FAIL
    main(["stethoscope", "--enclave", zerocopy_emulator.address, "--samples", "20", "--host-root", str(root)])
    out = capsys.readouterr().out
    assert "host FAIL  clocksource: hpet" in out and "fix: use the TSC" in out
    assert "host FAIL  receive offloads (eth0): GRO on, LRO on (typically 40 µs)\n  fix: ethtool -K eth0 gro off lro off" in out
    assert _by_check(report["host"])["interrupt coalescing (eth0)"]["status"] == WARN


@pytest.mark.parametrize("text", ["²", "1-²", "٣"])
def test_digits_that_are_not_ascii_are_not_numbers(text, tmp_path):
    assert cpu_list(text) is None
    _tree(tmp_path, {"/proc/sys/vm/swappiness": text})
    assert _by_check(host_findings(tmp_path, bot_cpus=BOT_CPUS))["swappiness"]["status"] == SKIP


# -- NIC offloads and coalescing, from a fake ethtool ------------------------------------------------
def _nic(root: Path, iface: str, driver: str | None = None, *, device: bool = True) -> None:
    """``/sys/class/net/IFACE`` as the kernel lays it out: ``device`` for a real NIC, and its
    ``driver`` a link whose last part names the driver."""
    net = root / "sys/class/net" / iface
    net.mkdir(parents=True, exist_ok=True)
    (net / "mtu").write_text("1500\n")
    if device:
        (net / "device").mkdir(exist_ok=True)
        if driver:
            (net / "device" / "driver").symlink_to(f"../../../bus/pci/drivers/{driver}")


def _nic_findings(root: Path, **options) -> dict[str, dict]:
    return _by_check(host_findings(root, bot_cpus=BOT_CPUS, **options)[HOST_CHECKS:])


def test_every_device_backed_interface_is_asked_and_virtual_ones_are_not(tmp_path, ethtool):
    for iface in ("eth0", "eth1"):
        _nic(tmp_path, iface)
    _nic(tmp_path, "lo", device=False)
    _nic(tmp_path, "veth1a2b", device=False)
    ethtool.show("eth1", features="features-tg3-eth0-gro-on.txt", coalesce="coalesce-mlx5-eth0-adaptive-on.txt")
    found = _nic_findings(tmp_path)
    assert ethtool.calls() == ["-k eth0", "-c eth0", "-k eth1", "-c eth1"]
    assert {check: finding["status"] for check, finding in found.items()} == {
        "receive offloads (eth0)": FAIL, "interrupt coalescing (eth0)": WARN, "receive offloads (eth1)": WARN, "interrupt coalescing (eth1)": WARN}
    gro_only = found["receive offloads (eth1)"]
    assert gro_only["measured"] == "GRO on, LRO off [fixed]" and gro_only["cost_us"] == 10 and gro_only["fix"].startswith("ethtool -K eth1 gro off (")
    adaptive = found["interrupt coalescing (eth1)"]
    assert adaptive["measured"].startswith("adaptive-rx on (rx-usecs 8 now)") and adaptive["fix"].startswith("ethtool -C eth1 adaptive-rx off")


def test_an_intel_drivers_rx_usecs_mode_is_not_read_as_microseconds(tmp_path, ethtool):
    _nic(tmp_path, "eth0")
    _nic(tmp_path, "ten1", driver="ixgbe")
    for iface in ("eth0", "ten1"):
        ethtool.show(iface, features="features-igb-i210-offloads-off.txt", coalesce="coalesce-ixgbe-ten1-rx-usecs-1.txt")
    found = _nic_findings(tmp_path)
    assert found["interrupt coalescing (eth0)"]["status"] == PASS and found["interrupt coalescing (eth0)"]["cost_us"] == 1
    ixgbe = found["interrupt coalescing (ten1)"]
    assert ixgbe["status"] == WARN and "rx-usecs 1 on ixgbe selects a dynamic interrupt-throttling mode" in ixgbe["measured"]


def test_a_fixed_on_gro_says_ethtool_cannot_turn_it_off(tmp_path, ethtool):
    _nic(tmp_path, "eth0")
    fixed = (SAMPLES / "features-tg3-eth0-gro-on.txt").read_bytes().replace(b"generic-receive-offload: on\n", b"generic-receive-offload: on [fixed]\n")
    ethtool.show("eth0", features=fixed)
    finding = _nic_findings(tmp_path)["receive offloads (eth0)"]
    assert finding["status"] == WARN and finding["fix"].startswith("GRO is fixed on by the driver") and "ethtool -K" not in finding["fix"]


@pytest.mark.parametrize(("features", "coalesce", "rc", "said"), [
    ("bad-command-line.txt", "bad-command-line.txt", 1, "exit 1: ethtool: bad command line argument(s)"),
    ("bad-command-line.txt", "coalesce-usb0-not-supported.txt", 76, "exit 76: Cannot get device coalesce settings: Operation not supported"),
])
def test_ethtool_refusing_gives_a_skip_with_its_words(tmp_path, ethtool, features, coalesce, rc, said):
    _nic(tmp_path, "eth0")
    ethtool.show("eth0", features=features, coalesce=coalesce, rc=rc)
    found = _nic_findings(tmp_path)
    assert {finding["status"] for finding in found.values()} == {SKIP}
    assert said in found["interrupt coalescing (eth0)"]["measured"], found


def test_an_interface_ethtool_knows_nothing_of_is_a_skip(tmp_path, ethtool):
    _nic(tmp_path, "wlan9")
    found = _nic_findings(tmp_path)
    assert found["receive offloads (wlan9)"]["status"] == SKIP and "exit 75: fake ethtool: no features sample for wlan9" in found["receive offloads (wlan9)"]["measured"]


def test_without_ethtool_one_skip_says_how_to_get_it(tmp_path, monkeypatch):
    _nic(tmp_path, "eth0")
    _nic(tmp_path, "eth1")
    monkeypatch.setenv("PATH", str(tmp_path / "bin-without-ethtool"))
    (finding,) = host_findings(tmp_path, bot_cpus=BOT_CPUS)[HOST_CHECKS:]
    assert finding["status"] == SKIP and finding["check"] == "NIC offloads and coalescing"
    assert "ethtool is not on PATH" in finding["measured"] and "apt-get install ethtool" in finding["measured"] and "eth0, eth1" in finding["measured"]


def test_a_real_ethtool_is_refused_in_the_suite_and_that_is_a_skip(tmp_path, ethtool):
    _nic(tmp_path, "eth0")
    found = _nic_findings(tmp_path, ethtool="/usr/sbin/ethtool")
    assert {finding["status"] for finding in found.values()} == {SKIP}
    assert "never runs a real ethtool" in found["receive offloads (eth0)"]["measured"] and ethtool.calls() == []


def test_an_ethtool_that_hangs_is_abandoned(tmp_path, ethtool, monkeypatch):
    _nic(tmp_path, "eth0")
    hanging = tmp_path / "hanging" / "ethtool"
    hanging.parent.mkdir()
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(0o755)
    monkeypatch.setattr(_stethoscope_nic, "ETHTOOL_TIMEOUT_S", 0.3)
    found = _nic_findings(tmp_path, ethtool=str(hanging))
    assert all(finding["status"] == SKIP and "no answer in 0.3 s" in finding["measured"] for finding in found.values()), found


@pytest.mark.parametrize("name", sorted(path.name for path in SAMPLES.iterdir()))
def test_every_real_sample_parses_as_its_kind(name):
    text = (SAMPLES / name).read_text()
    features, coalesce = parse_features(text), parse_coalesce(text)
    if name.startswith("features-"):
        assert features and "generic-receive-offload" in features and coalesce is None
    elif name.startswith("coalesce-") and "not-supported" not in name:
        assert coalesce and isinstance(coalesce["rx-usecs"], int) and isinstance(coalesce["adaptive-rx"], bool) and features is None
    else:
        assert features is None and coalesce is None


def test_old_ethtools_offload_parameters_are_read_too():
    """ethtool before 3.x: another header, names with spaces, and a "Cannot get" line among them."""
    old = ("Offload parameters for eth0:\nCannot get device udp large send offload settings: Operation not supported\n"
           "rx-checksumming: on\ntcp segmentation offload: on\ngeneric-receive-offload: on\nlarge-receive-offload: off\n")
    assert parse_features(old) == {"rx-checksumming": (True, False), "tcp-segmentation-offload": (True, False),
                                   "generic-receive-offload": (True, False), "large-receive-offload": (False, False)}


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=2000) | st.lists(st.sampled_from(["Features for eth0:\n", "Coalesce parameters for eth0:\n", "Offload parameters for x:",
                                                                  "generic-receive-offload: ", "on", "off", " [fixed]", "rx-usecs: ", "n/a",
                                                                  "Adaptive RX: ", "  TX: ", "7", "\n", "\t", ":", "²", "-1", "99999999999"]), max_size=80).map("".join))
def test_the_parsers_give_their_types_or_none_for_any_text(text):
    features, coalesce = parse_features(text), parse_coalesce(text)
    assert features is None or all(isinstance(on, bool) and isinstance(fixed, bool) for on, fixed in features.values())
    assert coalesce is None or all(value is None or type(value) in (int, bool) for value in coalesce.values())
    assert coalesce is None or all(0 <= value < 10**9 for value in coalesce.values() if type(value) is int)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=3000), rc=st.sampled_from([0, 1, 255]))
def test_garbage_from_ethtool_gives_typed_findings(garbage, rc, tmp_path_factory, ethtool):
    root = tmp_path_factory.mktemp("nic")
    _nic(root, "eth0")
    ethtool.show("eth0", features=garbage, coalesce=garbage[::-1], rc=rc)
    found = _nic_findings(root)
    assert set(found) == {"receive offloads (eth0)", "interrupt coalescing (eth0)"}
    assert all(finding["status"] in (PASS, WARN, FAIL, SKIP) and isinstance(finding["measured"], str) for finding in found.values())
    json.dumps(found)


def test_an_ethtool_that_floods_its_output_is_read_only_up_to_a_bound(tmp_path, ethtool):
    _nic(tmp_path, "eth0")
    flooding = tmp_path / "flooding" / "ethtool"
    flooding.parent.mkdir()
    flooding.write_text("#!/bin/sh\necho 'Features for eth0:'\necho 'generic-receive-offload: on'\nexec head -c 50000000 /dev/zero\n")
    flooding.chmod(0o755)
    found = _nic_findings(tmp_path, ethtool=str(flooding))
    assert found["receive offloads (eth0)"]["status"] == WARN and found["receive offloads (eth0)"]["measured"] == "GRO on"
