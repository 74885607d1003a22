"""The Stethoscope's NIC findings: receive offloads and interrupt coalescing, from ``ethtool``.

For each interface under ``/sys/class/net`` that a device backs (``lo``, bridges, veths and other
virtual ones have no ``device`` entry), ``ethtool -k IFACE`` (offloads) and ``ethtool -c IFACE``
(coalescing) are run, read-only, and their text parsed as ethtool prints it::

    Features for eth0:                      Coalesce parameters for eth0:
    rx-checksumming: on                     Adaptive RX: off  TX: off
    \ttx-checksum-ipv4: off [fixed]          ...
    generic-receive-offload: on             rx-usecs: 20
    large-receive-offload: off [fixed]      rx-frames: 5

(ethtool before 3.x says ``Offload parameters for eth0:`` and ``tcp segmentation offload: on``; a
value a driver does not report is ``n/a``). Samples of real output are in ``tests/data/ethtool/``.
What delays a received order answer on a trading host: GRO and LRO hold segments back to merge
them, and interrupt coalescing holds the interrupt back after a packet arrives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from ._stethoscope import FAIL, PASS, SKIP, WARN, _finding

__all__ = ["nic_findings", "parse_features", "parse_coalesce"]

#: ethtool's own limit on an answer and its time: a wedged driver must not hang the Stethoscope.
ETHTOOL_TIMEOUT_S = 3.0
MAX_OUTPUT = 64 * 1024
MAX_INTERFACES = 16
#: Typical added delay per received packet, in µs: GRO merges within one NAPI poll; LRO's hardware
#: holds segments until its aggregation timer (tens of µs); adaptive coalescing raises rx-usecs
#: under load (tens to hundreds of µs).
GRO_COST_US, LRO_COST_US, ADAPTIVE_COST_US = 10.0, 30.0, 50.0
#: Intel drivers read small rx-usecs values as interrupt-throttling *modes*, not microseconds
#: (ixgbe: 1 is dynamic; igb/igc: 1 and 3; e1000/e1000e: 1 dynamic, 3 conservative, 4 simplified).
THROTTLE_MODES = {"ixgbe": {1}, "ixgbevf": {1}, "igb": {1, 3}, "igc": {1, 3}, "e1000e": {1, 3, 4}, "e1000": {1, 3, 4}}
INSTALL_HINT = "install it (dnf install ethtool, or apt-get install ethtool)"


# -- parsing ethtool's text -------------------------------------------------------------------------
def parse_features(text: str) -> dict[str, tuple[bool, bool]] | None:
    """``ethtool -k`` output as ``{feature: (on, fixed)}``; None without its header or a feature line.

    ``off [requested on]`` is off (what the driver does, not what was asked); ``[fixed]`` means
    the driver does not let it change. Old ethtool's spaced names are read with dashes.
    """
    features: dict[str, tuple[bool, bool]] = {}
    for line in _after_header(text, ("Features for ", "Offload parameters for ")):
        name, colon, rest = line.strip().partition(":")
        words = rest.split()
        if not colon or not words or words[0] not in ("on", "off") or not _is_name(name):
            continue  # a header, a "Cannot get …" line, or not ethtool's at all
        features[name.lower().replace(" ", "-")] = (words[0] == "on", "[fixed]" in rest)
    return features or None


def parse_coalesce(text: str) -> dict[str, Any] | None:
    """``ethtool -c`` output as ``{"adaptive-rx": bool|None, "rx-usecs": int|None, …}`` (None:
    ``n/a``); None without its header, or with neither adaptive-rx nor rx-usecs after it."""
    params: dict[str, Any] = {}
    for line in _after_header(text, ("Coalesce parameters for ",)):
        line = line.strip()
        if line.startswith("Adaptive RX:"):
            rx, _, tx = line[len("Adaptive RX:"):].partition("TX:")
            params["adaptive-rx"], params["adaptive-tx"] = _switch(rx), _switch(tx)
            continue
        name, colon, value = line.partition(":")
        value = value.strip()
        if colon and _is_name(name) and " " not in name and (value == "n/a" or _number(value)):
            params[name] = None if value == "n/a" else int(value)
    return params if ("adaptive-rx" in params or "rx-usecs" in params) else None


def _after_header(text: str, headers: tuple[str, ...]) -> list[str]:
    """The lines after ethtool's header for this command (none without one: not its output)."""
    lines = text.splitlines()[:4096]
    starts = [index for index, line in enumerate(lines) if line.startswith(headers)]
    return lines[starts[0] + 1:] if starts else []


def _is_name(name: str) -> bool:
    return 0 < len(name) <= 64 and name.isascii() and all(char.isalnum() or char in "-_ " for char in name)


def _number(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 9


def _switch(value: str) -> bool | None:
    value = value.strip()
    return True if value == "on" else False if value == "off" else None


# -- running it ------------------------------------------------------------------------------------
def _run(ethtool: str, option: str, iface: str) -> tuple[str | None, str]:
    """(stdout, why) of ``ethtool OPTION IFACE``: stdout None when it could not run at all."""
    try:
        returncode, stdout, stderr = _bounded_run([ethtool, option, iface])
    except subprocess.TimeoutExpired:
        return None, f"no answer in {ETHTOOL_TIMEOUT_S:g} s"
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]
    out = stdout.decode(errors="replace")
    said = (stderr.decode(errors="replace").strip() or out.strip()).splitlines()
    return out, f"exit {returncode}: {said[0][:160] if said else 'no output'}"


def _bounded_run(argv: list[str]) -> tuple[int, bytes, bytes]:
    """Run ``argv``: its exit code and at most ``MAX_OUTPUT`` bytes of each stream (the rest is
    drained and dropped), killed past ``ETHTOOL_TIMEOUT_S``."""
    import selectors
    import time

    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        kept: dict[Any, bytearray] = {process.stdout: bytearray(), process.stderr: bytearray()}
        deadline = time.monotonic() + ETHTOOL_TIMEOUT_S
        with selectors.DefaultSelector() as selector:
            for stream in kept:
                selector.register(stream, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    process.kill()
                    raise subprocess.TimeoutExpired(argv, ETHTOOL_TIMEOUT_S)
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    kept[key.fileobj] += chunk[: max(0, MAX_OUTPUT - len(kept[key.fileobj]))]
        return process.wait(max(0.1, deadline - time.monotonic())), bytes(kept[process.stdout]), bytes(kept[process.stderr])


def _interfaces(tree: Any) -> list[str]:
    """Device-backed interfaces (``/sys/class/net/IFACE/device`` exists), names ethtool can take."""
    found = []
    for path in tree.glob("/sys/class/net/*/device"):
        name = path.split("/")[4]
        if name != "lo" and 0 < len(name) <= 15 and name.isascii() and name.isprintable() and not name.startswith("-") and " " not in name:
            found.append(name)
    return found[:MAX_INTERFACES]


def _driver(tree: Any, iface: str) -> str | None:
    """The interface's driver: the name ``/sys/class/net/IFACE/device/driver`` links to."""
    try:
        return os.path.basename(os.readlink(tree.root / f"sys/class/net/{iface}/device/driver"))
    except (OSError, ValueError):
        return None


def nic_findings(tree: Any, ethtool: str | None = None) -> list[dict[str, Any]]:
    """Two findings per device-backed interface (offloads, coalescing), or one SKIP saying why not."""
    interfaces = _interfaces(tree)
    if not interfaces:
        return [_finding("NIC offloads and coalescing", SKIP, "no device-backed network interface under /sys/class/net", None, "")]
    ethtool = ethtool or shutil.which("ethtool")
    if ethtool is None:
        measured = f"ethtool is not on PATH: {INSTALL_HINT} to check GRO, LRO and interrupt coalescing of {', '.join(interfaces)}"
        return [_finding("NIC offloads and coalescing", SKIP, measured, None, "")]
    findings = []
    for iface in interfaces:
        findings.append(_offload_finding(iface, *_run(ethtool, "-k", iface)))
        findings.append(_coalesce_finding(iface, _driver(tree, iface), *_run(ethtool, "-c", iface)))
    return findings


# -- the verdicts ----------------------------------------------------------------------------------
def _offload_finding(iface: str, out: str | None, why: str) -> dict[str, Any]:
    check = f"receive offloads ({iface})"
    features = parse_features(out) if out is not None else None
    if features is None:
        return _finding(check, SKIP, f"ethtool -k {iface}: no features read ({why})", None, "")
    known = {short: features.get(name) for short, name in (("gro", "generic-receive-offload"), ("lro", "large-receive-offload"))}
    if known["gro"] is None and known["lro"] is None:
        return _finding(check, SKIP, f"ethtool -k {iface} reports neither GRO nor LRO", None, "")
    measured = ", ".join(f"{short.upper()} {_state(value)}" for short, value in known.items() if value is not None)
    on = [short for short, value in known.items() if value and value[0]]
    if not on:
        return _finding(check, PASS, measured, 0.0, "")
    status = FAIL if "lro" in on else WARN
    cost = (LRO_COST_US if "lro" in on else 0.0) + (GRO_COST_US if "gro" in on else 0.0)
    return _finding(check, status, measured, cost, _offload_fix(iface, on, known))


def _offload_fix(iface: str, on: list[str], known: dict[str, Any]) -> str:
    changeable = [short for short in on if not known[short][1]]
    stuck = [short.upper() for short in on if short not in changeable]
    steps = [f"ethtool -K {iface} {' '.join(f'{short} off' for short in changeable)}"] if changeable else []
    if stuck:
        steps.append(f"{'/'.join(stuck)} is fixed on by the driver: only another driver or NIC turns it off")
    why = "GRO and LRO hold received segments back to merge them before the stack sees them"
    return "; ".join(steps) + f" ({why}; persist it with a udev rule or NetworkManager's ethtool.feature-gro/-lro off)"


def _state(value: tuple[bool, bool]) -> str:
    return ("on" if value[0] else "off") + (" [fixed]" if value[1] else "")


def _coalesce_finding(iface: str, driver: str | None, out: str | None, why: str) -> dict[str, Any]:
    check = f"interrupt coalescing ({iface})"
    params = parse_coalesce(out) if out is not None else None
    if params is None:
        return _finding(check, SKIP, f"ethtool -c {iface}: no coalescing read ({why})", None, "")
    usecs, adaptive = params.get("rx-usecs"), params.get("adaptive-rx")
    fix = (f"ethtool -C {iface} adaptive-rx off rx-usecs 0 (or the lowest the driver takes): the NIC then interrupts at once for each "
           "packet — more interrupts and CPU, least delay; keep those IRQs off the bot's cores")
    now = f"rx-usecs {usecs}" if usecs is not None else "rx-usecs n/a"
    if adaptive:
        return _finding(check, WARN, f"adaptive-rx on ({now} now): the driver raises the delay as traffic rises", ADAPTIVE_COST_US, fix)
    if usecs is not None and usecs in THROTTLE_MODES.get(driver or "", set()):
        return _finding(check, WARN, f"{now} on {driver} selects a dynamic interrupt-throttling mode, not {usecs} µs", ADAPTIVE_COST_US, fix)
    if usecs is None:
        return _finding(check, SKIP, f"ethtool -c {iface} reports no rx-usecs (adaptive-rx {_switch_name(adaptive)})", None, "")
    status = PASS if usecs <= 4 else WARN if usecs <= 50 else FAIL
    waits = "interrupts as soon as a packet arrives" if usecs == 0 else f"waits up to {usecs} µs after a packet to interrupt"
    return _finding(check, status, f"adaptive-rx {_switch_name(adaptive)}, {now}: the NIC {waits}", float(usecs), fix)


def _switch_name(value: bool | None) -> str:
    return "on" if value else "off" if value is False else "n/a"
