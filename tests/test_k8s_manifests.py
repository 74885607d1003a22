"""The Kubernetes manifests in deploy/k8s (issue 13, scale-out on EKS): every document is valid
against Kubernetes' published OpenAPI schemas in strict mode (unknown fields refused), through
``kubernetes-validate`` (the ``test`` extra; its schemas' origin is in tests/data/PROVENANCE.md),
and says what the deployment guide says: one enclave per node through the AWS Nitro Enclaves
device plugin, ``zerocopy host`` as the pod's sidecar with a command the CLI accepts, and the bot
pointed at the enclave on its own node."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
#: The oldest Kubernetes minor EKS supports in standard support as these files were written; native
#: sidecars (an init container with restartPolicy: Always) need 1.29 or later.
KUBERNETES_VERSION = "1.33"
DEVICE = "aws.ec2.nitro/nitro_enclaves"


def _validator():
    return pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra: pip install -e '.[test]'")


def documents() -> list[tuple[str, dict]]:
    found = []
    for path in MANIFESTS:
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document is not None:
                found.append((f"{path.name}#{index}", document))
    return found


def daemonsets() -> list[dict]:
    return [document for _, document in documents() if document["kind"] == "DaemonSet"]


def test_there_are_manifests_and_an_enclave_daemonset():
    assert MANIFESTS and daemonsets()


@pytest.mark.parametrize(("name", "document"), documents(), ids=[name for name, _ in documents()])
def test_the_manifest_is_valid_against_the_kubernetes_schema(name, document):
    _validator().validate(document, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_misspelt_field():
    """The check above can fail: a field Kubernetes does not know is refused."""
    document = daemonsets()[0]
    broken = dict(document, spec=dict(document["spec"], template=dict(document["spec"]["template"], spec=dict(document["spec"]["template"]["spec"], nodeSelecter={"a": "b"}))))
    validator = _validator()
    with pytest.raises(validator.ValidationError, match="nodeSelecter"):
        validator.validate(broken, KUBERNETES_VERSION, strict=True)


def _memory_mib(quantity: str) -> int:
    units = {"Mi": 1, "Gi": 1024}
    return int(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("daemonset", daemonsets(), ids=lambda document: document["metadata"]["name"])
def test_one_enclave_per_node_with_the_agent_as_sidecar_and_the_bot_beside_it(daemonset):
    from zerocopy._cli import build_parser

    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["aws-nitro-enclaves-k8s-dp"] == "enabled"  # the device plugin's node label
    (sidecar,) = [container for container in pod["initContainers"] if container.get("restartPolicy") == "Always"]
    assert sidecar["resources"]["limits"][DEVICE] == "1"  # one enclave per pod, one pod per node (DaemonSet)
    args = build_parser().parse_args(sidecar["command"][1:])
    assert sidecar["command"][0] == "zerocopy" and args.handler.__name__ == "cmd_host" and args.json
    assert _memory_mib(sidecar["resources"]["limits"]["hugepages-2Mi"]) >= args.memory  # the enclave's memory comes from hugepages
    group = daemonset["metadata"]["labels"]["zerocopy/key-group"]
    assert pod["nodeSelector"]["zerocopy/key-group"] == group
    bundles = {volume["name"]: volume for volume in pod["volumes"]}["bundles"]
    assert bundles["secret"]["secretName"] == f"zerocopy-bundles-{group}"
    assert {mount["mountPath"] for mount in sidecar["volumeMounts"] if mount["name"] == "bundles"} == set(args.bundles)
    enclave = f"vsock://{args.enclave_cid}:5000"
    assert shlex.join(sidecar["startupProbe"]["exec"]["command"]) == f"zerocopy keys --enclave {enclave}"
    for bot in pod["containers"]:
        environment = {variable["name"]: variable for variable in bot["env"]}
        assert environment["ZEROCOPY_ENCLAVE"]["value"] == enclave
        assert environment["ZEROCOPY_EXPECTED_PCR0"]["valueFrom"]["configMapKeyRef"] == {"name": "zerocopy-image", "key": "pcr0"}


def test_the_node_launch_template_is_valid_ec2_input_and_carries_the_user_data_file():
    """deploy/k8s/launch-template.json (aws ec2 create-launch-template's --launch-template-data)
    validates against botocore's EC2 model, enables enclaves, keeps IMDSv2 reachable from pods (hop
    limit 2, so the sidecar reads the node role's credentials) and its UserData is the MIME file."""
    import base64
    import json

    import botocore.session
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    template = json.loads((ROOT / "deploy" / "k8s" / "launch-template.json").read_text())
    operation = botocore.session.get_session().get_service_model("ec2").operation_model("CreateLaunchTemplate")
    validate_parameters({"LaunchTemplateName": "zerocopy-enclave-nodes", "LaunchTemplateData": template}, operation.input_shape)
    assert template["EnclaveOptions"] == {"Enabled": True}
    assert template["MetadataOptions"]["HttpTokens"] == "required" and template["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert base64.b64decode(template["UserData"]) == (ROOT / "deploy" / "k8s" / "node-user-data.mime").read_bytes()
    with pytest.raises(ParamValidationError, match="EnclaveOption"):
        validate_parameters({"LaunchTemplateName": "x", "LaunchTemplateData": {"EnclaveOption": {"Enabled": True}}}, operation.input_shape)


def test_the_node_user_data_sets_aside_what_the_sidecar_runs(tmp_path):
    """The node user data's shell part, run by bash against the allocator file aws-nitro-enclaves-cli
    installs (tests/data/nitro/allocator.yaml), with dnf and systemctl recording what they are asked:
    it installs the CLI, leaves the file valid YAML with exactly the sidecar's --cpu-count and
    --memory (the commented examples untouched), and enables the allocator."""
    import email
    import os
    import subprocess

    from zerocopy._cli import build_parser

    message = email.message_from_bytes((ROOT / "deploy" / "k8s" / "node-user-data.mime").read_bytes())
    (script,) = [part.get_payload(decode=True).decode() for part in message.walk() if part.get_content_type() == "text/x-shellscript"]
    allocator = tmp_path / "allocator.yaml"
    original = (ROOT / "tests" / "data" / "nitro" / "allocator.yaml").read_text()
    allocator.write_text(original)
    assert script.count("/etc/nitro_enclaves/allocator.yaml") == 1
    (tmp_path / "bin").mkdir()
    for tool in ("dnf", "systemctl"):
        fake = tmp_path / "bin" / tool
        fake.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/called"\n')
        fake.chmod(0o755)
    script = script.replace("/etc/nitro_enclaves/allocator.yaml", str(allocator))
    environment = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    subprocess.run(["bash", "-c", script], check=True, env=environment, timeout=30)
    sizes = {(args.memory, args.cpu_count) for args in (build_parser().parse_args(sidecar["command"][1:]) for sidecar in _sidecars())}
    ((memory, cpu_count),) = sizes  # every node runs the same enclave size
    assert yaml.safe_load(allocator.read_text()) == {"memory_mib": memory, "cpu_count": cpu_count}
    assert [line for line in allocator.read_text().splitlines() if line.startswith("#")] == [line for line in original.splitlines() if line.startswith("#")]
    assert (tmp_path / "called").read_text().splitlines() == ["dnf install -y aws-nitro-enclaves-cli", "systemctl enable --now nitro-enclaves-allocator.service"]


def _sidecars() -> list[dict]:
    return [
        container
        for daemonset in daemonsets()
        for container in daemonset["spec"]["template"]["spec"]["initContainers"]
        if container.get("restartPolicy") == "Always"
    ]
