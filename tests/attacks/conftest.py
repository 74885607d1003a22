"""The compromised-host scenario, as tests: each attack an attacker on the parent instance would try.

Every test here attacks the way SECURITY.md's attacker would — root on the host, its files, its AWS
credentials, the vsock — against the real enclave code on the emulator, and asserts the attacker
gets nothing. Test files are named ``test_attack_*.py``; the helpers of the main suite (``tests/``)
are importable from here too.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
