# The image of the zerocopy-host sidecar: nitro-cli and vsock-proxy, ZeroCopy, and the enclave image
# it runs. Build it where zerocopy.eif was built and measured (docs/deploy.md), from the repository
# root, with the wheel in dist/ (python3.11 -m pip wheel --no-deps -w dist .).
FROM public.ecr.aws/amazonlinux/amazonlinux:2023
RUN dnf install -y aws-nitro-enclaves-cli python3.11 python3.11-pip && dnf clean all
COPY dist/ /tmp/dist/
RUN python3.11 -m pip install --no-cache-dir /tmp/dist/zerocopy-*.whl && rm -rf /tmp/dist
COPY zerocopy.eif /opt/zerocopy/zerocopy.eif
