"""``zerocopy stethoscope``'s host findings, read from fake ``/proc`` and ``/sys`` trees: a badly
set up host is diagnosed check by check (each WARN or FAIL with its cost and fix), a well set up
one passes, a missing file is a SKIP, and garbage in any file never crashes the reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zerocopy._cli import main
from zerocopy._stethoscope import FAIL, PASS, SKIP, WARN, cpu_list, host_findings

BOT_CPUS = {0, 1}


def _tree(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text + "\n")
    return root


def _host(*, swappiness="60", thp="[always] madvise never", governor="powersave", c6_disabled="0", isolated="", irq="0-3",
          clocksource="hpet", ne_cpus="1,3", siblings=("0,2", "1,3", "0,2", "1,3")) -> dict[str, str]:
    """A four-CPU host (siblings 0+2 and 1+3); by default set up badly in every way."""
    files = {
        "/proc/sys/vm/swappiness": swappiness, "/sys/kernel/mm/transparent_hugepage/enabled": thp,
        "/sys/devices/system/cpu/isolated": isolated, "/sys/devices/system/clocksource/clocksource0/current_clocksource": clocksource,
        "/sys/module/nitro_enclaves/parameters/ne_cpus": ne_cpus,
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
                "isolated cores": WARN, "IRQ affinity": WARN, "clocksource": FAIL, "enclave vCPUs vs the bot": FAIL}
    assert {check: finding["status"] for check, finding in found.items()} == expected
    for finding in found.values():
        assert finding["fix"] and finding["cost_us"] > 0, finding
    assert "C6, exit latency 133 µs" in found["C-states"]["measured"] and found["C-states"]["cost_us"] == 133
    assert "vm.swappiness = 60" in found["swappiness"]["measured"] and "hpet" == found["clocksource"]["measured"]
    assert "3 of 3 IRQs" in found["IRQ affinity"]["measured"] and "1" in found["enclave vCPUs vs the bot"]["measured"]


def test_a_bot_on_the_enclaves_hyperthread_siblings_is_a_warning(tmp_path):
    found = _by_check(host_findings(_tree(tmp_path, _host(ne_cpus="2")), bot_cpus={0}))
    assert found["enclave vCPUs vs the bot"]["status"] == WARN and "siblings of the enclave's CPUs 2" in found["enclave vCPUs vs the bot"]["measured"]


def test_a_well_set_up_host_passes_every_check(tmp_path):
    good = _host(swappiness="1", thp="always [madvise] never", governor="performance", c6_disabled="1", isolated="0-1", irq="2-3",
                 clocksource="tsc", ne_cpus="2-3", siblings=("0,1", "0,1", "2,3", "2,3"))
    findings = host_findings(_tree(tmp_path, good), bot_cpus={0, 1})
    assert [finding["status"] for finding in findings] == [PASS] * 8, findings
    assert all(finding["fix"] == "" for finding in findings)


def test_an_empty_tree_is_all_skipped_not_a_crash(tmp_path):
    findings = host_findings(tmp_path, bot_cpus=BOT_CPUS)
    assert len(findings) == 8 and {finding["status"] for finding in findings} == {SKIP}


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
    assert len(findings) == 8 and all(finding["status"] in (PASS, WARN, FAIL, SKIP) for finding in findings)
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


@pytest.mark.parametrize("text", ["²", "1-²", "٣"])
def test_digits_that_are_not_ascii_are_not_numbers(text, tmp_path):
    assert cpu_list(text) is None
    _tree(tmp_path, {"/proc/sys/vm/swappiness": text})
    assert _by_check(host_findings(tmp_path, bot_cpus=BOT_CPUS))["swappiness"]["status"] == SKIP
