"""Key policy evaluation for the emulated KMS (emulator/kms/policy.py).

Policies here follow the shapes in AWS's docs: the Nitro Enclaves example statement from
https://docs.aws.amazon.com/kms/latest/developerguide/conditions-nitro-enclaves.html and the
default "Enable IAM User Permissions" statement, plus the deny-without-attestation statement
ZeroCopy's key policies carry (docs/DESIGN.md).
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.kms.policy import (
    MAX_POLICY_LENGTH,
    AuthorizationRequest,
    Decision,
    IdentityPolicy,
    KeyPolicy,
    MalformedPolicyDocument,
)

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
IMAGE = "9fedcba8abcdef7abcdef6abcdef5abcdef4abcdef3abcdef2abcdef1abcdef1abcdef0abcdef1abcdef2abcdef3abcdef4abc"
PCR1 = "abcdef0abcdef1abcdef2abcdef3abcdef4abcdef5abcdef6abcdef7abcdef8abcdef9abcdef0abcdef1abcdef2abcdef3abc"
IMAGE_KEY = "kms:RecipientAttestation:ImageSha384"
PCR1_KEY = "kms:RecipientAttestation:PCR1"


def policy(*statements: dict) -> KeyPolicy:
    return KeyPolicy.parse(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


def statement(effect: str = "Allow", action: str | list[str] = "kms:*", **extra) -> dict:
    root = {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    return {"Effect": effect, "Principal": root, "Action": action, "Resource": "*"} | extra


def ctx(**kwargs: str | list[str]) -> dict:
    """Condition keys are not Python identifiers: ``ctx(image=..., pcr1=...)`` and friends."""
    names = {"image": IMAGE_KEY, "pcr1": PCR1_KEY, "name": "kms:EncryptionContext:zerocopy:name"}
    return {names.get(k, k): v for k, v in kwargs.items()}


ROOT = f"arn:aws:iam::{ACCOUNT}:root"
# The Nitro example's role, as its sessions call KMS (an instance profile's session is the instance id).
ENCLAVE_HOST = f"arn:aws:sts::{ACCOUNT}:assumed-role/data-processing/i-0abc"


def decide(p: KeyPolicy, action: str = "kms:Decrypt", account: str = ACCOUNT, context: dict | None = None, principal: str = "", role_arn: str | None = None) -> Decision:
    """``p`` on one request; a session's role is at path ``/`` unless ``role_arn`` says otherwise."""
    if role_arn is None:
        role_arn = _role_at_root_path(principal)
    return p.evaluate(AuthorizationRequest(action, KEY_ARN, account, context or {}, principal, role_arn))


def _role_at_root_path(principal: str) -> str:
    match = re.fullmatch(r"arn:aws:sts::(\d{12}):assumed-role/([^/]+)/[^/]+", principal)
    return f"arn:aws:iam::{match.group(1)}:role/{match.group(2)}" if match else ""


# --- the AWS Nitro Enclaves example ----------------------------------------------------------

NITRO_EXAMPLE = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Enable enclave data processing",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/data-processing"},
            "Action": [
                "kms:Decrypt",
                "kms:DeriveSharedSecret",
                "kms:GenerateDataKey",
                "kms:GenerateDataKeyPair",
                "kms:GenerateRandom",
            ],
            "Resource": "*",
            "Condition": {"StringEqualsIgnoreCase": {IMAGE_KEY: IMAGE, PCR1_KEY: PCR1}},
        }
    ],
}


class TestNitroExample:
    p = KeyPolicy.parse(json.dumps(NITRO_EXAMPLE))

    def test_matching_attestation_is_allowed(self):
        d = decide(self.p, context=ctx(image=IMAGE, pcr1=PCR1), principal=ENCLAVE_HOST)
        # The statement names the session's role: the role's boundary and session policies must allow too.
        assert d == Decision(True, "allowed by statement 'Enable enclave data processing' (within the caller's permissions boundary and session policies)", grant="bounded")
        assert d  # truthiness follows .allowed

    def test_ignore_case_accepts_upper_case_hex(self):
        assert decide(self.p, context=ctx(image=IMAGE.upper(), pcr1=PCR1.upper()), principal=ENCLAVE_HOST).allowed

    def test_one_pcr_differs(self):
        d = decide(self.p, context=ctx(image=IMAGE, pcr1="00" * 48))
        assert d == Decision(False, "no statement allows kms:Decrypt")
        assert not d

    def test_no_attestation_keys(self):
        assert decide(self.p) == Decision(False, "no statement allows kms:Decrypt")

    def test_only_one_attestation_key(self):
        assert not decide(self.p, context=ctx(image=IMAGE)).allowed

    def test_action_not_listed(self):
        d = decide(self.p, action="kms:Encrypt", context=ctx(image=IMAGE, pcr1=PCR1))
        assert d == Decision(False, "no statement allows kms:Encrypt")

    def test_condition_key_names_are_case_insensitive(self):
        context = {IMAGE_KEY.lower(): IMAGE, PCR1_KEY.upper(): PCR1}
        assert decide(self.p, context=context, principal=ENCLAVE_HOST).allowed

    def test_the_role_only(self):
        # A role ARN in a key policy means that role (any of its sessions), not its account.
        context = ctx(image=IMAGE, pcr1=PCR1)
        assert not decide(self.p, context=context).allowed  # the account root
        assert not decide(self.p, context=context, principal=f"arn:aws:sts::{ACCOUNT}:assumed-role/other-role/i-0abc").allowed
        assert not decide(self.p, context=context, principal=f"arn:aws:iam::{ACCOUNT}:user/data-processing").allowed
        assert decide(self.p, context=context, principal=f"arn:aws:sts::{ACCOUNT}:assumed-role/Data-Processing/s").allowed

    def test_other_account_does_not_match(self):
        d = decide(self.p, account=OTHER_ACCOUNT, context=ctx(image=IMAGE, pcr1=PCR1))
        assert d == Decision(False, "no statement allows kms:Decrypt")


# --- admin Allow kms:* plus Deny without attestation ----------------------------------------

ADMIN_WITH_ATTESTATION_DENY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "DenyWithoutAttestation",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["kms:Decrypt", "kms:ReEncrypt*", "kms:CreateGrant"],
            "Resource": "*",
            "Condition": {"StringNotEqualsIgnoreCase": {IMAGE_KEY: IMAGE}},
        },
    ],
}


class TestDenyWithoutAttestation:
    p = KeyPolicy.parse(json.dumps(ADMIN_WITH_ATTESTATION_DENY))

    @pytest.mark.parametrize("action", ["kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:CreateGrant"])
    def test_plain_call_is_denied(self, action):
        assert decide(self.p, action=action) == Decision(
            False, "explicitly denied by statement 'DenyWithoutAttestation'"
        )

    def test_attested_decrypt_with_right_measurement(self):
        d = decide(self.p, context=ctx(image=IMAGE))
        assert d == Decision(True, "allowed by statement 'Enable IAM User Permissions'", grant="direct")

    def test_attested_decrypt_with_wrong_measurement(self):
        d = decide(self.p, context=ctx(image="ff" * 48))
        assert d == Decision(False, "explicitly denied by statement 'DenyWithoutAttestation'")

    @pytest.mark.parametrize(
        "action", ["kms:GenerateDataKey", "kms:Encrypt", "kms:DescribeKey", "KMS:generatedatakey"]
    )
    def test_other_actions_allowed(self, action):
        assert decide(self.p, action=action).allowed

    def test_deny_applies_to_other_accounts_too(self):
        # Principal "*" on the Deny; the Allow does not match the other account anyway.
        d = decide(self.p, account=OTHER_ACCOUNT)
        assert d.reason == "explicitly denied by statement 'DenyWithoutAttestation'"


NEXT_IMAGE = "ab" * 48


class TestRolloverOfTwoImages:
    """A condition key with several values (``zerocopy kms-policy --pcr0 A --pcr0 B``): the Allow's
    ``StringEqualsIgnoreCase`` holds if the request's value is any of them, the Deny's negated
    operator only if it is none of them (AWS: values of one key are ORed, and negated, NORed)."""

    p = policy(
        statement("Allow", ["kms:Decrypt"], Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:role/data-processing"}, Condition={"StringEqualsIgnoreCase": {IMAGE_KEY: [IMAGE, NEXT_IMAGE]}}),
        {"Sid": "DenyUnlessAttested", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringNotEqualsIgnoreCase": {IMAGE_KEY: [IMAGE, NEXT_IMAGE]}}},
    )

    @pytest.mark.parametrize("image", [IMAGE, NEXT_IMAGE, NEXT_IMAGE.upper()])
    def test_either_image_is_allowed(self, image):
        assert decide(self.p, context=ctx(image=image), principal=ENCLAVE_HOST).allowed

    @pytest.mark.parametrize("context", [ctx(image="cd" * 48), ctx(image=IMAGE + NEXT_IMAGE), {}], ids=["third-image", "both-joined", "no-attestation"])
    def test_anything_else_is_explicitly_denied(self, context):
        decision = decide(self.p, context=context, principal=ENCLAVE_HOST)
        assert not decision.allowed and decision.denied and "DenyUnlessAttested" in decision.reason


# --- Deny wins, conditions ---------------------------------------------------------------------


def test_deny_wins_over_allow_in_any_order():
    allow = statement("Allow", Sid="A")
    deny = statement("Deny", "kms:Decrypt", Sid="D")
    for order in ([allow, deny], [deny, allow]):
        assert decide(policy(*order)) == Decision(False, "explicitly denied by statement 'D'")


def test_first_matching_allow_named_and_index_without_sid():
    p = policy(statement("Allow", "kms:Encrypt"), statement("Allow", "kms:Decrypt"))
    assert decide(p) == Decision(True, "allowed by Statement[1]", grant="direct")
    p = policy(statement("Allow"), statement("Deny", "kms:Decrypt"))
    assert decide(p) == Decision(False, "explicitly denied by Statement[1]")


def test_no_statement_matches_is_implicit_deny():
    assert decide(policy(statement("Allow", "kms:Encrypt"))) == Decision(False, "no statement allows kms:Decrypt")


def test_several_values_are_ored():
    p = policy(statement(Condition={"StringEquals": {IMAGE_KEY: ["aa", "bb", "cc"]}}))
    assert decide(p, context=ctx(image="bb")).allowed
    assert decide(p, context=ctx(image="cc")).allowed
    assert not decide(p, context=ctx(image="dd")).allowed


def test_negated_operator_with_several_values_is_nor():
    p = policy(statement(), statement("Deny", Condition={"StringNotEquals": {IMAGE_KEY: ["aa", "bb"]}}))
    assert decide(p, context=ctx(image="aa")).allowed
    assert decide(p, context=ctx(image="bb")).allowed
    assert not decide(p, context=ctx(image="cc")).allowed


def test_several_keys_are_anded():
    p = policy(statement(Condition={"StringEquals": {IMAGE_KEY: "aa", PCR1_KEY: "bb"}}))
    assert decide(p, context=ctx(image="aa", pcr1="bb")).allowed
    assert not decide(p, context=ctx(image="aa", pcr1="xx")).allowed
    assert not decide(p, context=ctx(image="aa")).allowed


def test_several_operators_are_anded():
    p = policy(statement(Condition={"StringEquals": {IMAGE_KEY: "aa"}, "StringLike": {PCR1_KEY: "b*"}}))
    assert decide(p, context=ctx(image="aa", pcr1="bcd")).allowed
    assert not decide(p, context=ctx(image="aa", pcr1="cd")).allowed
    assert not decide(p, context=ctx(image="ab", pcr1="bcd")).allowed


def test_string_equals_is_case_sensitive_for_hex():
    p = policy(statement(Condition={"StringEquals": {IMAGE_KEY: IMAGE}}))
    assert decide(p, context=ctx(image=IMAGE)).allowed
    assert not decide(p, context=ctx(image=IMAGE.upper())).allowed


def test_string_equals_treats_wildcards_literally():
    p = policy(statement(Condition={"StringEquals": {IMAGE_KEY: "a*"}}))
    assert not decide(p, context=ctx(image="abc")).allowed
    assert decide(p, context=ctx(image="a*")).allowed


def test_string_like_wildcards_and_case():
    p = policy(statement(Condition={"StringLike": {"kms:EncryptionContext:zerocopy:name": "bin?nce-*"}}))
    assert decide(p, context=ctx(name="binance-main")).allowed
    assert decide(p, context=ctx(name="binXnce-")).allowed
    assert not decide(p, context=ctx(name="Binance-main")).allowed  # StringLike is case-sensitive
    assert not decide(p, context=ctx(name="bnance-main")).allowed


def test_string_not_like():
    p = policy(statement(), statement("Deny", Condition={"StringNotLike": {IMAGE_KEY: "ab*"}}))
    assert decide(p, context=ctx(image="abcd")).allowed
    assert not decide(p, context=ctx(image="xbcd")).allowed
    assert not decide(p).allowed  # negated operator on a missing key is true: the Deny fires


def test_missing_key_positive_false_negated_true():
    positive = policy(statement(Condition={"StringEquals": {IMAGE_KEY: "aa"}}))
    negated = policy(statement(Condition={"StringNotEquals": {IMAGE_KEY: "aa"}}))
    assert not decide(positive).allowed
    assert decide(negated).allowed


def test_if_exists():
    p = policy(statement(Condition={"StringEqualsIfExists": {IMAGE_KEY: "aa"}}))
    assert decide(p).allowed  # absent: true
    assert decide(p, context=ctx(image="aa")).allowed
    assert not decide(p, context=ctx(image="bb")).allowed  # present: compared as StringEquals


def test_negated_if_exists_on_missing_key_is_true():
    p = policy(statement(), statement("Deny", Condition={"StringNotEqualsIgnoreCaseIfExists": {IMAGE_KEY: "AA"}}))
    assert not decide(p).allowed
    assert decide(p, context=ctx(image="aa")).allowed
    assert not decide(p, context=ctx(image="bb")).allowed


def test_null():
    must_be_absent = policy(statement(Condition={"Null": {IMAGE_KEY: "true"}}))
    must_be_present = policy(statement(Condition={"Null": {IMAGE_KEY: False}}))
    assert decide(must_be_absent).allowed
    assert not decide(must_be_absent, context=ctx(image="aa")).allowed
    assert not decide(must_be_present).allowed
    assert decide(must_be_present, context=ctx(image="aa")).allowed


def test_null_deny_without_attestation():
    p = policy(statement(), statement("Deny", "kms:Decrypt", Condition={"Null": {IMAGE_KEY: "true"}}))
    assert not decide(p).allowed
    assert decide(p, context=ctx(image="anything")).allowed


def test_bool():
    p = policy(statement(Condition={"Bool": {"kms:GrantIsForAWSResource": True}}))
    assert decide(p, context={"kms:GrantIsForAWSResource": "true"}).allowed
    assert decide(p, context={"kms:GrantIsForAWSResource": "TRUE"}).allowed
    assert not decide(p, context={"kms:GrantIsForAWSResource": "false"}).allowed
    assert not decide(p).allowed
    if_exists = policy(statement(Condition={"BoolIfExists": {"kms:GrantIsForAWSResource": "false"}}))
    assert decide(if_exists).allowed
    assert not decide(if_exists, context={"kms:GrantIsForAWSResource": "true"}).allowed


class TestSetOperators:
    keys = "kms:EncryptionContextKeys"

    def test_for_any_value(self):
        p = policy(statement(Condition={"ForAnyValue:StringEquals": {self.keys: ["zerocopy:name", "x"]}}))
        assert decide(p, context={self.keys: ["other", "zerocopy:name"]}).allowed
        assert not decide(p, context={self.keys: ["other", "more"]}).allowed
        assert not decide(p).allowed  # no values: false
        assert not decide(p, context={self.keys: []}).allowed  # an empty set counts as absent

    def test_for_all_values(self):
        p = policy(statement(Condition={"ForAllValues:StringLike": {self.keys: "zerocopy:*"}}))
        assert decide(p, context={self.keys: ["zerocopy:name", "zerocopy:scheme"]}).allowed
        assert not decide(p, context={self.keys: ["zerocopy:name", "evil"]}).allowed
        assert decide(p).allowed  # vacuously true, as AWS documents

    def test_for_all_values_with_null_guard(self):
        p = policy(
            statement(
                Condition={
                    "ForAllValues:StringEquals": {self.keys: ["a", "b"]},
                    "Null": {self.keys: "false"},
                }
            )
        )
        assert not decide(p).allowed
        assert decide(p, context={self.keys: ["a"]}).allowed

    def test_for_all_values_negated(self):
        p = policy(statement(Condition={"ForAllValues:StringNotEquals": {self.keys: ["bad"]}}))
        assert decide(p, context={self.keys: ["a", "b"]}).allowed
        assert not decide(p, context={self.keys: ["a", "bad"]}).allowed

    def test_for_any_value_negated(self):
        p = policy(statement(Condition={"ForAnyValue:StringNotEquals": {self.keys: ["a"]}}))
        assert decide(p, context={self.keys: ["a", "b"]}).allowed
        assert not decide(p, context={self.keys: ["a"]}).allowed
        assert not decide(p).allowed

    def test_no_prefix_on_list_value(self):
        # Documented choice: positive = any request value matches; negated = none matches.
        positive = policy(statement(Condition={"StringEquals": {self.keys: "a"}}))
        negated = policy(statement(Condition={"StringNotEquals": {self.keys: "a"}}))
        assert decide(positive, context={self.keys: ["b", "a"]}).allowed
        assert not decide(negated, context={self.keys: ["b", "a"]}).allowed
        assert decide(negated, context={self.keys: ["b", "c"]}).allowed


def test_encryption_context_conditions():
    p = policy(
        statement(
            Condition={
                "StringEquals": {
                    "kms:EncryptionContext:zerocopy:name": "binance-main",
                    "kms:EncryptionContext:zerocopy:scheme": "binance-hmac",
                }
            }
        )
    )
    good = {
        "kms:EncryptionContext:zerocopy:name": "binance-main",
        "kms:EncryptionContext:zerocopy:scheme": "binance-hmac",
    }
    assert decide(p, context=good).allowed
    assert not decide(p, context=good | {"kms:EncryptionContext:zerocopy:scheme": "bybit-hmac"}).allowed
    assert not decide(p, context={"kms:EncryptionContext:zerocopy:name": "binance-main"}).allowed
    # The context-key part of the condition key is case-insensitive, the value is not.
    assert decide(p, context={k.upper(): v for k, v in good.items()}).allowed
    assert not decide(p, context=good | {"kms:EncryptionContext:zerocopy:name": "Binance-Main"}).allowed


def test_context_keys_differing_only_by_case_are_denied():
    p = policy(statement())
    d = decide(p, context={"kms:EncryptionContext:Name": "a", "kms:EncryptionContext:name": "b"})
    assert d == Decision(False, "request context has condition keys that differ only by case")


# --- actions, resources, principals ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "action", "matches"),
    [
        ("kms:*", "kms:Decrypt", True),
        ("*", "kms:Decrypt", True),
        ("kms:ReEncrypt*", "kms:ReEncryptFrom", True),
        ("kms:ReEncrypt*", "kms:ReEncrypt", True),
        ("kms:ReEncrypt*", "kms:Decrypt", False),
        ("kms:Decrypt", "KMS:DECRYPT", True),
        ("KMS:decrypt", "kms:Decrypt", True),
        ("kms:Generate*Key", "kms:GenerateDataKey", True),
        ("kms:Generate*Key", "kms:GenerateDataKeyPair", False),
        ("kms:?ecrypt", "kms:Decrypt", True),
        ("kms:?ecrypt", "kms:ecrypt", False),
        ("s3:*", "kms:Decrypt", False),
    ],
)
def test_action_wildcards(pattern, action, matches):
    assert decide(policy(statement(action=pattern)), action=action).allowed is matches


def test_not_action():
    p = policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": ACCOUNT},
            "NotAction": ["kms:Decrypt", "kms:ReEncrypt*"],
            "Resource": "*",
        }
    )
    assert decide(p, action="kms:Encrypt").allowed
    assert not decide(p, action="kms:Decrypt").allowed
    assert not decide(p, action="kms:ReEncryptTo").allowed


def test_resource_and_not_resource():
    p = policy(statement(Resource=f"arn:aws:kms:*:{ACCOUNT}:key/*"))
    assert decide(p).allowed
    p = policy(statement(Resource=f"arn:aws:kms:us-east-1:{ACCOUNT}:key/other"))
    assert not decide(p).allowed
    p = policy(statement(Resource=KEY_ARN.replace("key/1234abcd", "key/1234ABCD")))
    assert not decide(p).allowed  # resource ARNs compare case-sensitively
    no_res = statement()
    del no_res["Resource"]
    p = policy(no_res | {"NotResource": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/other"})
    assert decide(p).allowed
    p = policy(no_res | {"NotResource": KEY_ARN})
    assert not decide(p).allowed


@pytest.mark.parametrize(
    ("principal", "matches"),
    [
        ("*", True),
        ({"AWS": "*"}, True),
        ({"AWS": ACCOUNT}, True),
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, True),
        # The caller here is the account root: a role or a session principal is not the root.
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:role/enclave-host"}, False),
        ({"AWS": f"arn:aws:sts::{ACCOUNT}:assumed-role/enclave-host/i-0abc"}, False),
        ({"AWS": OTHER_ACCOUNT}, False),
        ({"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}, False),
        ({"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:role/enclave-host"}, False),
        ({"AWS": [f"arn:aws:iam::{OTHER_ACCOUNT}:root", ACCOUNT]}, True),
    ],
)
def test_principals(principal, matches):
    p = policy(statement(Principal=principal))
    assert decide(p).allowed is matches


def test_other_account_principal_deny_does_not_apply():
    p = policy(statement(), statement("Deny", Principal={"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}))
    assert decide(p).allowed


def test_single_statement_object_and_2008_version():
    p = KeyPolicy.parse(json.dumps({"Version": "2008-10-17", "Id": "key-default-1", "Statement": statement()}))
    assert p.version == "2008-10-17" and p.policy_id == "key-default-1"
    assert decide(p).allowed


def test_parse_accepts_bytes_and_exposes_condition_keys():
    p = KeyPolicy.parse(json.dumps(NITRO_EXAMPLE).encode())
    assert p.condition_keys == {IMAGE_KEY.lower(), PCR1_KEY.lower()}
    assert decide(p, context=ctx(image=IMAGE, pcr1=PCR1), principal=ENCLAVE_HOST).allowed


def test_key_policy_is_immutable():
    p = policy(statement())
    with pytest.raises(AttributeError):
        p.version = "2008-10-17"  # type: ignore[misc]


def test_request_context_is_snapshotted():
    context = {IMAGE_KEY: IMAGE}
    r = AuthorizationRequest("kms:Decrypt", KEY_ARN, ACCOUNT, context)
    context[IMAGE_KEY] = "changed"
    p = policy(statement(Condition={"StringEquals": {IMAGE_KEY: IMAGE}}))
    assert p.evaluate(r).allowed


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"action": "Decrypt"}, ValueError),
        ({"account_id": "123"}, ValueError),
        ({"account_id": 111122223333}, TypeError),
        ({"context": {"k:k": 5}}, TypeError),
        ({"context": {"k:k": b"ab"}}, TypeError),
        ({"context": [("k:k", "v")]}, TypeError),
    ],
)
def test_request_validates_itself(kwargs, error):
    base = {"action": "kms:Decrypt", "resource": KEY_ARN, "account_id": ACCOUNT, "context": {}}
    with pytest.raises(error):
        AuthorizationRequest(**(base | kwargs))


# --- malformed policies ------------------------------------------------------------------------


def _doc(**statement_extra) -> str:
    s = statement(**statement_extra)
    return json.dumps({"Version": "2012-10-17", "Statement": [s]})


def _without(field: str) -> str:
    s = statement()
    del s[field]
    return json.dumps({"Version": "2012-10-17", "Statement": [s]})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "policy is empty"),
        ("{not json", "policy is not JSON"),
        ("[]", "policy must be a JSON object, not a list"),
        ('{"Version": "2012-10-17"}', "Statement is missing"),
        ('{"Statement": []}', "Version is missing"),
        ('{"Version": "2012-10-17", "Statement": []}', "Statement is an empty list"),
        ('{"Version": "2012-10-17", "Statement": "x"}', "Statement must be an object or a list, not a string"),
        ('{"Version": "2013-01-01", "Statement": {}}', "Version must be '2012-10-17' or '2008-10-17'"),
        ('{"Version": ["2012-10-17"], "Statement": {}}', "Version must be"),
        ('{"Version": "2012-10-17", "Statement": [], "Extra": 1}', "policy: unknown field 'Extra'"),
        ('{"Version": "2012-10-17", "Version": "2012-10-17", "Statement": []}', "duplicate JSON key 'Version'"),
        ('{"Version": NaN, "Statement": []}', "NaN is not a JSON value"),
        (_doc(Effect="Maybe"), "Statement[0].Effect must be 'Allow' or 'Deny', not 'Maybe'"),
        (_doc(Effect="allow"), "Statement[0].Effect must be 'Allow' or 'Deny'"),
        (_doc(Resources="*"), "Statement[0]: unknown field 'Resources'"),
        (_doc(NotPrincipal={"AWS": ACCOUNT}), "Statement[0]: NotPrincipal is not supported"),
        (_doc(Principal={"Service": "ec2.amazonaws.com"}), "principal type 'Service' is not supported"),
        (_doc(Principal={"AWS": "arn:aws:iam::1234:root"}), "invalid principal"),
        (_doc(Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:role/*"}), "invalid principal"),
        (_doc(Principal={}), "Statement[0].Principal is empty"),
        (_without("Principal"), "Statement[0]: Principal is missing"),
        (_without("Effect"), "Statement[0]: Effect is missing"),
        (_without("Action"), "Statement[0]: Action or NotAction is missing"),
        (_without("Resource"), "Statement[0]: Resource or NotResource is missing"),
        (_doc(NotAction="kms:Decrypt"), "both Action and NotAction given"),
        (_doc(Action=[]), "Statement[0].Action is an empty list"),
        (_doc(Action="Decrypt"), "invalid action 'Decrypt'"),
        (_doc(Action=["kms:Decrypt", 7]), "Statement[0].Action must hold non-empty strings, not 7"),
        (_doc(Resource="key/1"), "resource must be '*' or an ARN"),
        (_doc(Sid=3), "Statement[0].Sid must be a string"),
        (_doc(Condition={"StringEqual": {IMAGE_KEY: "aa"}}), "unknown or unsupported condition operator 'StringEqual'"),
        (_doc(Condition={"NumericEquals": {"kms:X": "1"}}), "unsupported condition operator 'NumericEquals'"),
        (_doc(Condition={"NullIfExists": {IMAGE_KEY: "true"}}), "unsupported condition operator 'NullIfExists'"),
        (_doc(Condition={"ForAnyValue:Null": {IMAGE_KEY: "true"}}), "Null takes no set operator"),
        (_doc(Condition={"ForSomeValues:StringEquals": {IMAGE_KEY: "a"}}), "condition operator 'ForSomeValues:"),
        (
            _doc(Condition={"ForAnyValue:ForAllValues:StringEquals": {IMAGE_KEY: "a"}}),
            "unsupported condition operator 'ForAnyValue:ForAllValues:StringEquals'",
        ),
        (_doc(Condition={"StringEquals": {IMAGE_KEY: None}}), "a condition value must be a string, not null"),
        (_doc(Condition={"StringEquals": {IMAGE_KEY: 1.5}}), "a condition value must be a string, not a number"),
        (_doc(Condition={"StringEquals": {IMAGE_KEY: []}}), "has no values"),
        (_doc(Condition={"StringEquals": {}}), "Condition.StringEquals has no condition keys"),
        (_doc(Condition={"StringEquals": "x"}), "Condition.StringEquals must be an object"),
        (_doc(Condition=["x"]), "Statement[0].Condition must be an object, not a list"),
        (_doc(Condition={"StringEquals": {"nocolon": "x"}}), "invalid condition key 'nocolon'"),
        (_doc(Condition={"Bool": {"aws:SecureTransport": "yes"}}), "Bool takes 'true' or 'false'"),
        (_doc(Condition={"StringEquals": {"aws:username": "${aws:username}"}}), "policy variables are not supported"),
        ('{"Version": "2012-10-17", "Statement": [1]}', "Statement[0] must be an object, not a number"),
        (
            json.dumps({"Version": "2012-10-17", "Statement": [statement(Sid="x"), statement(Sid="x")]}),
            "duplicate Sid 'x'",
        ),
        ('{"Version": "2012-10-17", "Statement": {"Sid": "\u2603"}}', "character KMS does not allow: U+2603"),
        ("[" * 5000, "policy is not JSON"),
        ("{" + " " * MAX_POLICY_LENGTH + "}", f"the limit is {MAX_POLICY_LENGTH}"),
    ],
)
def test_malformed(text, message):
    with pytest.raises(MalformedPolicyDocument) as excinfo:
        KeyPolicy.parse(text)
    assert message in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


def test_malformed_bytes():
    with pytest.raises(MalformedPolicyDocument, match="not UTF-8"):
        KeyPolicy.parse(b"\xff\xfe{}")


def test_parse_rejects_non_text():
    with pytest.raises(TypeError):
        KeyPolicy.parse({"Version": "2012-10-17"})  # type: ignore[arg-type]


def test_policy_variables_are_literal_in_2008_version():
    doc = {"Version": "2008-10-17", "Statement": [statement(Condition={"StringEquals": {"aws:username": "${x}"}})]}
    p = KeyPolicy.parse(json.dumps(doc))
    assert decide(p, context={"aws:username": "${x}"}).allowed


# --- properties ---------------------------------------------------------------------------------

_FIELDS = [
    "Version", "Id", "Statement", "Sid", "Effect", "Principal", "NotPrincipal", "AWS", "Action",
    "NotAction", "Resource", "NotResource", "Condition", "StringEquals", "StringNotEqualsIgnoreCase",
    "StringLikeIfExists", "ForAnyValue:StringEquals", "ForAllValues:StringNotLike", "Null", "Bool",
    IMAGE_KEY, PCR1_KEY,
]  # fmt: skip
_SCALARS = [
    "2012-10-17", "2008-10-17", "Allow", "Deny", "*", "kms:*", "kms:Decrypt", "kms:ReEncrypt*",
    ACCOUNT, f"arn:aws:iam::{ACCOUNT}:root", KEY_ARN, "true", "false", IMAGE, "${x}",
]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(_SCALARS),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
near_policies = st.fixed_dictionaries(
    {"Version": st.sampled_from(["2012-10-17", "2008-10-17"]) | json_values},
    optional={"Statement": json_values | st.lists(st.dictionaries(st.sampled_from(_FIELDS), json_values), max_size=3)},
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, near_policies))
def test_arbitrary_json_only_raises_malformed(document):
    text = json.dumps(document)
    try:
        p = KeyPolicy.parse(text)
    except MalformedPolicyDocument:
        return
    # Whatever parses must also evaluate without raising.
    assert isinstance(decide(p, context=ctx(image=IMAGE)), Decision)


def _or_junk(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly ``valid``, one time in eight any JSON value: reaches the parser's deeper checks."""
    return st.integers(0, 7).flatmap(lambda n: json_values if n == 0 else valid)


_operators = st.sampled_from(
    [
        "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
        "StringLike", "StringNotLike", "StringEqualsIfExists", "StringNotLikeIfExists", "Bool",
        "BoolIfExists", "Null", "ForAnyValue:StringEquals", "ForAllValues:StringNotEqualsIgnoreCase",
        "ForAnyValue:StringLikeIfExists", "NumericEquals", "stringequals", "Null" + "IfExists",
    ]
)  # fmt: skip
_condition_keys = st.sampled_from([IMAGE_KEY, PCR1_KEY, "kms:EncryptionContext:zerocopy:name", "aws:x", "bad"])
_condition_value = st.sampled_from(["true", "false", "aa", "AA", "a*", IMAGE, "${x}"]) | st.booleans() | st.integers()
_statements = st.fixed_dictionaries(
    {
        "Effect": _or_junk(st.sampled_from(["Allow", "Deny"])),
        "Principal": _or_junk(
            st.sampled_from(["*", {"AWS": ACCOUNT}, {"AWS": [f"arn:aws:iam::{OTHER_ACCOUNT}:root", "*"]}])
        ),
        "Action": _or_junk(st.sampled_from(["kms:*", "kms:Decrypt", ["kms:ReEncrypt*", "kms:?ecrypt"], "*"])),
        "Resource": _or_junk(st.sampled_from(["*", KEY_ARN, "arn:aws:kms:*"])),
    },
    optional={
        "Sid": _or_junk(st.text(alphabet="abc", max_size=3)),
        "Condition": _or_junk(
            st.dictionaries(
                _operators,
                _or_junk(st.dictionaries(_condition_keys, _or_junk(_condition_value | st.lists(_condition_value)))),
                max_size=3,
            )
        ),
    },
)
valid_ish_policies = st.fixed_dictionaries(
    {
        "Version": _or_junk(st.sampled_from(["2012-10-17", "2008-10-17"])),
        "Statement": _or_junk(_statements | st.lists(_statements, min_size=1, max_size=3)),
    }
)
_contexts = st.dictionaries(
    _condition_keys | st.sampled_from([IMAGE_KEY.upper(), "kms:EncryptionContextKeys"]),
    st.sampled_from(["aa", "AA", "true", IMAGE]) | st.lists(st.sampled_from(["aa", "b"]), max_size=2),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(valid_ish_policies, st.sampled_from(["kms:Decrypt", "kms:Encrypt", "kms:ReEncryptTo"]), _contexts)
def test_near_valid_policies_parse_or_raise_malformed_and_evaluate(document, action, context):
    try:
        p = KeyPolicy.parse(json.dumps(document))
    except MalformedPolicyDocument:
        return
    d = decide(p, action=action, context=context)
    assert isinstance(d.allowed, bool) and d.reason


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(bytes))
def test_random_text_only_raises_malformed(text):
    try:
        KeyPolicy.parse(text)
    except MalformedPolicyDocument:
        pass


_OPERATOR_PAIRS = [
    ("StringEquals", "StringNotEquals"),
    ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"),
    ("StringLike", "StringNotLike"),
]
_short = st.text(alphabet="aAbB*?", max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_OPERATOR_PAIRS),
    st.lists(_short, min_size=1, max_size=3),
    st.none() | st.text(alphabet="aAbB", max_size=4) | st.lists(st.text(alphabet="aAbB", max_size=4), max_size=3),
)
def test_negated_operator_is_negation_of_positive(pair, values, request_value):
    """Without a set operator, ``StringNot...`` holds exactly when ``String...`` does not."""
    positive, negated = pair
    context = {} if request_value is None else {IMAGE_KEY: request_value}
    allowed = [decide(policy(statement(Condition={op: {IMAGE_KEY: values}})), context=context).allowed for op in pair]
    assert allowed[0] != allowed[1]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abc*?", max_size=6), st.text(alphabet="abc", max_size=6))
def test_string_like_agrees_with_regex(pattern, value):
    """``*`` and ``?`` mean what the equivalent regex means; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    p = policy(statement(Condition={"StringLike": {IMAGE_KEY: pattern}}))
    expected = re.fullmatch(regex, value, re.DOTALL) is not None
    assert decide(p, context=ctx(image=value)).allowed is expected


# --- principals as AWS reads them (issue 7) -----------------------------------------------------

USER = f"arn:aws:iam::{ACCOUNT}:user/alice"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/enclave-host/i-0abc"


TEAM_ROLE = f"arn:aws:iam::{ACCOUNT}:role/team/a/enclave-host"  # the session's role, at path /team/a/


@pytest.mark.parametrize(
    ("principal", "caller", "role_arn", "expected"),
    [
        # (statement principal, caller, the caller's role as IAM has it (None: at path /), (allowed, grant))
        ({"AWS": ACCOUNT}, "", None, (True, "direct")),  # the root itself
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, USER, None, (True, "account")),  # the account: IAM decides
        ({"AWS": ACCOUNT}, SESSION, None, (True, "account")),
        ({"AWS": USER}, USER, None, (True, "direct")),  # named: no IAM policy needed
        ({"AWS": USER.replace("alice", "Alice")}, USER, None, (True, "direct")),  # IAM names ignore case
        ({"AWS": USER}, f"arn:aws:iam::{ACCOUNT}:user/bob", None, (False, None)),
        ({"AWS": USER}, f"arn:aws:iam::{ACCOUNT}:user/ops/alice", None, (False, None)),  # another path: another user
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:user/ops/alice"}, f"arn:aws:iam::{ACCOUNT}:user/ops/alice", None, (True, "direct")),
        ({"AWS": USER}, "", None, (False, None)),  # a user principal is not the root
        # A role ARN covers every session of the role, within the role's boundary and session policies.
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:role/enclave-host"}, SESSION, None, (True, "bounded")),
        # AWS matches the role's real ARN, path included: a wrong path or a missing one is another role.
        ({"AWS": TEAM_ROLE}, SESSION, None, (False, None)),
        ({"AWS": TEAM_ROLE}, SESSION, TEAM_ROLE, (True, "bounded")),
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:role/enclave-host"}, SESSION, TEAM_ROLE, (False, None)),
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:role/enclave-host"}, SESSION, "", (False, None)),  # the role is gone
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:role/other-host"}, SESSION, None, (False, None)),
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:role/enclave-host"}, f"arn:aws:iam::{ACCOUNT}:user/enclave-host", None, (False, None)),
        ({"AWS": SESSION}, SESSION, None, (True, "direct")),  # the session itself: not limited by its boundary
        ({"AWS": SESSION}, SESSION.replace("i-0abc", "i-0def"), None, (False, None)),
        ({"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}, USER, None, (False, None)),
        ("*", USER, None, (True, "bounded")),  # everyone: the strict reading, within boundary and session policies
        ("*", "", None, (True, "direct")),
        ({"AWS": [f"arn:aws:iam::{ACCOUNT}:role/other-host", ACCOUNT]}, SESSION, None, (True, "account")),
        ({"AWS": [ACCOUNT, f"arn:aws:iam::{ACCOUNT}:role/enclave-host"]}, SESSION, None, (True, "bounded")),  # the role beats the account
        ({"AWS": [f"arn:aws:iam::{ACCOUNT}:role/enclave-host", SESSION]}, SESSION, None, (True, "direct")),  # the session beats the role
    ],
)
def test_principal_semantics(principal, caller, role_arn, expected):
    d = decide(policy(statement(Principal=principal)), principal=caller, role_arn=role_arn)
    assert (d.allowed, d.grant) == expected
    assert d.via_account == (d.grant == "account")


def test_a_role_arn_of_another_role_is_refused_as_the_session_s_role():
    with pytest.raises(ValueError, match="not the ARN of the session's role"):
        AuthorizationRequest("kms:Decrypt", KEY_ARN, ACCOUNT, {}, SESSION, f"arn:aws:iam::{ACCOUNT}:role/other-host")


def test_a_deny_naming_the_account_applies_to_every_principal_in_it():
    p = policy(statement(Principal={"AWS": USER}), statement("Deny", "kms:Decrypt", Principal={"AWS": ACCOUNT}, Sid="NoOne"))
    assert decide(p, principal=USER) == Decision(False, "explicitly denied by statement 'NoOne'")
    assert decide(p, principal=USER).denied


def test_a_deny_naming_a_role_spares_other_callers():
    p = policy(statement(), statement("Deny", Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:role/enclave-host"}))
    assert not decide(p, principal=SESSION).allowed
    assert decide(p).allowed
    assert decide(p, principal=USER).via_account


@pytest.mark.parametrize(
    ("principal", "error"),
    [
        ("arn:aws:iam::111122223333:role/enclave-host", ValueError),  # a role is assumed, never a caller
        (f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/r/s", ValueError),  # not the request's account
        ("alice", ValueError),
        (7, TypeError),
    ],
)
def test_request_principal_is_a_caller_arn(principal, error):
    with pytest.raises(error):
        AuthorizationRequest("kms:Decrypt", KEY_ARN, ACCOUNT, {}, principal)


@pytest.mark.parametrize(
    "principal",
    [f"arn:aws:iam::{ACCOUNT}:group/admins", f"arn:aws:iam::{ACCOUNT}:user/*", f"arn:aws:sts::{ACCOUNT}:federated-user/x", f"arn:aws:iam::{ACCOUNT}:role/a?b"],
)
def test_unsupported_principals_are_malformed(principal):
    with pytest.raises(MalformedPolicyDocument, match="invalid principal"):
        policy(statement(Principal={"AWS": principal}))


# --- identity policies ------------------------------------------------------------------------------


def identity(*statements: dict) -> IdentityPolicy:
    return IdentityPolicy.parse(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


def test_identity_policy_statements_have_no_principal():
    p = identity({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY_ARN})
    assert decide(p, principal=USER) == Decision(True, "allowed by Statement[0]")
    assert not decide(p, action="kms:Encrypt", principal=USER).allowed
    with pytest.raises(MalformedPolicyDocument, match="an identity policy has no Principal"):
        identity({"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"})


def test_identity_policy_skips_statements_for_other_services_only():
    s3 = {"Effect": "Allow", "Action": ["s3:GetObject", "ec2:Describe*"], "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}
    p = identity(s3, {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"})
    assert decide(p, principal=USER).allowed
    for relevant in ({**s3, "Action": "*"}, {**s3, "Action": ["s3:*", "kms:Dec*"]}, {**s3, "Action": "KMS:Decrypt"}):
        with pytest.raises(MalformedPolicyDocument, match="condition operator 'IpAddress'"):
            identity(relevant)
    not_action = {"Effect": "Deny", "NotAction": "s3:*", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}
    with pytest.raises(MalformedPolicyDocument, match="IpAddress"):
        identity(not_action)  # NotAction can cover kms: parsed, and refused


def test_identity_policy_conditions_on_attestation():
    condition = {"StringEqualsIgnoreCase": {IMAGE_KEY: IMAGE}}
    p = identity({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": condition})
    assert decide(p, principal=SESSION, context=ctx(image=IMAGE.upper())).allowed
    assert not decide(p, principal=SESSION).allowed
