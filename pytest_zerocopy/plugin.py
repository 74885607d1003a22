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
    from .config import check_config, get_config

    check_config(get_config(config))  # a bad setting is one usage error now, not a failure per test


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[factories.CURRENT_TEST] = item.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """A comparison with a test key's secret or passphrase is explained without either side's
    content: pytest's own explanation of ``bytes == bytes`` quotes the bytes that differ."""
    from .keys import SecretBytes, SecretText

    if not isinstance(left, (SecretBytes, SecretText)) and not isinstance(right, (SecretBytes, SecretText)):
        return None
    return [
        f"{_shown(left)} {op} {_shown(right)}",
        "a test key's secret is not shown in reports; compare signatures made with it instead",
    ]


def _shown(value: Any) -> str:
    from .keys import SecretBytes, SecretText

    if isinstance(value, (SecretBytes, SecretText)):
        return repr(value)
    try:
        return f"<{type(value).__name__} of length {len(value)}>"
    except Exception:  # no len(), or one that fails: the type says enough
        return f"<{type(value).__name__}>"


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
