"""The ZeroCopy pytest plugin: ``pytest --zerocopy`` runs tests against the real signer code.

Registered through the ``pytest11`` entry point. Importing it loads nothing heavy: the emulator
(and moto) are imported only when a test first needs them.
"""

from __future__ import annotations

from typing import Any

import pytest

from . import factories
from .config import SETTINGS

FIXTURES = frozenset({"zerocopy_emulator", "zerocopy_signer", "zerocopy_key"})
MARKER = "zerocopy: the test talks to a ZeroCopy enclave (skipped unless --zerocopy or --zerocopy-enclave)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("zerocopy", "ZeroCopy enclave signer")
    for name, (flag, ini, help_text, kind) in SETTINGS.items():
        dest = "zerocopy" if name == "enabled" else f"zerocopy_{name}"
        if kind == "bool":
            group.addoption(flag, action="store_true", default=False, dest=dest, help=help_text)
        else:
            group.addoption(flag, action="store", default=None, dest=dest, help=help_text)
        parser.addini(ini, help_text, type="bool" if kind == "bool" else "string", default=False if kind == "bool" else None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from .config import get_config

    settings = get_config(config)
    if settings["enabled"] or settings["enclave"]:
        return
    skip = pytest.mark.skip(reason=factories.ENABLE_HINT)
    for item in items:
        if item.get_closest_marker("zerocopy") or FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip)


zerocopy_emulator = factories.emulator_proc()
zerocopy_signer = factories.signer("zerocopy_emulator")
zerocopy_key = factories.key_maker("zerocopy_emulator", "zerocopy_signer")


@pytest.fixture(autouse=True)
def _zerocopy_marked(request: pytest.FixtureRequest) -> Any:
    """Marked tests get the session emulator (and ``ZEROCOPY_ENCLAVE``) even without fixtures;
    a crashed enclave fails the test that saw it, with the enclave's log."""
    if request.node.get_closest_marker("zerocopy") is None and not FIXTURES & set(request.fixturenames):
        yield
        return
    emulator = request.getfixturevalue("zerocopy_emulator")
    yield
    emulator.check()
