"""Suite-wide set-up: the AF_VSOCK guard, installed before any test code runs.

vsock on these machines leads out of the sandbox; the guard refuses every AF_VSOCK connect in
this process (the emulator installs the same guard in the enclave processes it launches).
"""

from emulator.launcher import install_vsock_guard

install_vsock_guard()
