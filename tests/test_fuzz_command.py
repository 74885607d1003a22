"""``python -m fuzz`` (the README's fuzz command): a short run in CI, so it cannot rot.

The full run (10,000 inputs per target) is the README command; here every target gets a few
hundred inputs, and a target that crashes shows the command would report it.
"""

from __future__ import annotations

import random
from contextlib import ExitStack

from fuzz.__main__ import fuzz, main
from fuzz.targets import TARGETS, Harness, Target


def test_a_short_run_of_every_target_finds_no_crash(tmp_path, capsys):
    code = main(["--inputs", "300", "--crashes", str(tmp_path / "crashes")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for target in TARGETS:
        row = next(line for line in captured.out.splitlines() if line.startswith(target.name + " "))
        inputs, accepted, typed, crashes = (int(cell) for cell in row.split()[1:5])
        assert (inputs, crashes) == (300, 0) and accepted + typed == 300
        assert typed > 0, f"{target.name}: nothing refused, the mutations do not reach the parser"
        if target.name != "attestation":  # a mutated signed document is almost never still valid
            assert accepted > 0, f"{target.name}: nothing accepted, the seeds do not reach the parser"
    assert not (tmp_path / "crashes").exists()


def test_an_untyped_exception_is_reported_as_a_crash_and_its_input_saved(tmp_path):
    def run(data: bytes) -> None:
        if data.startswith(b"\x00"):
            raise KeyError("an untyped failure")
        raise ValueError("a typed refusal")

    target = Target("boom", "a parser with a bug", (ValueError,), lambda stack: Harness(lambda rnd: rnd.randbytes(4), run))
    with ExitStack() as stack:
        result = fuzz(target, target.open(stack), inputs=2000, seed=1, hang_seconds=5, crashes_dir=tmp_path)
    assert result.typed + len(result.crashes) == 2000 and result.crashes
    saved = sorted(tmp_path.iterdir())
    assert len(saved) == len(result.crashes) and all(path.read_bytes().startswith(b"\x00") for path in saved)
    assert "KeyError" in result.crashes[0]
