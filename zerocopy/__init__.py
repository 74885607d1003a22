"""ZeroCopy: exchange API secrets in an AWS Nitro Enclave, signatures over vsock."""

from .errors import ZeroCopyError

__all__ = ["ZeroCopyError"]
