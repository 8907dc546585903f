"""CredentialBinding planning: from a binding, its Credential and what the cluster holds to the plain
Secret, status and rollout the binding should have.

A binding is "this Credential is used here, in this shape": it renders the Credential's fields
through its templates into a plain `Opaque` Secret that Pods read with `envFrom`/`env`/volumes,
and rolls listed workloads out when the rendered content changes. The operator gathers the inputs
(the binding, the Credential and its decrypted content, governance facts, the current Secret,
the rollout targets) and applies the plan; everything that decides lives here and runs without a
cluster.

Rules:
- Write discipline as for managed Secrets: the Secret is written only when its content or
  metadata differ; a Secret owned by someone else is never touched (`SecretConflict`).
- The content HMAC is keyed (never a bare hash: short values could be guessed) and is kept as
  long as any keyring key verifies it, so a key rotation, which changes no plaintext, writes
  nothing.
- Bad input (a template, a not-Ready Credential) keeps the last good Secret; a policy that
  forbids plain output (cluster flag, the share, the tenancy rule) and a Credential that no longer
  exists withdraw it.
- A rollout is due when the content rolled out last differs from the current content; the
  operator debounces it. For an OAuth2 Credential, a change of its token fields alone (a refreshed
  access token, every ~45 minutes) rolls nothing out unless the binding says
  `spec.rolloutOnTokenRefresh: true`: applications should read the token when they use it.
- A binding of an OAuth2 Credential reports the Credential's `OAuth2Ready` as its own condition of
  that type (a revoked grant shows on the binding, whose Secret keeps the last access token).
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import typing

from credbridge.core import (
    conditions,
    envelope,
    keyring,
    names,
    planning,
    redaction,
    registry,
    release,
    templating,
    views,
)
from credbridge.core.oauth2 import planning as oauth2_planning
from credbridge.core.oauth2 import tokens

Json = dict[str, typing.Any]

ROLLOUT_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
"""Workload kinds a binding can roll out (apps/v1, in the binding's namespace)."""
ROLLOUT_CONDITION = "RolloutReady"
"""Condition type reporting the rollout targets, next to Ready."""
OAUTH2_CONDITION = oauth2_planning.OAUTH2_READY
"""Condition type of a binding of an OAuth2 Credential: the Credential's `OAuth2Ready`, as the binding sees it."""
PLAIN_SECRET_TYPE = "Opaque"

WITHDRAWING_REASONS = frozenset({"CredentialNotFound", *release.REASONS})
"""Failures that remove the binding's Secret: the release rule forbids it (core.release), or the
Credential is gone. Every other failure keeps the last good Secret."""


@dataclasses.dataclass(frozen=True)
class RolloutTarget:
    """A workload to roll out when the rendered content changes."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclasses.dataclass(frozen=True)
class BindingView:
    """The parts of a CredentialBinding object that planning reads."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: collections.abc.Mapping[str, typing.Any]
    status: collections.abc.Mapping[str, typing.Any]
    resource_version: str = ""
    deleting: bool = False
    finalizers: tuple[str, ...] = ()

    @classmethod
    def from_object(cls, obj: collections.abc.Mapping[str, typing.Any]) -> BindingView:
        """Reads a CredentialBinding in its JSON form, keeping private copies (`views.kept`) of what it holds."""
        metadata = obj.get("metadata") or {}
        return cls(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            uid=str(metadata.get("uid", "")),
            generation=int(metadata.get("generation") or 0),
            spec=views.kept(dict(obj.get("spec") or {})),
            status=views.kept(dict(obj.get("status") or {})),
            resource_version=str(metadata.get("resourceVersion", "")),
            deleting=bool(metadata.get("deletionTimestamp")),
            finalizers=tuple(metadata.get("finalizers") or ()),
        )

    @property
    def key(self) -> views.Key:
        return self.namespace, self.name

    @property
    def output_secrets(self) -> frozenset[str]:
        """The Secrets this binding writes or wrote: spec.secret.name and status.secretName."""
        return frozenset(str(name) for name in (self.secret_name, self.status.get("secretName")) if name)

    @property
    def where(self) -> str:
        return f"CredentialBinding {self.namespace}/{self.name}"

    @property
    def credential_name(self) -> str:
        return str(self.spec.get("credential", ""))

    @property
    def secret_name(self) -> str | None:
        """Name of the plain Secret to write, or None when the binding has no Secret output."""
        secret = self.spec.get("secret") or {}
        name = secret.get("name") if isinstance(secret, collections.abc.Mapping) else None
        return str(name) if name else None

    @property
    def template(self) -> collections.abc.Mapping[str, typing.Any] | None:
        template = self.spec.get("template")
        return template if isinstance(template, collections.abc.Mapping) else None

    @property
    def rollout_on_token_refresh(self) -> bool:
        """Roll out also when only an OAuth2 Credential's token fields changed (spec.rolloutOnTokenRefresh)."""
        return self.spec.get("rolloutOnTokenRefresh") is True

    @property
    def rollout_targets(self) -> tuple[RolloutTarget, ...]:
        targets = []
        for entry in self.spec.get("rollout") or []:
            if isinstance(entry, collections.abc.Mapping):
                targets.append(RolloutTarget(str(entry.get("kind", "")), str(entry.get("name", ""))))
        return tuple(targets)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything besides the binding that its plan depends on."""

    now: str
    """Current time, RFC 3339."""
    keyring: keyring.Keyring | None
    """Keys for the content HMAC; None when the operator has no usable keyring."""
    credential: views.CredentialView | None
    """The bound Credential, or None when it does not exist."""
    content: redaction.SecretFields | planning.Failure | None = dataclasses.field(default=None, repr=False)
    """The Credential's plaintext, or why it cannot be had (not Ready, cannot be opened)."""
    cred_type: registry.CredentialTypeSpec | None = None
    """The Credential's type, for naming unknown fields."""
    current_secret: views.SecretView | None = None
    """The Secret named by spec.secret.name as it is now, or None."""
    plain_output_denial: planning.Failure | None = None
    """Why plain Secret output is forbidden for this binding (cluster flag, share, tenancy), or None."""
    missing_targets: frozenset[RolloutTarget] = frozenset()
    """Rollout targets that do not exist."""
    rollouts_enabled: bool = True
    """False when the operator was told not to roll workloads out."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to do for one binding.

    `secret` is the whole Secret to create (none exists) or replace (ours, differing), or None.
    `delete_secrets` names Secrets to remove if they are still owned by this binding (a withdrawn
    output, or one that spec.secret.name no longer names). `rollout` lists the targets to patch
    once the operator's debounce allows: non-empty only while the content rolled out last is not
    the current one. `rollout_status` is what status to merge once that rollout is done.
    """

    status: Json
    secret: Json | None = None
    delete_secrets: tuple[str, ...] = ()
    failure: planning.Failure | None = None
    events: tuple[planning.Event, ...] = ()
    rollout: tuple[RolloutTarget, ...] = ()
    rollout_status: Json = dataclasses.field(default_factory=dict)


def associated_data(namespace: str, binding_name: str) -> bytes:
    """What a binding's content HMAC is bound to, so equal content elsewhere yields another HMAC."""
    return f"{envelope.AAD_PREFIX}|binding|{namespace}|{binding_name}".encode()


def reference_problem(credential: str) -> str | None:
    """Why spec.credential cannot name a Credential of this namespace, or None."""
    if not credential:
        return "spec.credential is empty: name a Credential (or mirror) in this namespace"
    if "/" in credential:
        return (
            f"spec.credential {credential!r} names another namespace: a binding reads only Credentials in its own "
            "namespace; share the Credential into this namespace with a CredentialShare and bind the mirror "
            "(<source-namespace>.<name>)"
        )
    return None


def rollout_problems(targets: collections.abc.Sequence[RolloutTarget]) -> list[str]:
    """One problem per rollout target of an unsupported kind or without a name."""
    problems = []
    for index, target in enumerate(targets):
        if target.kind not in ROLLOUT_KINDS:
            problems.append(
                f"spec.rollout[{index}].kind {target.kind!r} is not supported: use one of {', '.join(ROLLOUT_KINDS)}"
            )
        if not target.name:
            problems.append(f"spec.rollout[{index}].name is empty: name the workload")
    return problems


def parse_templates(binding: BindingView, fields: collections.abc.Iterable[str]) -> templating.Templates:
    """The binding's parsed templates, or one key per field of `fields` without spec.template.

    Raises templating.TemplateError.
    """
    if binding.template is None:
        return templating.one_key_per_field(fields)
    return templating.parse_templates(binding.template)


def plan_binding(binding: BindingView, inputs: Inputs) -> Plan:
    """Plan the Secret, status and rollout of one binding."""
    where = binding.where
    failure: planning.Failure | None = None
    reference = reference_problem(binding.credential_name)
    credential = inputs.credential
    if reference is not None:
        failure = planning.Failure("InvalidReference", f"{where}: {reference}")
    elif credential is None:
        failure = planning.Failure(
            "CredentialNotFound",
            f"{where}: Credential {binding.credential_name} does not exist in namespace {binding.namespace}: "
            "create it, or fix spec.credential",
        )
    elif binding.secret_name is not None and inputs.plain_output_denial is not None:
        failure = inputs.plain_output_denial
    if failure is not None:
        return _failed(binding, inputs, failure)
    assert credential is not None

    content = inputs.content
    if isinstance(content, redaction.SecretFields):
        fields = list(content)
    else:
        fields = list(credential.status.get("fields") or [])
    try:
        templates = parse_templates(binding, fields)
    except templating.TemplateError as error:
        return _failed(binding, inputs, planning.Failure("InvalidTemplate", f"{where}: {error}"))
    if inputs.cred_type is not None and templates.explicit:
        unknown = templating.unknown_field_problems(templates, inputs.cred_type.field_names(), inputs.cred_type.name)
        if unknown:
            return _failed(binding, inputs, planning.Failure("UnknownField", f"{where}: " + "; ".join(unknown)))
    if inputs.keyring is None:
        return _failed(
            binding,
            inputs,
            planning.Failure("KeyUnavailable", f"{where}: the operator has no usable keyring; see the operator log"),
        )
    if not isinstance(content, redaction.SecretFields):
        detail = content.message if isinstance(content, planning.Failure) else "its content is not available"
        return _failed(
            binding,
            inputs,
            planning.Failure("CredentialNotReady", f"{where}: Credential {credential.name} is not usable: {detail}"),
        )
    try:
        rendered = templating.render(templates, content, where=f"Credential {credential.namespace}/{credential.name}")
    except templating.RenderError as error:
        return _failed(binding, inputs, planning.Failure("RenderFailed", f"{where}: {error}"))

    current = inputs.current_secret if binding.secret_name is not None else None
    if current is not None and current.controller_uid != binding.uid:
        return _failed(
            binding,
            inputs,
            planning.Failure(
                "SecretConflict",
                (
                    f"{where}: Secret {binding.secret_name} already exists and is not managed by this binding; "
                    "delete or rename that Secret, or set spec.secret.name to a free name"
                ),
            ),
        )
    return _plan_rendered(binding, inputs, credential, rendered, current, _rollout_content(binding, inputs, templates))


def _rollout_content(binding: BindingView, inputs: Inputs, templates: templating.Templates) -> bytes | None:
    """What a rollout compares for an OAuth2 Credential: the rendering with every token field emptied, so a
    refreshed access token rolls nothing out; None (compare the rendered content) for other Credentials,
    without rollout targets, or with `spec.rolloutOnTokenRefresh`."""
    content, cred_type = inputs.content, inputs.cred_type
    if not binding.rollout_targets or binding.rollout_on_token_refresh:
        return None
    if cred_type is None or cred_type.oauth2 is None or not isinstance(content, redaction.SecretFields):
        return None
    emptied = {name: "" if name in tokens.TOKEN_FIELDS else content[name] for name in content}
    try:
        return envelope.encode_plaintext(templating.render(templates, emptied, where="the rollout comparison"))
    except templating.RenderError:
        return None  # rendered above with the same field names; compare the rendered content then


def _plan_rendered(
    binding: BindingView,
    inputs: Inputs,
    credential: views.CredentialView,
    rendered: redaction.SecretFields,
    current: views.SecretView | None,
    rollout_content: bytes | None,
) -> Plan:
    ring = inputs.keyring
    assert ring is not None
    aad = associated_data(binding.namespace, binding.name)
    plaintext = envelope.encode_plaintext(rendered)
    previous = binding.status
    known = current.annotations.get(names.CONTENT_HMAC_ANNOTATION) if current else previous.get("contentHmac")
    if known and envelope.verify_content_hmac(str(known), ring.keys, aad, plaintext):
        content_hmac = str(known)
    else:
        content_hmac = envelope.content_hmac(ring.active_id, ring.active_key, aad, plaintext)

    secret: Json | None = None
    data_changed = False
    if binding.secret_name is not None:
        wanted = _secret_object(binding, credential, rendered, content_hmac)
        data_changed = current is None or dict(current.data) != dict(rendered)
        if current is None or data_changed or not _metadata_current(current, wanted):
            secret = wanted
    stale = previous.get("secretName")
    delete = (str(stale),) if stale and stale != binding.secret_name else ()

    targets = binding.rollout_targets
    rollout_hmac, rollout_plaintext, rollout_changed = content_hmac, plaintext, data_changed
    if rollout_content is not None:
        # What rolls out is the content without tokens: its own HMAC, kept while it verifies.
        rollout_plaintext, rollout_changed = rollout_content, True
        before = str(previous.get("rolledOutHmac") or "")
        if before and envelope.verify_content_hmac(before, ring.keys, aad, rollout_plaintext):
            rollout_hmac = before
        else:
            rollout_hmac = envelope.content_hmac(ring.active_id, ring.active_key, aad, rollout_plaintext)
    rolled_out = _rolled_out_hmac(previous, rollout_hmac, ring, aad, rollout_plaintext, bool(targets), rollout_changed)
    rollout_condition, rollout_events, patchable = _rollout_state(binding, inputs, targets)
    rollout = patchable if rolled_out != rollout_hmac else ()
    oauth2_condition, oauth2_events = _oauth2_state(binding, inputs, credential)

    content_changed = previous.get("contentHmac") != content_hmac and not envelope.verify_content_hmac(
        str(previous.get("contentHmac") or ""), ring.keys, aad, plaintext
    )
    if binding.secret_name is None:
        message = f"rendered {len(rendered)} key(s) from Credential {credential.name}; no Secret output (spec.secret)"
    else:
        message = (
            f"Secret {binding.secret_name} holds {len(rendered)} key(s) rendered from Credential {credential.name}"
        )
    status: Json = {
        "credential": credential.name,
        "secretName": binding.secret_name,
        "keys": sorted(rendered),
        "contentHmac": content_hmac,
        "renderedDate": inputs.now if content_changed or not previous.get("renderedDate") else previous["renderedDate"],
        "rolledOutHmac": rolled_out,
        "observedGeneration": binding.generation,
        "conditions": _conditions(previous, "True", "Rendered", message, inputs.now, binding.generation)
        + rollout_condition
        + oauth2_condition,
    }
    events = [*rollout_events, *oauth2_events]
    if conditions.reason(previous, names.READY_CONDITION) not in (None, "Rendered"):
        events.insert(0, planning.Event("Normal", "Rendered", f"{binding.where} is Ready again: {message}"))
    return Plan(
        status=status,
        secret=secret,
        delete_secrets=delete,
        events=tuple(events),
        rollout=rollout,
        rollout_status={"rolledOutHmac": rollout_hmac, "rolledOutDate": inputs.now},
    )


def _rolled_out_hmac(
    previous: collections.abc.Mapping[str, typing.Any],
    content_hmac: str,
    ring: keyring.Keyring,
    aad: bytes,
    plaintext: bytes,
    has_targets: bool,
    data_changed: bool,
) -> str:
    """The HMAC of the content the targets were rolled out with, after this plan.

    Without targets, or the first time, the current content counts as rolled out (Pods that
    started before the Secret existed waited for it). A rolled-out HMAC that still verifies the
    current content (only the key differs) follows the current one; so does one whose key was
    retired while the content stayed the same.
    """
    before = previous.get("rolledOutHmac")
    if not has_targets or not before or before == content_hmac:
        return content_hmac
    before = str(before)
    if envelope.verify_content_hmac(before, ring.keys, aad, plaintext):
        return content_hmac
    key_known = before.partition(":")[0] in ring.keys
    if not key_known and not data_changed and before == previous.get("contentHmac"):
        return content_hmac
    return before


def _rollout_state(
    binding: BindingView, inputs: Inputs, targets: collections.abc.Sequence[RolloutTarget]
) -> tuple[list[Json], list[planning.Event], tuple[RolloutTarget, ...]]:
    """The RolloutReady condition, the Events its change needs, and the targets that can be patched."""
    if not targets:
        return [], [], ()
    problems = rollout_problems(targets)
    patchable = tuple(t for t in targets if t.kind in ROLLOUT_KINDS and t.name and t not in inputs.missing_targets)
    if not inputs.rollouts_enabled:
        state, reason = "False", "RolloutsDisabled"
        message = (
            f"{binding.where}: this operator does not roll workloads out (--binding-rollouts=off); "
            "restart the workloads yourself after a change, or ask an operator admin to allow rollouts"
        )
        patchable = ()
    elif problems:
        state, reason = "False", "UnsupportedKind"
        message = f"{binding.where}: " + "; ".join(problems)
    elif inputs.missing_targets:
        state, reason = "False", "TargetNotFound"
        missing = ", ".join(str(t) for t in sorted(inputs.missing_targets, key=str))
        message = (
            f"{binding.where}: rollout target(s) {missing} do not exist in namespace {binding.namespace}: "
            "create them or fix spec.rollout"
        )
    else:
        state, reason = "True", "TargetsFound"
        message = "rolls out " + ", ".join(str(t) for t in targets) + " when the rendered content changes"
    condition = conditions.condition(
        binding.status, ROLLOUT_CONDITION, state, reason, message, inputs.now, binding.generation
    )
    events: list[planning.Event] = []
    old = conditions.find(binding.status, ROLLOUT_CONDITION)
    if state == "False" and (old is None or old.get("reason") != reason or old.get("message") != message):
        events.append(planning.Event("Warning", reason, message))
    return [condition], events, patchable


def _failed(binding: BindingView, inputs: Inputs, failure: planning.Failure) -> Plan:
    """Report `failure`; keep the last good Secret unless the failure withdraws it."""
    previous = binding.status
    withdraw = failure.reason in WITHDRAWING_REASONS
    status: Json = {
        key: previous[key]
        for key in ("credential", "secretName", "keys", "contentHmac", "renderedDate", "rolledOutHmac")
        if key in previous
    }
    if withdraw:
        status.update({"secretName": None, "keys": [], "contentHmac": None})
    status["observedGeneration"] = binding.generation
    oauth2_condition: list[Json] = []
    oauth2_events: list[planning.Event] = []
    if inputs.credential is not None and failure.reason not in WITHDRAWING_REASONS:
        oauth2_condition, oauth2_events = _oauth2_state(binding, inputs, inputs.credential)
    status["conditions"] = (
        _conditions(previous, "False", failure.reason, failure.message, inputs.now, binding.generation)
        + [c for c in previous.get("conditions") or [] if c.get("type") == ROLLOUT_CONDITION]
        + oauth2_condition
    )
    delete: tuple[str, ...] = ()
    if withdraw:
        delete = tuple(sorted({name for name in (binding.secret_name, previous.get("secretName")) if name}))
    old = conditions.find(previous, names.READY_CONDITION)
    changed = old is None or old.get("reason") != failure.reason or old.get("message") != failure.message
    events = ((planning.Event("Warning", failure.reason, failure.message),) if changed else ()) + tuple(oauth2_events)
    return Plan(status=status, delete_secrets=delete, failure=failure, events=events)


def _oauth2_state(
    binding: BindingView, inputs: Inputs, credential: views.CredentialView
) -> tuple[list[Json], list[planning.Event]]:
    """The binding's OAuth2Ready condition, copied from its Credential's, and the Event its change needs."""
    source = conditions.find(credential.status, OAUTH2_CONDITION)
    if source is None:
        return [], []
    state, reason = str(source.get("status", "Unknown")), str(source.get("reason", ""))
    message = f"Credential {credential.name}: {source.get('message', '')}"
    condition = conditions.condition(
        binding.status, OAUTH2_CONDITION, state, reason, message, inputs.now, binding.generation
    )
    old = conditions.find(binding.status, OAUTH2_CONDITION)
    if old is not None and old.get("reason") == reason:
        return [condition], []
    if state != "True":
        return [condition], [planning.Event("Warning", reason, f"{binding.where}: {message}")]
    if old is not None:
        return [condition], [planning.Event("Normal", reason, f"{binding.where}: {message}")]
    return [condition], []


def _conditions(
    previous: collections.abc.Mapping[str, typing.Any], state: str, reason: str, message: str, now: str, generation: int
) -> list[Json]:
    return [conditions.condition(previous, names.READY_CONDITION, state, reason, message, now, generation)]


def _labels(binding: BindingView, credential: views.CredentialView) -> dict[str, str]:
    labels = {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE, names.BINDING_LABEL: binding.name}
    if len(credential.name) <= 63:  # a label value's limit; longer names are in the binding's status
        labels[names.BOUND_CREDENTIAL_LABEL] = credential.name
    return labels


def _secret_object(
    binding: BindingView, credential: views.CredentialView, rendered: redaction.SecretFields, content_hmac: str
) -> Json:
    assert binding.secret_name is not None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": PLAIN_SECRET_TYPE,
        "metadata": {
            "name": binding.secret_name,
            "namespace": binding.namespace,
            "labels": _labels(binding, credential),
            "annotations": {names.CONTENT_HMAC_ANNOTATION: content_hmac},
            "ownerReferences": [
                {
                    "apiVersion": names.API_VERSION,
                    "kind": names.CREDENTIAL_BINDING_KIND,
                    "name": binding.name,
                    "uid": binding.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {key: base64.b64encode(rendered[key].encode()).decode() for key in rendered},
    }


def _metadata_current(current: views.SecretView, wanted: Json) -> bool:
    """True when type, labels and the content HMAC annotation of the Secret are what the plan wants."""
    if current.type != PLAIN_SECRET_TYPE:
        return False
    metadata = wanted["metadata"]
    if any(current.labels.get(key) != value for key, value in metadata["labels"].items()):
        return False
    return bool(
        current.annotations.get(names.CONTENT_HMAC_ANNOTATION) == metadata["annotations"][names.CONTENT_HMAC_ANNOTATION]
    )


def usage_status(
    bindings: collections.abc.Iterable[str], pods: collections.abc.Iterable[str] = (), limit: int = 100
) -> Json:
    """The part of a Credential's status that says who uses it: the bindings that render it and the
    Pods that read its Secret or its bindings' Secrets (names only, at most `limit` of each)."""
    binding_names = sorted(set(bindings))
    return {
        "usedBy": binding_names[:limit],
        "usedByCount": len(binding_names),
        "usedByPods": sorted(set(pods))[:limit],
    }
