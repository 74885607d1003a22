"""Every fenced code block in README.md, SECURITY.md and docs/*.md runs, or is checked, as written.

A block's info string says what it is, and so how it is tested; a block without one of these
fails the test, so a block added later is covered or refused:

* ``sh`` — commands for the shell ``zerocopy emulator up`` prints exports for: the test starts
  ``zerocopy emulator up`` as a real process, takes its ``export`` lines, and runs each ``sh`` block
  in bash, in document order (the secret ``zerocopy seal`` reads comes on stdin).
* ``python`` — a script, run in a fresh interpreter in that same environment, after the ``sh``
  blocks. The only change made to its text: the exchange's URL becomes a local fake exchange, a
  real HTTP server that verifies every signature it receives.
* ``python pytest`` — a test file of a new project: all of them are run by ``pytest --zerocopy``
  in an empty directory, as a strategy team would after pasting them.
* ``sh production`` — needs AWS or Nitro (``sudo``, ``aws``, ``docker``, ``nitro-cli``): not run;
  each ``zerocopy`` command is parsed by the CLI's own parser, each ``aws kms`` command checked
  against botocore's KMS model (operation and options), each file it names must exist.
* ``sh long`` — long runs (setup, benchmarks, fuzzing): each line must be one of
  :data:`LONG_COMMANDS`, each named with the test that runs it in a shorter form.
* ``toml`` — a signing policy: parsed and checked by ``zerocopy.policy`` for its scheme.
* ``text`` — output shown for reading: not checked.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from fake_exchange import serving

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", "SECURITY.md", *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md"))]
KINDS = {"sh", "python", "python pytest", "sh production", "sh long", "toml", "text"}
#: The Binance documentation's example key (public), sealed by the README's operator commands.
BINANCE_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
BINANCE_SECRET = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
EXCHANGE_URL = "https://api.binance.com"
#: ``sh long`` commands, verbatim, and where the suite runs each (a shorter form, or CI itself).
LONG_COMMANDS = {
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[emulator]' && .venv/bin/zerocopy demo": "tests/test_cli.py::test_demo_runs_end_to_end",
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest": "tests/test_docs.py::test_the_readme_starts_with_the_two_setup_commands",
    ".venv/bin/python benchmarks/bench_sign.py": "tests/test_doc_blocks.py::test_the_benchmark_command_runs_a_short_round",
    ".venv/bin/python benchmarks/run_all.py": "tests/test_benchmarks_command.py::test_the_quick_run_writes_every_figure_finite_as_json_and_table",
    ".venv/bin/pytest tests/attacks": "tests/attacks/test_attack_generate.py",
    ".venv/bin/python -m fuzz": "tests/test_fuzz_command.py::test_a_short_run_of_every_target_finds_no_crash",
    ".venv/bin/python benchmarks/load_fault.py": "tests/test_load_fault_command.py::test_a_short_run_loses_nothing_and_recovers",
}
STARTUP_SECONDS = 90


@dataclass(frozen=True)
class Block:
    document: str
    line: int  # of the opening fence
    kind: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def code_blocks(document: str) -> list[Block]:
    """The fenced blocks of ``document``, each with its info string."""
    blocks, opened, lines = [], None, []
    for number, line in enumerate((ROOT / document).read_text().splitlines(), start=1):
        fence = re.match(r"\s*```(.*)$", line)
        if fence and opened is None:
            opened, lines = (number, fence[1].strip()), []
        elif fence and not fence[1].strip():
            blocks.append(Block(document, opened[0], opened[1], "\n".join(lines) + "\n"))
            opened = None
        elif opened is not None:
            lines.append(line)
    assert opened is None, f"{document}:{opened[0]}: a code block is never closed"
    return blocks


ALL_BLOCKS = [block for document in DOCUMENTS for block in code_blocks(document)]


def of_kind(kind: str) -> list[Block]:
    return [block for block in ALL_BLOCKS if block.kind == kind]


def test_every_block_says_how_it_is_tested():
    unmarked = [f"{block.id}: ```{block.kind}" for block in ALL_BLOCKS if block.kind not in KINDS]
    assert not unmarked, f"blocks with no known info string (one of {sorted(KINDS)}; see this file's docstring): {unmarked}"
    assert len(of_kind("sh")) >= 1 and len(of_kind("python")) >= 3 and len(of_kind("python pytest")) >= 2


# == python pytest: a new project's tests ==========================================================
def test_the_pytest_blocks_pass_in_a_new_project(tmp_path):
    """The test authors' blocks pasted into files of an empty project and run with ``pytest
    --zerocopy`` (the plugin starts its own emulator), as the README says."""
    blocks = of_kind("python pytest")
    for block in blocks:
        (tmp_path / f"test_readme_{block.line}.py").write_text(block.text)
    environment = _base_environment(tmp_path)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--zerocopy", str(tmp_path)]
    result = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, timeout=300)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0 and f"{len(blocks)} passed" in output, output


def _requirement_name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\\[<>=!~; ]", requirement, maxsplit=1)[0]).lower()


def test_the_test_authors_install_command_installs_what_their_blocks_import():
    """A newcomer's venv holds what the quick start's ``pip install …`` line installs: every module
    the test authors' blocks import comes with it (the extras it names included)."""
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    section = (ROOT / "README.md").read_text().split("## Quick start for test authors", 1)[1].split("\n## ", 1)[0]
    install = re.search(r"`pip install ([^`]+)`", section)
    assert install, "the test authors' quick start names no `pip install` command"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = set()
    for requirement in shlex.split(install.group(1)):
        if requirement == "-e":
            continue
        assert _requirement_name(requirement) != "zerocopy", "`zerocopy` from PyPI is an unrelated project: install this repository"
        installed.add(_requirement_name(requirement))
        with_extras = re.fullmatch(r"\.\[([\w,-]+)\]", requirement)  # this repository, with extras
        for extra in with_extras.group(1).split(",") if with_extras else []:
            installed |= {_requirement_name(each) for each in extras[extra]}
    ours = {"zerocopy", "pytest_zerocopy", "emulator"}
    distributions = packages_distributions()
    for block in of_kind("python pytest"):
        for node in ast.walk(ast.parse(block.text)):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for module in {name.split(".")[0] for name in names} - ours - set(sys.stdlib_module_names):
                providers = {_requirement_name(each) for each in distributions.get(module, [])}
                assert providers & installed, f"{block.id} imports {module}, which `pip install {install.group(1)}` does not install"


# == blocks not run here ===========================================================================
@pytest.mark.parametrize("block", of_kind("toml"), ids=lambda block: block.id)
def test_the_toml_block_is_a_valid_policy(block):
    from zerocopy.policy import checked_policy, load_policy

    document = load_policy(block.text)
    assert document, f"{block.id} is empty"
    checked_policy(document, document.get("scheme") or "binance-hmac")


@pytest.mark.parametrize("block", of_kind("sh long"), ids=lambda block: block.id)
def test_the_long_commands_are_each_run_in_a_shorter_form_by_the_suite(block):
    for line in filter(None, block.text.splitlines()):
        assert line in LONG_COMMANDS, f"{block.id}: {line!r} is not a known long command (add it to LONG_COMMANDS with the test that runs it)"
        path, _, name = LONG_COMMANDS[line].partition("::")
        source = (ROOT / path).read_text()
        assert not name or re.search(rf"^def {name}\b", source, re.MULTILINE), f"{LONG_COMMANDS[line]} does not exist"


def test_the_benchmark_command_runs_a_short_round():
    """``benchmarks/bench_sign.py`` (a README ``sh long`` command) with few samples and no floods."""
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_sign.py"), "--samples", "20", "--rounds", "1", "--no-flood", "--json"]
    result = subprocess.run(command, env=_base_environment(ROOT), cwd=ROOT, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    report = json.loads(result.stdout)
    assert report["sign_p50_us"] > 0 and report["sign_request_p50_us"] > 0 and report["echo_p50_us"] > 0
    assert report["pipelined_signs_per_second"] > 0


# == sh production: commands parsed and checked, not run ===========================================
#: Values for the variables production blocks use (what an operator's shell would hold).
SAMPLE_ENVIRONMENT = {
    "ZEROCOPY_EXPECTED_PCR0": "ab" * 48, "AWS_ACCOUNT_ID": "123456789012", "AWS_DEFAULT_REGION": "us-east-1",
    "BINANCE_API_KEY": BINANCE_API_KEY, "ZEROCOPY_PREVIOUS_PCR0": "cd" * 48,  # docs/deploy.md, upgrading the image
}
# Not checkable here beyond the repository files they name (deploy/…, enclave/…: those must exist).
EXTERNAL_TOOLS = {"docker", "nitro-cli", "dnf", "systemctl", "journalctl", "useradd", "usermod", "install", "jq", "python3.11", "pip", "kubectl"}
REPOSITORY_PATHS = ("deploy/", "enclave/", "docs/")
AWS_GLOBAL_OPTIONS = {"--query", "--output", "--region", "--profile", "--endpoint-url"}


def _substitutions(line: str) -> tuple[str, list[str]]:
    """``line`` with each outermost ``$(...)`` replaced by a word, and the commands inside them."""
    inner, out, depth, start = [], [], 0, 0
    index = 0
    while index < len(line):
        if line.startswith("$(", index):
            if depth == 0:
                start = index + 2
            depth += 1
            index += 2
            continue
        if line[index] == ")" and depth:
            depth -= 1
            if depth == 0:
                inner.append(line[start:index])
                out.append("SUBSTITUTED")
            index += 1
            continue
        if depth == 0:
            out.append(line[index])
        index += 1
    assert depth == 0, f"unbalanced $( in {line!r}"
    return "".join(out), inner


def shell_commands(text: str, variables: dict[str, str]) -> list[list[str]]:
    """The simple commands of a block (continuations joined, comments, redirections and
    ``&&``/``|``/``;`` split off, ``$(...)`` included, ``NAME=$(...)`` assignments defining NAME),
    with variables expanded from ``variables``; an undefined one fails."""
    commands: list[list[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        assignment = re.match(r"(\w+)=(.*)$", line.strip())
        if assignment:
            variables[assignment[1]] = "SUBSTITUTED"
            line = assignment[2]
        line, inner = _substitutions(line)
        for command in inner:
            commands.extend(shell_commands(command, variables))
        if assignment:
            continue  # NAME=value runs nothing but what $(...) in the value runs

        def expand(match: re.Match) -> str:
            name = match[1] or match[2]
            assert name in variables, f"the block uses ${name}, which SAMPLE_ENVIRONMENT does not define"
            return variables[name]

        lexer = shlex.shlex(re.sub(r"\$(?:\{(\w+)\}|(\w+))", expand, line), posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        words, skip = [], False
        for token in list(lexer) + [";"]:
            if skip:
                skip = False
            elif token in (">", ">>", "<", "2>"):
                skip = True
            elif token in ("&&", "||", "|", ";"):
                commands.extend([words] if words else [])
                words = []
            else:
                words.append(token)
    return commands


def check_zerocopy(words: list[str]) -> None:
    from zerocopy._cli import build_parser

    try:
        build_parser().parse_args(words[1:])
    except SystemExit as exit:
        raise AssertionError(f"`{shlex.join(words)}` is not a valid zerocopy command (exit {exit.code})") from None


def check_aws(words: list[str]) -> None:
    import botocore.session
    from botocore import xform_name

    service = words[1]
    assert service in botocore.session.get_session().get_available_services(), f"`{shlex.join(words)}`: aws has no service {service}"
    model = botocore.session.get_session().get_service_model(service)
    operations = {xform_name(name, "-"): name for name in model.operation_names}
    assert words[2] in operations, f"`aws {service} {words[2]}` is not a {service} operation"
    members = {"--" + xform_name(name, "-") for name in model.operation_model(operations[words[2]]).input_shape.members}
    for option in (word for word in words[3:] if word.startswith("--")):
        assert option in members | AWS_GLOBAL_OPTIONS, f"`aws {service} {words[2]}` has no option {option}"
        value = words[words.index(option) + 1]
        if value.startswith("file://"):
            path = value[len("file://"):]
            assert path.endswith(".json"), f"{option} {value}: a file the block writes"
            assert not path.startswith(REPOSITORY_PATHS) or (ROOT / path).exists(), f"{option} {value}: not in the repository"


def check_command(words: list[str]) -> None:
    words = words[1:] if words[0] == "sudo" else words
    if words[0] == "zerocopy":
        check_zerocopy(words)
    elif words[0] == "aws":
        check_aws(words)
    else:
        assert Path(words[0]).name in EXTERNAL_TOOLS, f"`{shlex.join(words)}`: {words[0]} is not a tool these checks know"
        for word in words[1:]:
            if word.startswith(REPOSITORY_PATHS):
                assert (ROOT / word).exists(), f"`{shlex.join(words)}` names {word}, which is not in the repository"
        if words[0] == "docker" and "-f" in words:  # docker build -f DOCKERFILE
            assert (ROOT / words[words.index("-f") + 1]).exists(), f"`{shlex.join(words)}` names a file that does not exist"


@pytest.mark.parametrize("block", of_kind("sh production"), ids=lambda block: block.id)
def test_the_production_block_has_valid_commands(block):
    commands = shell_commands(block.text, dict(SAMPLE_ENVIRONMENT))
    assert commands, f"{block.id} has no commands"
    for words in commands:
        check_command(words)


def test_the_production_checks_refuse_what_would_not_run():
    bad = [
        "zerocopy kms-policy --pcr0 nothex --account 123456789012",
        "aws kms create-keys --policy file://key-policy.json",
        "aws kms create-key --polcy file://key-policy.json",
        "docker build -f enclave/NoSuchDockerfile enclave/",
        "sudo install -m 0644 deploy/systemd/no-such.service /etc/systemd/system/",
        "aws ec2 run-instances --enclave-option Enabled=true",
        "aws nosuchservice describe-things",
        "rm -rf /",
    ]
    for text in bad:
        with pytest.raises(AssertionError):
            for words in shell_commands(text, dict(SAMPLE_ENVIRONMENT)):
                check_command(words)
    with pytest.raises(AssertionError, match="UNDEFINED"):
        shell_commands("zerocopy keys --enclave $UNDEFINED", {})


# == the emulator's shell ==========================================================================
def _read_until_ready(process: subprocess.Popen, deadline: float) -> str:
    """``emulator up``'s stderr up to the line saying it runs; its exit or the deadline fails."""
    seen = ""
    while "emulator running" not in seen:
        ready, _, _ = select.select([process.stderr], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(process.stderr.fileno(), 4096).decode(errors="replace") if ready else ""
        if not chunk:
            raise AssertionError(f"zerocopy emulator up did not start (exit {process.poll()}):\n{seen}")
        seen += chunk
    return seen


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (Ctrl-C too stops it, unless started where SIGINT is ignored, as a background job
    of a non-interactive shell); then the emulator must be gone, with everything it made."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError("zerocopy emulator up did not stop within 30 s of SIGTERM") from None


def exports(text: str) -> dict[str, str]:
    """The variables of ``export NAME=VALUE`` lines (values shell-quoted), as a shell would set them."""
    found = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            (found[name],) = shlex.split(value)
    return found


def _base_environment(work: Path) -> dict[str, str]:
    """A shell's environment: this interpreter's ``bin`` (where ``zerocopy`` is) first on PATH, this
    tree's code importable, nothing of this test process's AWS or ZeroCopy settings."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "ZEROCOPY_"))}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    environment["HOME"] = str(work)  # no ~/.aws of the machine's
    return environment


@pytest.fixture(scope="module")
def emulator_shell(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """``zerocopy emulator up`` running, its exports, and every ``sh`` block run in order in bash
    with them (results kept per block, for the tests below to judge one by one)."""
    work = tmp_path_factory.mktemp("operator")
    environment = _base_environment(work)
    output, exported = work / "emulator-up.out", {}
    with open(output, "wb") as stdout:
        process = subprocess.Popen(["zerocopy", "emulator", "up"], stdout=stdout, stderr=subprocess.PIPE, env=environment, cwd=work)
    try:
        _read_until_ready(process, time.monotonic() + STARTUP_SECONDS)
        exported = exports(output.read_text())
        environment.update(exported, BINANCE_API_KEY=BINANCE_API_KEY)
        results = {}
        for block in of_kind("sh"):
            results[block.id] = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.text], input=BINANCE_SECRET + b"\n",
                env=environment, cwd=work, capture_output=True, timeout=120,
            )  # fmt: skip
        yield SimpleNamespace(environment=environment, work=work, exported=exported, results=results, process=process)
    finally:
        _stop(process)
        process.stderr.close()
    run_dir = Path(exported.get("ZEROCOPY_ATTESTATION_ROOT", "/nonexistent/root.pem")).parent
    assert process.returncode == 0 and not run_dir.exists(), f"emulator up left {run_dir} or exited {process.returncode}"


def test_emulator_up_exports_what_the_operator_commands_need(emulator_shell):
    exported = emulator_shell.exported
    assert exported["AWS_DEFAULT_REGION"] == exported["AWS_REGION"] and exported["AWS_ACCOUNT_ID"].isdigit()
    assert Path(exported["ZEROCOPY_ATTESTATION_ROOT"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert len(bytes.fromhex(exported["ZEROCOPY_EXPECTED_PCR0"])) == 48
    assert {"ZEROCOPY_ENCLAVE", "ZEROCOPY_KMS_ENDPOINT", "ZEROCOPY_KMS_CA", "AWS_SESSION_TOKEN"} <= set(exported)


def test_alias_zerocopy_has_the_policy_zerocopy_kms_policy_prints_for_the_image(emulator_shell):
    """The key ``emulator up`` made under alias/zerocopy: ``zerocopy kms-policy --pcr0 <PCR0>``'s
    policy, with the host role as a second sealer (one shell seals and provisions)."""
    import boto3

    exported = emulator_shell.exported
    account = exported["AWS_ACCOUNT_ID"]
    sealers = [f"arn:aws:iam::{account}:root", f"arn:aws:iam::{account}:role/zerocopy-emulator"]
    command = ["zerocopy", "kms-policy", "--pcr0", exported["ZEROCOPY_EXPECTED_PCR0"], "--account", account, *(f"--sealer={arn}" for arn in sealers)]
    printed = subprocess.run(command, env=emulator_shell.environment, capture_output=True, check=True).stdout
    operator = boto3.session.Session(
        aws_access_key_id=exported["ZEROCOPY_KMS_OPERATOR_ACCESS_KEY_ID"], aws_secret_access_key=exported["ZEROCOPY_KMS_OPERATOR_SECRET_ACCESS_KEY"],
        region_name=exported["AWS_DEFAULT_REGION"],
    )  # fmt: skip
    kms = operator.client("kms", endpoint_url=exported["ZEROCOPY_KMS_ENDPOINT"], verify=exported["ZEROCOPY_KMS_CA"])
    try:
        key_id = kms.describe_key(KeyId="alias/zerocopy")["KeyMetadata"]["KeyId"]  # GetKeyPolicy takes no alias, as on AWS
        policy = kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
    finally:
        kms.close()
    assert json.loads(policy) == json.loads(printed)


@pytest.mark.parametrize("block", of_kind("sh"), ids=lambda block: block.id)
def test_the_shell_block_runs_as_written_in_the_emulators_shell(block, emulator_shell):
    result = emulator_shell.results[block.id]
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{block.id} failed as written (exit {result.returncode}):\n{output.decode(errors='replace')}"
    assert BINANCE_SECRET not in output


def test_the_operator_commands_leave_a_loaded_key_and_a_verified_document(emulator_shell):
    """What the README's operator block is for: binance-main sealed under alias/zerocopy (pinned
    to the emulated image), loaded, and the enclave's document verified under the emulator's root
    that ``$ZEROCOPY_ATTESTATION_ROOT`` names, for the PCR0 in ``$ZEROCOPY_EXPECTED_PCR0`` (each
    said on stderr)."""
    outputs = b"".join(result.stdout + result.stderr for result in emulator_shell.results.values()).decode()
    assert "loaded binance-main" in outputs and "VERIFIED (PCRs 0 as expected)" in outputs
    assert f"pinning the image in $ZEROCOPY_EXPECTED_PCR0: PCR0 {emulator_shell.exported['ZEROCOPY_EXPECTED_PCR0']}" in outputs
    assert f"trusting the attestation root in $ZEROCOPY_ATTESTATION_ROOT ({emulator_shell.exported['ZEROCOPY_ATTESTATION_ROOT']})" in outputs
    bundle = (emulator_shell.work / "binance-main.sealed.json").read_bytes()
    assert BINANCE_SECRET not in bundle and b'"scheme": "binance-hmac"' in bundle.replace(b'":"', b'": "')


@pytest.fixture(scope="module")
def exchange() -> Iterator[object]:
    with serving() as fake:
        fake.key = SimpleNamespace(name="binance-main", scheme="binance-hmac", secret=BINANCE_SECRET, api_key=BINANCE_API_KEY)
        yield fake


@pytest.mark.parametrize("block", of_kind("python"), ids=lambda block: block.id)
def test_the_python_block_runs_as_written_in_the_emulators_shell(block, emulator_shell, exchange):
    script = emulator_shell.work / f"block-{block.line}.py"
    script.write_text(block.text.replace(EXCHANGE_URL, exchange.url))
    sent_before = len(exchange.received)
    result = subprocess.run([sys.executable, str(script)], env=emulator_shell.environment, cwd=emulator_shell.work, capture_output=True, timeout=120)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"{block.id} failed as written:\n{output}"
    assert BINANCE_SECRET.decode() not in output
    for request in exchange.received[sent_before:]:  # what it sent the exchange is signed right
        exchange.verify(request)
    assert (EXCHANGE_URL in block.text) == (len(exchange.received) > sent_before)
