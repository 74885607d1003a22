"""What the enclave does with each request: sign, attest, list keys, provision.

:class:`EnclaveService` maps request events to response events; it knows nothing of sockets
(:mod:`enclave.server` carries the bytes). Refusals and failures become typed ``ErrorResponse``
events whose messages never contain secret material.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import operator
import os
from itertools import chain
from typing import Any, Callable, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .audit import AuditLog, signed_parts
from .clock import Clock
from .cms import RecipientCiphertextError
from .keyring import KeyConflict, Keyring, KeyringFull, LoadedKey
from .kms import AttestedKms, Credentials, KmsError
from .nsm import Nsm, NsmError
from .protocol.policy import PolicyError, PolicyState, Refusal, SigningPolicy
from .protocol import (
    ControlResponse,
    ErrorCode,
    ErrorResponse,
    HttpSignRequest,
    MessageType,
    SessionAccepted,
    SignRequest,
    cbor,
)
from .protocol.frames import signature_answer, signed_http_answer
from .protocol.messages import (
    REQUESTS,
    Attest,
    Attestation,
    Audit,
    AuditPage,
    Bind,
    Bound,
    Generate,
    Generated,
    KeyInfo,
    KeyList,
    Keys,
    Message,
    MessageError,
    OpenSession,
    Provision,
    Provisioned,
    ProvisionedBundle,
    Remove,
    Removed,
)
from .protocol.session import USER_DATA_FIELD as SESSION_FIELD, HandshakeError, accept as accept_session
from .protocol.audit import FIELD_LIMITS, clip
from .protocol.bundle import BundleError, SealedBundle, associated_data, canonical_json, check_name, encryption_context
from .protocol.signing import API_KEY_RULE, plain_query
from .schemes import SCHEMES, SchemeError, SigningKey, generate_key, load_key

__all__ = ["EnclaveService"]

log = logging.getLogger("enclave.service")
USER_DATA_MAX = 1024


class _BadRequest(Exception):
    pass


class EnclaveService:
    def __init__(self, *, nsm: Nsm, kms: AttestedKms, clock: Clock) -> None:
        self.nsm = nsm
        self.kms = kms
        self.clock = clock
        self.keyring = Keyring()
        self.identity = Ed25519PrivateKey.generate()
        self.identity_public = self.identity.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.audit = AuditLog(self.identity)
        self._fingerprint_key = os.urandom(32)
        self._control: dict[MessageType, Callable[[Any], Message]] = {
            MessageType.ATTEST: self._attest,
            MessageType.KEYS: self._keys,
            MessageType.PROVISION: self._provision,
            MessageType.AUDIT: self._audit,
            MessageType.GENERATE: self._generate,
            MessageType.REMOVE: self._remove,
            MessageType.BIND: self._bind,
        }

    # -- dispatch ---------------------------------------------------------------------------
    def handle(self, event: Any) -> Any:
        if type(event) is SignRequest:
            return self._sign(event)
        if type(event) is HttpSignRequest:
            return self._sign_http(event)
        handler = self._control.get(event.kind)
        if handler is None and event.kind is not MessageType.OPEN_SESSION:
            return ErrorResponse(event.request_id, ErrorCode.UNSUPPORTED_OPERATION, f"{event.kind.name} is not supported by this enclave")
        try:
            request = REQUESTS[event.kind].from_fields(event.fields)
            if handler is None:
                return self._open_session(event.request_id, request)
            answer = handler(request)
            return ControlResponse(event.request_id, answer.TYPE, answer.to_fields())
        except (MessageError, _BadRequest) as exc:
            return ErrorResponse(event.request_id, ErrorCode.BAD_REQUEST, str(exc))
        except _Unusable as exc:
            return ErrorResponse(event.request_id, ErrorCode.PROVISIONING_FAILED, str(exc))
        except _Refused as exc:
            return ErrorResponse(event.request_id, exc.code, str(exc), exc.rule)
        except _NoSuchKey as exc:
            return ErrorResponse(event.request_id, ErrorCode.UNKNOWN_KEY, str(exc))
        except NsmError as exc:
            log.error("NSM error: %s", exc)
            return ErrorResponse(event.request_id, ErrorCode.INTERNAL, f"NSM error: {exc.code}")

    # -- the hot path -----------------------------------------------------------------------
    def _sign(self, event: SignRequest) -> Any:
        key = self.keyring.get(event.key)
        if key is None:
            return self._unknown_key(event)
        now = self.clock.now_ms()
        digest = hashlib.sha256(event.payload).hexdigest()
        try:
            if not key.signing_key.bound:
                raise _unbound_refusal(key)
            key.policy_state.authorize_raw(now)
        except Refusal as refusal:
            reason = _bounded_reason(refusal)
            self.audit.record(now, key.name, "refused", refusal.rule, "raw", digest, reason=reason)
            return ErrorResponse(event.request_id, ErrorCode.POLICY_REFUSED, reason, refusal.rule)
        signature = key.signing_key.sign(event.payload)
        self.audit.record_signed(now, key.name, "raw", digest, None, None, None)  # record(…, "signed", "", "raw", digest)'s line
        return signature_answer(event.request_id, signature)  # the scheme's bytes, the id of a decoded request: not checked again

    def _sign_http(self, event: HttpSignRequest) -> Any:
        key = self.keyring.get(event.key)
        if key is None:
            return self._unknown_key(event)
        now = self.clock.now_ms()
        params = event.params
        if not event.body:
            shape = key.shapes.get((event.method, event.path, *map(_NAME_OF, params)))
            if shape is not None:
                query = "&".join(map("=".join, params))
                if plain_query(query, len(params)):  # nothing to percent-encode
                    return self._sign_known(event, key, shape, query, now)
        try:
            if not key.signing_key.bound:
                raise _unbound_refusal(key)
            authorized = key.policy_state.authorize_request(event.method, event.path, params, event.body, now)
            signed = key.signing_key.sign_http(event.method, event.path, authorized.params, authorized.body, now)
        except Refusal as refusal:
            return self._refused(event, key, now, refusal, refusal.rule, ErrorCode.POLICY_REFUSED, refusal.rule)
        except SchemeError as exc:
            return self._refused(event, key, now, exc, "scheme", ErrorCode.UNSUPPORTED_OPERATION)
        request = f"{event.method} {event.path}"[:200]
        self.audit.record_signed(now, key.name, request, _request_digest(authorized.params, authorized.body), authorized.symbol, authorized.quantity, authorized.notional)
        if not event.body and key.signing_key.signs_known_queries:
            _remember_shape(key, event.method, event.path, params, request)
        return signed_http_answer(event.request_id, signed.query, signed.body, signed.headers)  # built from checked parts: not checked again

    def _sign_known(self, event: HttpSignRequest, key: LoadedKey, shape: _Shape, query: str, now: int) -> Any:
        """:meth:`_sign_http` for a query-only request of a shape this key signed before: the
        policy judges its values by the shape's plan, the scheme signs ``query`` as the shape says,
        and the receipt (the same line) is built around the shape's fixed parts."""
        try:
            if not key.signing_key.bound:
                raise _unbound_refusal(key)
            authorized = key.policy_state.authorize_planned(shape.plan, event.params, now)
            signed = key.signing_key.sign_known_query(query, shape.scheme, now)
        except Refusal as refusal:
            return self._refused(event, key, now, refusal, refusal.rule, ErrorCode.POLICY_REFUSED, refusal.rule)
        except SchemeError as exc:
            return self._refused(event, key, now, exc, "scheme", ErrorCode.UNSUPPORTED_OPERATION)
        self.audit.record_signed_as(shape.receipt, now, _plain_query_digest(query), authorized.symbol, authorized.quantity, authorized.notional)
        return signed_http_answer(event.request_id, signed.query, signed.body, signed.headers)

    def _refused(self, event: HttpSignRequest, key: LoadedKey, now: int, exc: Exception, rule: str, code: ErrorCode, answer_rule: str = "") -> ErrorResponse:
        reason = _bounded_reason(exc)
        self.audit.record(now, key.name, "refused", rule, f"{event.method} {event.path}"[:200], _request_digest(event.params, event.body), reason=reason)
        return ErrorResponse(event.request_id, code, reason, answer_rule)

    def _unknown_key(self, event: Any) -> ErrorResponse:
        return ErrorResponse(event.request_id, ErrorCode.UNKNOWN_KEY, f"key {event.key!r} is not provisioned in this enclave (no key of that name is loaded)")

    # -- control messages -------------------------------------------------------------------
    def _attest(self, request: Attest) -> Attestation:
        document = self.nsm.attestation(public_key=self.identity_public, user_data=self.loaded_summary(), nonce=request.nonce)
        return Attestation(document=document)

    def _open_session(self, request_id: int, request: OpenSession) -> SessionAccepted:
        """An attested session: the document is the one ATTEST gives (identity key, loaded keys),
        with ``nonce`` = the handshake binding (client nonce and both ephemeral X25519 keys).
        Sending the answer switches the connection to sealed frames (enclave/protocol/session.py)."""
        try:
            accepted = accept_session(request.to_fields())
        except HandshakeError as exc:
            raise _BadRequest(str(exc)) from None
        # The binding goes into user_data too, which ATTEST never lets the host choose (session.py).
        summary = self.loaded_summary(session=accepted.binding)
        document = self.nsm.attestation(public_key=self.identity_public, user_data=summary, nonce=accepted.binding)
        return SessionAccepted(request_id, accepted.public_key, document, accepted.session)

    def loaded_summary(self, *, session: bytes | None = None) -> bytes:
        """``user_data`` of attestation documents: which keys, schemes and policies are live, and
        the KMS key that sealed each (so a key sealed under a KMS key of the host's shows); on an
        OPEN_SESSION answer also the session's binding, under ``"session"``."""
        keys = self.keyring.keys()
        bound = {SESSION_FIELD: session} if session is not None else {}
        sealed_by = sorted({key.sealed_by for key in keys})  # few, and long: each key points into the list
        listed = [[key.name, key.scheme, key.policy_sha256, sealed_by.index(key.sealed_by)] for key in keys]
        summary = cbor.dumps({"keys": listed, "sealed_by": sealed_by})
        if len(summary) + len(cbor.dumps(bound)) <= USER_DATA_MAX:
            return cbor.dumps({"keys": listed, "sealed_by": sealed_by, **bound})
        # Too many to list: commit to the list (KEYS gives it all) and still name every sealing key.
        digest = hashlib.sha256(summary).digest()
        compact = cbor.dumps({"keys_sha256": digest, "count": len(keys), "sealed_by": sealed_by, **bound})
        if len(compact) <= USER_DATA_MAX:
            return compact
        sealers = hashlib.sha256(cbor.dumps(sealed_by)).digest()
        return cbor.dumps({"keys_sha256": digest, "count": len(keys), "sealed_by_sha256": sealers, **bound})

    def _audit(self, request: Audit) -> AuditPage:
        # Receipts travel as canonical JSON lines (exactly the bytes the chain hashes), in pages
        # that always fit in a frame: a client pages on with ``after``. The page is our own, so it
        # is not checked again (and its receipts stay the list fetch made: no copy).
        return AuditPage(**self.audit.fetch(request.after, request.limit, nonce=request.nonce))

    def _keys(self, request: Keys) -> KeyList:
        return KeyList(keys=tuple(KeyInfo.from_fields(key.describe()) for key in self.keyring.keys()))

    def _provision(self, request: Provision) -> Provisioned:
        self._check_region(request.region)
        credentials = self._credentials(request.credentials)
        session = None
        results = []
        try:
            for index, raw in enumerate(request.bundles):
                try:
                    bundle = SealedBundle.from_json(raw)
                except BundleError as exc:
                    results.append(ProvisionedBundle(index=index, name=None, loaded=False, error=f"bundle #{index + 1}: {exc}"))
                    continue
                if session is None:
                    session = self.kms.session(credentials)
                results.append(self._provision_one(index, bundle, session))
        finally:
            if session is not None:
                session.close()  # its idle keep-alive connection would hold a vsock-proxy worker
        return Provisioned(results=tuple(results))

    def _provision_one(self, index: int, bundle: SealedBundle, session: Any) -> ProvisionedBundle:
        try:
            added = self._unseal(bundle, session)
        except _Unusable as exc:
            log.warning("bundle %r refused: %s", bundle.name, exc)
            return ProvisionedBundle(index=index, name=bundle.name, loaded=False, error=f"bundle {bundle.name!r}: {exc}")
        log.info("loaded key %r (%s, policy %s)", bundle.name, bundle.scheme, bundle.policy_sha256[:16])
        return ProvisionedBundle(index=index, name=bundle.name, loaded=True, new=added, error=None)

    def _remove(self, request: Remove) -> Removed:
        """Unload a key, if its sealed policy says ``removable = true`` (the operator's choice,
        bound into the encryption context: the host cannot make a key removable). The host could
        stop the enclave anyway; what it must not get is a quiet way to reset a production key's
        rate and notional windows by unloading and reloading it."""
        key = self.keyring.get(request.name)
        if key is None:
            raise _Refused(ErrorCode.UNKNOWN_KEY, f"key {request.name[:64]!r} is not provisioned in this enclave (no key of that name is loaded)")
        if not key.policy_state.policy.removable:
            raise _Refused(ErrorCode.POLICY_REFUSED, f"key {key.name!r} may not be removed: its sealed policy does not say removable = true", "removable")
        if not self.keyring.remove(key):  # removed (or replaced) meanwhile, by another connection
            raise _Refused(ErrorCode.UNKNOWN_KEY, f"key {key.name!r} was removed by another request")
        log.info("removed key %r (%s)", key.name, key.scheme)
        self.audit.record(self.clock.now_ms(), key.name, "removed", "", "remove", key.policy_sha256)  # the policy it signed under
        return Removed(name=key.name)

    def _check_region(self, region: Any) -> None:
        if region is not None and region != self.kms.settings.region:
            raise _BadRequest(f"this enclave was launched for KMS in {self.kms.settings.region}, not {str(region)[:40]!r}")

    @staticmethod
    def _credentials(fields: Any) -> Credentials:
        try:
            return Credentials.from_fields(fields)
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None

    def _unseal(self, bundle: SealedBundle, session: Any) -> bool:
        policy = self._policy_for(bundle.scheme, bundle.policy)
        if not bundle.api_key and SCHEMES[bundle.scheme].exchange is not None:
            raise _Unusable(_UNBOUND_BUNDLE)  # known from its fields: no KMS call for it
        self._check_room(bundle.name)
        context = bundle.encryption_context()  # derived here from the bundle's fields, never taken from it
        try:
            data_key, sealed_by = session.decrypt_with_key_arn(key_id=bundle.kms_key_id, ciphertext_blob=bundle.encrypted_data_key, encryption_context=context)
        except KmsError as exc:
            raise _Unusable(str(exc)) from None
        except RecipientCiphertextError:
            raise _Unusable("could not open KMS's CiphertextForRecipient") from None
        if len(data_key) != 32:
            raise _Unusable("KMS data key is not 256 bits")
        try:
            secret = AESGCM(data_key).decrypt(bundle.nonce, bundle.ciphertext, associated_data(context))
        except InvalidTag:
            raise _Unusable("the sealed secret does not match the bundle's fields (tampered bundle?)") from None
        return self._install(bundle, secret, policy, sealed_by, generated=False)

    @staticmethod
    def _policy_for(scheme: str, document: dict | None) -> SigningPolicy:
        if scheme not in SCHEMES:
            raise _Unusable(f"unknown scheme {scheme!r}")
        try:
            return SigningPolicy.parse(document, scheme=scheme)
        except PolicyError as exc:
            raise _Unusable(f"policy: {exc}") from None

    def _install(self, bundle: SealedBundle, secret: bytes, policy: SigningPolicy, sealed_by: str, *, generated: bool) -> bool:
        """Load a key; ``sealed_by`` is the ARN of the KMS key that sealed it, as KMS reported it."""
        key = self._loaded_key(bundle, secret, PolicyState(policy), sealed_by)
        if key.unbound_secret is not None and not generated:
            # Only the boot that generated a key may bind it: an unbound bundle the host kept must
            # not let it bind the key, in a later boot, to an exchange account of its own.
            raise _Unusable(_UNBOUND_BUNDLE)
        try:
            return self.keyring.add(key)
        except (KeyConflict, KeyringFull) as exc:
            raise _Unusable(str(exc)) from None

    def _loaded_key(self, bundle: SealedBundle, secret: bytes, policy_state: PolicyState, sealed_by: str) -> LoadedKey:
        try:
            signing_key: SigningKey = load_key(bundle.scheme, secret, bundle.api_key)
            signing_key.apply_policy(policy_state.policy.document or {})
        except SchemeError as exc:
            raise _Unusable(str(exc)) from None
        # The sealing key counts: the same secret under another KMS key is another provenance to report.
        fingerprint = hmac.new(self._fingerprint_key, canonical_json({**bundle.encryption_context(), "sealed-by": sealed_by}) + secret, "sha256")
        return LoadedKey(
            name=bundle.name,
            scheme=bundle.scheme,
            api_key=bundle.api_key,
            policy_sha256=bundle.policy_sha256,
            sealed_by=sealed_by,
            policy_state=policy_state,
            signing_key=signing_key,
            fingerprint=fingerprint.hexdigest(),
            sealed_policy=bundle.policy,
            unbound_secret=None if signing_key.bound else secret,
        )

    def _check_room(self, name: str) -> None:
        try:
            self.keyring.check_room(name)
        except KeyringFull as exc:
            raise _Unusable(str(exc)) from None

    def _generate(self, request: Generate) -> Generated:
        """A key pair made here; the private half is sealed from inside, only to a seal key the
        operator measured into the launch configuration, and never leaves unsealed."""
        name, scheme = request.name, request.scheme
        self._check_region(request.region)
        credentials = self._credentials(request.credentials)
        kind = SCHEMES.get(scheme)
        if kind is None or not kind.asymmetric:
            raise _Unusable(f"{scheme!r} is not an asymmetric scheme; only those can generate their key inside the enclave")
        self._check_room(name)
        seal_key = self._seal_key(request.kms_key_id)
        if self.keyring.get(name) is not None:
            raise _Unusable(f"a key named {name!r} is already loaded")
        policy = self._policy_for(scheme, request.policy)
        secret = generate_key(scheme)
        bundle = self._seal(name, scheme, request.api_key or "", request.policy, secret, seal_key, credentials)
        self._install(bundle, secret, policy, seal_key, generated=True)
        log.info("generated key %r (%s) inside the enclave, sealed to %s", name, scheme, seal_key)
        return Generated(bundle=bundle.to_json(), public_key=self.keyring.get(name).signing_key.public_key_pem())  # type: ignore[union-attr,arg-type]

    def _seal(self, name: str, scheme: str, api_key: str, document: dict | None, secret: bytes, kms_key: str, credentials: Credentials) -> SealedBundle:
        """``secret`` sealed here under ``kms_key`` (a data key from ``GenerateDataKey`` with
        ``Recipient``), bound to the bundle's fields as the encryption context."""
        try:
            context = encryption_context(check_name(name), scheme, api_key, document)
            with self.kms.session(credentials) as session:
                data_key, blob, key_arn = session.generate_data_key(key_id=kms_key, encryption_context=context)
        except BundleError as exc:
            raise _BadRequest(str(exc)) from None
        except KmsError as exc:
            raise _Unusable(str(exc)) from None
        except RecipientCiphertextError:
            raise _Unusable("could not open KMS's CiphertextForRecipient") from None
        if key_arn != kms_key:  # KMS names the key it used; anything else is not the key asked for
            raise _Unusable(f"KMS generated the data key under another key than {kms_key[:160]!r}")
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, secret, associated_data(context))
        try:
            return SealedBundle(name, scheme, api_key, document, key_arn, blob, nonce, ciphertext)
        except BundleError as exc:
            raise _BadRequest(str(exc)) from None

    def _bind(self, request: Bind) -> Bound:
        """Give an exchange key generated in this boot without an API key id its id, once: re-seal
        it (same secret, name, scheme and policy, now with the id) under the KMS key that sealed it,
        and load it bound. The policy's state (rate bucket, notional window) carries over."""
        self._check_region(request.region)
        credentials = self._credentials(request.credentials)
        key = self.keyring.get(request.name)
        if key is None:
            raise _NoSuchKey(f"key {request.name[:64]!r} is not loaded in this enclave: provision its bundle first")
        secret = key.unbound_secret
        if secret is None:
            raise _Unusable(_why_not_bindable(key))
        try:
            SCHEMES[key.scheme](secret, request.api_key)  # the id's form, checked before KMS is asked
        except SchemeError as exc:
            raise _BadRequest(str(exc)) from None
        bundle = self._seal(key.name, key.scheme, request.api_key, key.sealed_policy, secret, key.sealed_by, credentials)
        bound = self._loaded_key(bundle, secret, key.policy_state, key.sealed_by)
        sealed = bundle.to_json()  # the receipt's digest names the bundle the operator keeps

        def receipt() -> None:  # before the loop's thread can sign with the bound key: no receipt of it precedes this one
            self.audit.record(self.clock.now_ms(), key.name, "bound", "", "bind", hashlib.sha256(sealed).hexdigest(), reason=f"API key id {request.api_key}")

        try:
            self.keyring.replace(key, bound, before_published=receipt)
        except KeyConflict as exc:
            raise _Unusable(str(exc)) from None
        log.info("bound key %r (%s) to its API key id, re-sealed to %s", key.name, key.scheme, key.sealed_by)
        return Bound(bundle=sealed)

    def _seal_key(self, requested: str | None) -> str:
        """The KMS key to seal a generated key to: one fixed at launch (measured), never the host's choice."""
        seal_keys = self.kms.settings.seal_keys
        if not seal_keys:
            raise _Unusable("this enclave was launched without --seal-key, so it has no KMS key to seal a generated key to")
        if requested is None:
            return seal_keys[0]
        if requested not in seal_keys:
            raise _Unusable(f"this enclave seals generated keys only to the KMS keys it was launched with (--seal-key), and {requested[:160]!r} is not one of them")
        return requested


class _Refused(Exception):
    """A control request refused with a given error code (and, for POLICY_REFUSED, the rule)."""

    def __init__(self, code: ErrorCode, message: str, rule: str = "") -> None:
        super().__init__(message)
        self.code, self.rule = code, rule


class _Unusable(Exception):
    """A bundle that cannot be loaded; the message says why and holds no secret."""


class _NoSuchKey(Exception):
    """A control message names a key that is not loaded (answered ``UNKNOWN_KEY``)."""


_UNBOUND_BUNDLE = (
    "it has no API key id, and an exchange key is bound to its id only in the enclave boot that generated it "
    "(a host keeping this bundle must not be able to bind the key to an account of its own): generate a new key"
)


def _unbound_refusal(key: LoadedKey) -> Refusal:
    return Refusal(
        API_KEY_RULE,
        f"key {key.name!r} has no API key id yet: register its public key with the exchange, then bind the id "
        f"the exchange issues (zerocopy bind {key.name} --api-key ID -o BUNDLE, or Signer.bind)",
    )


def _why_not_bindable(key: LoadedKey) -> str:
    if key.api_key:  # one-shot: a host must not re-point a bound key at another exchange account
        return f"key {key.name!r} is already bound to API key id {key.api_key!r}; a bound key cannot be bound again"
    return f"key {key.name!r} ({key.scheme}) is not an exchange key waiting for its API key id; only those can be bound"


def _bounded_reason(exc: Exception) -> str:
    """A refusal's words for the bot and the receipt, clipped: a request can make the policy quote
    a megabyte of it, and the answer must still fit in a frame (the receipt's digest names the request)."""
    return clip(str(exc), FIELD_LIMITS["reason"])


class _Shape(NamedTuple):
    """A query-only request shape a key signed: its policy's plan, what its scheme remembered, and
    the receipt's key and request parts (kept in ``LoadedKey.shapes``, per key: another key, or
    this one replaced, has shapes of its own)."""

    plan: Any
    scheme: Any
    receipt: tuple[str, str]


_NAME_OF = operator.itemgetter(0)
#: Shapes a key keeps (a bot sends a handful; the host chooses the path, so it is bounded).
MAX_KEY_SHAPES = 64


def _remember_shape(key: LoadedKey, method: str, path: str, params: tuple[tuple[str, str], ...], request: str) -> None:
    """After a query-only request was judged and signed the long way: its shape, if both the
    policy (a plan) and the scheme remember it, so the next one of that shape takes the short way."""
    names = tuple([name for name, _ in params])
    shapes = key.shapes
    if (method, path, *names) in shapes:
        return
    plan = key.policy_state.plan_for(method, path, names)
    scheme = key.signing_key.known_query_shape(method, path, names) if plan is not None else None
    if scheme is None:
        return
    if len(shapes) >= MAX_KEY_SHAPES:
        shapes.clear()
    shapes[(method, path, *names)] = _Shape(plan, scheme, signed_parts(key.name, request))


def _request_digest(params: tuple[tuple[str, str], ...], body: bytes) -> str:
    digest = hashlib.sha256("\0".join(chain.from_iterable(params)).encode())
    digest.update(b"\0\0" + body)
    return digest.hexdigest()


def _plain_query_digest(query: str) -> str:
    """``_request_digest(params, b"")`` for ``query``, the params joined by "=" and "&" with
    :func:`plain_query` true of it: every "=" and "&" in it is a separator (none came from a name
    or a value, all unreserved), so its bytes with each separator made a NUL are the params joined
    by NUL, made in C rather than by joining the pairs again (a third of the cost)."""
    return hashlib.sha256(query.encode().translate(_SEPARATORS_AS_NUL) + b"\0\0").hexdigest()


_SEPARATORS_AS_NUL = bytes.maketrans(b"=&", b"\0\0")
