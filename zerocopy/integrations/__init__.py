"""Adapters that let the HTTP clients bots already use sign through the enclave.

``zerocopy.integrations.requests.ZeroCopyAuth(signer, key)`` and
``zerocopy.integrations.httpx.ZeroCopyAuth(signer, key)``; each imports its library only when it
is imported, so ``import zerocopy`` never needs them.
"""
