"""``zerocopy stethoscope``: listen to a running enclave without touching its keys.

It connects, fetches and verifies a fresh attestation document, lists the loaded keys and their
policy digests, and times the sign path with a probe key name that is never loaded (the enclave
decodes the frame, looks the key up and answers UNKNOWN_KEY: the whole hot path but the
signature, with no receipt and no rate token spent), next to a bare echo over a local Unix socket.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["examine", "host_findings", "cpu_list"]

PROBE_KEY = "zerocopy-stethoscope-probe"


def examine(address: str, *, roots: list[Any] | None = None, expected_pcrs: dict[int, bytes] | None = None, allow_debug: bool = False, samples: int = 500) -> dict[str, Any]:
    from . import Signer, UnknownKey
    from ._latency import EchoServer, time_calls
    from .attestation import AttestationError, verify

    report: dict[str, Any] = {"address": address}
    with Signer(address) as signer:
        nonce = os.urandom(32)
        document = signer.attest(nonce)
        try:
            verified = verify(document, roots=roots, expected_pcrs=expected_pcrs, nonce=nonce, allow_debug=allow_debug)
            report["attestation"] = {"verified": True, "module_id": verified.module_id, "debug": verified.debug,
                                     "pcrs": {str(i): verified.pcrs[i].hex() for i in (0, 1, 2) if i in verified.pcrs}}
        except AttestationError as exc:
            report["attestation"] = {"verified": False, "error": f"{type(exc).__name__}: {exc}"}
        report["keys"] = [{"name": key.name, "scheme": key.scheme, "policy_sha256": key.policy_sha256} for key in signer.keys()]

        def probe() -> None:
            try:
                signer.sign(PROBE_KEY, b"probe")
            except UnknownKey:
                pass

        sign_path = time_calls(probe, samples, warmup=50)
    with EchoServer() as echo:
        baseline = time_calls(lambda: echo.roundtrip(b"x" * 48), samples, warmup=50)
    report["latency"] = {
        "sign_path_p50_us": round(sign_path.p50_us, 1), "sign_path_p99_us": round(sign_path.p99_us, 1),
        "local_echo_p50_us": round(baseline.p50_us, 1), "ratio_p50": round(sign_path.p50_us / baseline.p50_us, 2),
    }
    return report


# -- the host, read-only from /proc and /sys (as HFT host validators do) -------------------------
PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


def _finding(check: str, status: str, measured: str, cost_us: float | None, fix: str) -> dict[str, Any]:
    """One finding: what was read, its typical cost in µs on the sign path, and the fix."""
    return {"check": check, "status": status, "measured": measured, "cost_us": cost_us, "fix": fix if status in (WARN, FAIL) else ""}


class _Tree:
    """Files under ``root`` (``/`` or a fake tree): text, or None if missing or unreadable."""

    def __init__(self, root: str | os.PathLike) -> None:
        from pathlib import Path

        self.root = Path(root)

    def read(self, path: str) -> str | None:
        try:
            return (self.root / path.lstrip("/")).read_text(errors="replace").strip()[:4096]
        except (OSError, ValueError):
            return None

    def glob(self, pattern: str) -> list[str]:
        return sorted("/" + str(path.relative_to(self.root)) for path in self.root.glob(pattern.lstrip("/")))


def _digits(text: str | None) -> bool:
    """Whether ``text`` is a plain decimal number (ASCII digits only: ``"²".isdigit()`` is true)."""
    return bool(text) and text.isascii() and text.isdigit()  # type: ignore[union-attr]


def cpu_list(text: str | None) -> set[int] | None:
    """A kernel CPU list (``0-3,8,10-11``) as a set; None if it is not one (empty is the empty set)."""
    if text is None:
        return None
    cpus: set[int] = set()
    for part in filter(None, text.replace("\n", ",").split(",")):
        low, _, high = part.strip().partition("-")
        if not _digits(low) or (high and not _digits(high)) or (high and int(high) < int(low)) or int(high or low) > 65535:
            return None
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def _swappiness(tree: _Tree) -> dict[str, Any]:
    text = tree.read("/proc/sys/vm/swappiness")
    if not _digits(text):
        return _finding("swappiness", SKIP, f"unreadable: {text!r}" if text else "not found", None, "")
    value = int(text)
    status = PASS if value <= 10 else WARN
    return _finding("swappiness", status, f"vm.swappiness = {value}", 1000.0, "sysctl vm.swappiness=1 (and lock the bot's memory: mlockall); a page swapped back in costs a disk read")


def _transparent_huge_pages(tree: _Tree) -> dict[str, Any]:
    text = tree.read("/sys/kernel/mm/transparent_hugepage/enabled")
    if text is None or "[" not in text:
        return _finding("transparent huge pages", SKIP, "not found" if text is None else f"unreadable: {text!r}", None, "")
    mode = text.partition("[")[2].partition("]")[0]
    status = WARN if mode == "always" else PASS
    return _finding("transparent huge pages", status, f"enabled = {mode}", 500.0, "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled: compaction and khugepaged stall the process at random")


def _governors(tree: _Tree) -> dict[str, Any]:
    found = {path.split("/")[5]: tree.read(path) for path in tree.glob("/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")}
    if not found:
        return _finding("CPU frequency governor", SKIP, "no cpufreq (a VM, or a fixed frequency)", None, "")
    slow = sorted(cpu for cpu, governor in found.items() if governor != "performance")
    measured = ", ".join(sorted({f"{governor}" for governor in found.values() if governor})) or "unreadable"
    status = WARN if slow else PASS
    return _finding("CPU frequency governor", status, f"{measured} ({len(slow)} of {len(found)} CPUs not 'performance')", 50.0,
                    "cpupower frequency-set -g performance: a core clocked down takes tens of µs to ramp up when an order arrives")


def _c_states(tree: _Tree) -> dict[str, Any]:
    deepest: tuple[int, str] | None = None
    for path in tree.glob("/sys/devices/system/cpu/cpu*/cpuidle/state*/latency"):
        state = path.rsplit("/", 1)[0]
        latency = tree.read(path)
        if tree.read(state + "/disable") == "1" or not _digits(latency):
            continue
        if deepest is None or int(latency) > deepest[0]:
            deepest = (int(latency), tree.read(state + "/name") or state.rsplit("/", 1)[1])
    if deepest is None:
        return _finding("C-states", SKIP, "no cpuidle states enabled or found", None, "")
    status = PASS if deepest[0] <= 10 else WARN
    return _finding("C-states", status, f"deepest enabled: {deepest[1]}, exit latency {deepest[0]} µs", float(deepest[0]),
                    "disable deep C-states on the bot's cores (intel_idle.max_cstate=1 or /sys/.../cpuidle/stateN/disable): waking from them costs their exit latency")


def _isolated_cores(tree: _Tree, bot_cpus: set[int]) -> dict[str, Any]:
    isolated = cpu_list(tree.read("/sys/devices/system/cpu/isolated"))
    if isolated is None:
        return _finding("isolated cores", SKIP, "not found", None, "")
    if not isolated:
        return _finding("isolated cores", WARN, "none (isolcpus unset)", 100.0, "boot with isolcpus=/nohz_full= for the bot's cores and pin the bot there: other tasks preempt it for a scheduler tick")
    outside = sorted(bot_cpus - isolated)
    status = WARN if outside else PASS
    return _finding("isolated cores", status, f"isolated {_cpus(isolated)}; the bot may run on {_cpus(bot_cpus)}", 100.0,
                    f"pin the bot to the isolated cores (taskset -c {_cpus(isolated)}): CPUs {_cpus(set(outside))} are shared")


def _irq_affinity(tree: _Tree, bot_cpus: set[int]) -> dict[str, Any]:
    irqs = {path.split("/")[3]: cpu_list(tree.read(path)) for path in tree.glob("/proc/irq/*/smp_affinity_list")}
    if not irqs:
        return _finding("IRQ affinity", SKIP, "no /proc/irq/*/smp_affinity_list", None, "")
    hitting = sorted((irq for irq, cpus in irqs.items() if cpus and cpus & bot_cpus), key=lambda irq: int(irq) if _digits(irq) else 0)
    status = WARN if hitting else PASS
    measured = f"{len(hitting)} of {len(irqs)} IRQs may land on the bot's CPUs {_cpus(bot_cpus)}" + (f" (IRQ {', '.join(hitting[:8])}{'…' if len(hitting) > 8 else ''})" if hitting else "")
    return _finding("IRQ affinity", status, measured, 20.0, "steer IRQs off the bot's cores (echo <other cpus> > /proc/irq/N/smp_affinity_list; irqbalance --banirq or stopped)")


def _clocksource(tree: _Tree) -> dict[str, Any]:
    source = tree.read("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    if not source:
        return _finding("clocksource", SKIP, "not found", None, "")
    if source in ("tsc", "kvm-clock", "arch_sys_counter"):
        return _finding("clocksource", PASS, source, 0.03, "")
    status = FAIL if source in ("hpet", "acpi_pm") else WARN
    return _finding("clocksource", status, source, 1.5, "use the TSC (clocksource=tsc tsc=reliable): with this clock every timestamp is a system call, not a vDSO read")


def _enclave_cpus(tree: _Tree, bot_cpus: set[int]) -> dict[str, Any]:
    pool = cpu_list(tree.read("/sys/module/nitro_enclaves/parameters/ne_cpus"))
    if not pool:
        return _finding("enclave vCPUs vs the bot", SKIP, "no Nitro Enclaves CPU pool (not a Nitro parent, or none set aside)", None, "")
    if bot_cpus & pool:
        return _finding("enclave vCPUs vs the bot", FAIL, f"the bot may run on the enclave's CPUs {_cpus(bot_cpus & pool)}", 1000.0,
                        "pin the bot outside the enclave's CPU pool (allocator.yaml cpu_pool): they belong to the enclave")
    siblings: set[int] = set()
    for cpu in bot_cpus:
        siblings |= cpu_list(tree.read(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")) or set()
    shared = sorted(siblings & pool)
    if shared:
        return _finding("enclave vCPUs vs the bot", WARN, f"the bot's cores are hyperthread siblings of the enclave's CPUs {_cpus(set(shared))}", 10.0,
                        "give the enclave whole cores (both siblings) and keep the bot off them: siblings share a core's execution units and caches")
    return _finding("enclave vCPUs vs the bot", PASS, f"enclave CPUs {_cpus(pool)}, the bot on {_cpus(bot_cpus)}: no core shared", None, "")


def _cpus(cpus: set[int]) -> str:
    return ",".join(map(str, sorted(cpus))) or "none"


def host_findings(root: str | os.PathLike = "/", bot_cpus: set[int] | None = None, *, ethtool: str | None = None) -> list[dict[str, Any]]:
    """The host's latency findings, read-only from ``root``'s ``/proc`` and ``/sys`` (``/``, or a
    copy of them); ``bot_cpus`` are the CPUs the bot may run on (default: this process's). Then
    each NIC's receive offloads and interrupt coalescing from ``ethtool`` (``ethtool``: its path;
    default: the one on PATH; without one, a SKIP saying how to get it)."""
    from ._stethoscope_nic import nic_findings

    tree = _Tree(root)
    cpus = set(bot_cpus) if bot_cpus is not None else os.sched_getaffinity(0)
    return [
        _swappiness(tree), _transparent_huge_pages(tree), _governors(tree), _c_states(tree), _isolated_cores(tree, cpus),
        _irq_affinity(tree, cpus), _clocksource(tree), _enclave_cpus(tree, cpus), *nic_findings(tree, ethtool),
    ]
