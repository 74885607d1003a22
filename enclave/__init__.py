"""The ZeroCopy signer that runs inside an AWS Nitro Enclave.

This package is the enclave image: it imports only the standard library, cryptography, cbor2,
asn1crypto and boto3/botocore, and never the emulator or the host package (a test checks the
import closure). Devices and endpoints are chosen by launch options (``python -m enclave --help``).
"""

__version__ = "0.1.0"
