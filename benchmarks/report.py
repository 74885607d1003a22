"""Issue 12's figures from one run: each with its target, whether it holds and by how much it is
missed; written as JSON, as a Markdown table, and as a latency histogram (PNG, if matplotlib is
installed: ``pip install 'zerocopy[bench]'``)."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path


def machine() -> dict[str, object]:
    """Where the figures come from: CPUs, their model, the load."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "load_average": [round(load, 2) for load in os.getloadavg()],
            "python": platform.python_version(), "kernel": platform.release()}


def figure(ident: str, label: str, value: float, unit: str, *, at_most: float | None = None, at_least: float | None = None) -> dict[str, object]:
    """One figure; with a target (``at_most`` or ``at_least``), whether it holds and the gap."""
    entry: dict[str, object] = {"id": ident, "label": label, "value": value, "unit": unit, "target": None, "met": None, "gap": ""}
    if at_most is not None:
        entry.update(target=f"≤ {at_most:g}", met=value <= at_most, gap="" if value <= at_most else f"{value / at_most:.2f}× over")
    elif at_least is not None:
        entry.update(target=f"≥ {at_least:g}", met=value >= at_least, gap="" if value >= at_least else f"{value / at_least:.2f}× of it")
    return entry


def _shown(value: float, unit: str) -> str:
    if unit in ("×", "s"):
        return f"{value:.2f} {unit}" if unit == "s" else f"{value:.2f}×"
    return f"{value:,.0f} {unit}" if abs(value) >= 100 else f"{value:.1f} {unit}"


def markdown(report: dict) -> str:
    """The figures as a Markdown table, headed by the machine they were measured on."""
    host = report["machine"]
    lines = [
        f"Measured on {host['nproc']} CPUs (`nproc`), model {host['cpu_model']} (`/proc/cpuinfo`), load average "
        f"{', '.join(map(str, host['load_average']))} at the start (`/proc/loadavg`), Python {host['python']}; mode: {report['settings']['mode']}.",
        "",
        "| figure | measured | target | |",
        "| --- | --- | --- | --- |",
    ]
    for entry in report["figures"]:
        verdict = "" if entry["met"] is None else ("met" if entry["met"] else f"missed: {entry['gap']}")
        lines.append(f"| {entry['label']} | {_shown(entry['value'], entry['unit'])} | {entry['target'] or ''} | {verdict} |")
    return "\n".join(lines) + "\n"


def check_finite(report: dict) -> None:
    bad = [entry["id"] for entry in report["figures"] if not isinstance(entry["value"], (int, float)) or not math.isfinite(entry["value"])]
    if bad:
        raise ValueError(f"figures without a finite value: {', '.join(bad)}")


def write(report: dict, histograms: dict[str, list[int]], out: Path) -> list[str]:
    """``results.json``, ``results.md`` and (with matplotlib) ``latency.png`` in ``out``; the
    notes to print (one line if the picture was skipped)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(markdown(report))
    try:
        import matplotlib
    except ImportError:
        return ["matplotlib is not installed (pip install 'zerocopy[bench]'): latency.png not drawn; JSON and table written"]
    matplotlib.use("Agg")
    _histogram(histograms, out / "latency.png", report["machine"])
    return []


def _histogram(histograms: dict[str, list[int]], path: Path, host: dict) -> None:
    import matplotlib.pyplot as plt
    import numpy

    lowest = max(1.0, min(min(samples) for samples in histograms.values()) / 1000)
    highest = max(max(samples) for samples in histograms.values()) / 1000
    bins = numpy.logspace(math.log10(lowest), math.log10(highest), 80)
    figure_, axes = plt.subplots(figsize=(10, 5.5))
    for label, samples in histograms.items():
        latencies = numpy.asarray(samples) / 1000
        # Each bin's share of the series' samples (not a density: on a log axis the wide bins of
        # a slow series would flatten it to nothing).
        axes.hist(latencies, bins=bins, weights=numpy.full(len(latencies), 1 / len(latencies)), histtype="step", linewidth=1.6,
                  label=f"{label} (p50 {numpy.median(latencies):,.0f} µs)", linestyle="--" if "floor" in label else "-")
    axes.set_xscale("log")
    axes.set_xlabel("round trip, µs (log scale)")
    axes.set_ylabel("share of round trips")
    axes.set_title(f"Sign round trips: ZeroCopy, its floors, and KMS GenerateMac on loopback ({host['nproc']} CPUs, load {host['load_average'][0]})")
    axes.legend(fontsize=8)
    figure_.tight_layout()
    figure_.savefig(path, dpi=110)
    plt.close(figure_)
