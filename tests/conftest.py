"""Suite-wide set-up: the AF_VSOCK guard, installed before any test code runs.

vsock on these machines leads out of the sandbox; the guard refuses every AF_VSOCK connect in
this process (the emulator installs the same guard in the enclave processes it launches). And
no test runs the machine's real ``ethtool``: the Stethoscope's NIC tests put a fake one on PATH.
"""

import os
import sys
import tempfile

from emulator.launcher import install_vsock_guard

install_vsock_guard()


def _refuse_a_real_ethtool(event: str, args: tuple) -> None:
    """No test runs this machine's ``ethtool`` against its NICs: only a fake one, written under
    the temporary directory (the Stethoscope reports the refusal as a SKIP, as any OSError)."""
    if event != "subprocess.Popen":
        return
    executable, argv = args[0], args[1]
    program = executable if executable is not None else (argv[0] if isinstance(argv, (list, tuple)) and argv else argv)
    program = os.fsdecode(program) if isinstance(program, (str, bytes, os.PathLike)) else ""
    if os.path.basename(program) == "ethtool" and not os.path.realpath(program).startswith(os.path.realpath(tempfile.gettempdir()) + os.sep):
        raise PermissionError(f"the test suite never runs a real ethtool ({program}): put a fake one on PATH")


sys.addaudithook(_refuse_a_real_ethtool)
