"""The documents that make claims about the code stay true to it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policy_helpers import CATALOGUES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("endpoint", [e for endpoints in CATALOGUES.values() for e in endpoints], ids=lambda e: e.name)
def test_every_catalogued_endpoint_is_documented(endpoint):
    assert f"`{endpoint.name}`" in (ROOT / "docs" / "policy.md").read_text()


@pytest.mark.parametrize(("document", "at_least"), [("SECURITY.md", 10), ("docs/fidelity.md", 20)])
def test_every_test_named_in_a_document_exists(document, at_least):
    named = 0
    for line in (ROOT / document).read_text().splitlines():
        current = None
        # `tests/file.py`, `tests/file.py::test_name`, `tests/file.py::Class::test_name`, and
        # `::test_name` (in the file named before it on the same line)
        for path, names in re.findall(r"`(tests/[\w/]+\.py)?((?:::\w+)*)`", line):
            current = path or current
            if not current or not (path or names):
                continue
            source = (ROOT / current).read_text()
            for name in filter(None, names.split("::")):
                kind = "class" if name[0].isupper() else "def"
                assert re.search(rf"^\s*{kind} {name}\b", source, re.MULTILINE), f"{current}::{name} is named in {document} but does not exist"
                named += 1
    assert named >= at_least


def test_the_readme_starts_with_the_two_setup_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    opening = lines.index("```sh long")
    block = lines[opening + 1 : opening + 3]
    assert block[0].startswith("python3 -m venv .venv") and block[0].endswith("zerocopy demo")
    assert block[1].startswith("python3 -m venv .venv") and block[1].endswith(".venv/bin/pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert block[1] in ci


def test_the_receipt_and_reason_sizes_the_documents_state_are_the_codes():
    """A receipt's bound was 1,280 bytes in SECURITY.md and 1536 in docs/protocol.md: each stated
    size must be the code's (the policy's 300-byte reason, the receipt's 320 bytes of JSON for it)."""
    from enclave.protocol.policy import document as policy
    from enclave.protocol.audit import FIELD_LIMITS, MAX_RECEIPT_BYTES

    def sizes(pattern: str, text: str) -> set[int]:
        return {int(number.replace(",", "")) for number in re.findall(pattern, text)}

    for document in ("SECURITY.md", "docs/protocol.md", "docs/policy.md"):
        text = re.sub(r"\s+", " ", (ROOT / document).read_text()).replace("**", "")
        assert sizes(r"receipt at most ([\d,]+) bytes", text) == {MAX_RECEIPT_BYTES}, document
        assert sizes(r"([\d,]+) bytes of JSON", text) <= {FIELD_LIMITS["reason"]}, document
        assert sizes(r"reason(?: \(and a policy error's message\))? (?:is |of )?at most ([\d,]+) bytes", text) <= {policy.MAX_MESSAGE_BYTES}, document
