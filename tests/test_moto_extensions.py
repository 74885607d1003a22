"""The emulator patches moto's internals only for a moto it was tested with, and says so at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emulator.kms.moto_extensions import TESTED_MOTO, IncompatibleMoto, check_moto

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_moto_has_every_internal_the_emulator_uses():
    check_moto()


def test_pyproject_pins_moto_to_the_tested_range():
    extra = re.search(r'^emulator = \[(.*)\]', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    low, high = (".".join(map(str, bound)) for bound in TESTED_MOTO)
    assert f'"moto[server]>={low},<{high}"' in extra, extra


@pytest.mark.parametrize("version", ["5.1.9", "5.3.0", "6.0.0"])
def test_a_moto_outside_the_tested_range_is_refused(version):
    with pytest.raises(IncompatibleMoto, match=rf"moto {re.escape(version)} is not in the range"):
        check_moto(installed=version)


@pytest.mark.parametrize(
    ("internal", "words"),
    [
        (("moto.kms.models", "KmsBackend.create_key", ("self", "key_usage", "policy")), "takes ('self', 'policy', 'key_usage')"),
        (("moto.kms.models", "KmsBackend.no_such_method", None), "has no moto.kms.models.KmsBackend.no_such_method"),
        (("moto.sts.models", "AssumedRole.__init__", ("self", "account_id", "policy_arns")), "AssumedRole.__init__ takes"),
    ],
)
def test_a_changed_moto_internal_is_refused(internal, words):
    with pytest.raises(IncompatibleMoto, match=re.escape(words)):
        check_moto(internals=(internal,))
