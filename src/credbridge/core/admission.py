"""Admission decisions: what the validating webhook says to a write of a Credential, a managed Secret
or a CredentialBinding.

The webhook gives fast feedback at `kubectl apply` with the same validation the reconciler uses,
keeps mirrors read-only for everyone but the operator, refuses deleting a Credential that Pods or
CredentialBindings still use, and checks a binding's templates against its Credential's type.
Deciding is pure; the webhook handlers only gather the Pods, bindings and Credential.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing

from credbridge.core import binding, lint, names, registry, sealing, templating, validation

Json = collections.abc.Mapping[str, typing.Any]

SYSTEM_CONTROLLERS = frozenset(
    {
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:serviceaccount:kube-system:namespace-controller",
        "system:kube-controller-manager",
    }
)
"""Identities that must be able to delete mirrors and their Secrets (garbage collection, namespace deletion)."""

LITERAL_SECRET_MODES = ("allow", "warn", "deny")

API_SERVER_MAX_REQUEST_BYTES = 3 * 1024 * 1024
"""kube-apiserver's limit on a JSON request body: no object reaches the webhook larger than a client
could send. (etcd's default limit on a stored object, 1.5 MiB, is lower; a Secret's data grows by a
third as base64 in JSON, and still fits.)"""
MAX_REVIEW_BYTES = 2 * API_SERVER_MAX_REQUEST_BYTES + 1024 * 1024
"""Largest AdmissionReview the webhook server reads: an UPDATE carries the new and the old object,
plus 1 MiB for the review's own fields. A smaller limit refuses writes of large objects with an
opaque HTTP 413 (aiohttp's default is 1 MiB: a Credential of 320 KiB could not be updated)."""


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()


ALLOW = Decision(True)


def _source_of(obj: Json | None) -> str | None:
    """`namespace/name` of the source when `obj` is (or claims to be) a mirror."""
    if not obj:
        return None
    shared_from = (obj.get("spec") or {}).get("sharedFrom")
    if shared_from:
        return f"{shared_from.get('namespace')}/{shared_from.get('name')}"
    label = ((obj.get("metadata") or {}).get("labels") or {}).get(names.SHARED_FROM_LABEL)
    return str(label).replace(".", "/", 1) if label else None


def review_credential(
    operation: str,
    new: Json | None,
    old: Json | None,
    *,
    username: str,
    operator_username: str,
    types: registry.Registry,
    literal_secrets: str,
    pods_using_secret: collections.abc.Sequence[str] = (),
    bindings_using: collections.abc.Sequence[str] = (),
) -> Decision:
    """Decide a CREATE, UPDATE or DELETE of a Credential.

    `pods_using_secret` names Pods reading its Secret or its bindings' Secrets; `bindings_using`
    names the CredentialBindings that render it.
    """
    obj = new if new is not None else old
    metadata = (obj or {}).get("metadata") or {}
    where = f"Credential {metadata.get('namespace')}/{metadata.get('name')}"
    if username == operator_username:
        return ALLOW
    source = _source_of(new) or _source_of(old)
    if source is not None:
        if operation == "DELETE" and username in SYSTEM_CONTROLLERS:
            return ALLOW
        verb = {"CREATE": "create", "UPDATE": "change", "DELETE": "delete"}.get(operation, operation.lower())
        if operation == "CREATE":
            claim = (
                "spec.sharedFrom"
                if (new or {}).get("spec", {}).get("sharedFrom")
                else (f"the label {names.SHARED_FROM_LABEL}")
            )
            return Decision(
                False,
                (
                    f"{where}: only the credbridge operator can create a Credential with {claim} "
                    f"(here {source}): remove it, or ask the owner of namespace {source.split('/')[0]} to share it "
                    "with a CredentialShare, and accept it with the namespace annotation "
                    f"{names.ACCEPT_SHARES_ANNOTATION}"
                ),
            )
        return Decision(
            False,
            (
                f"{where} is a read-only mirror of Credential {source}, owned by namespace "
                f"{source.split('/')[0]}: you cannot {verb} it; ask that namespace's owners to change or revoke "
                "the CredentialShare"
            ),
        )
    if operation == "DELETE":
        annotations = metadata.get("annotations") or {}
        if (pods_using_secret or bindings_using) and annotations.get(names.ALLOW_DELETE_IN_USE_ANNOTATION) != "true":
            users = []
            if pods_using_secret:
                users.append(f"its Secret (or a binding's Secret) is referenced by Pod(s) {_listed(pods_using_secret)}")
            if bindings_using:
                users.append(f"it is rendered by CredentialBinding(s) {_listed(bindings_using)}")
            return Decision(
                False,
                (
                    f"{where} is in use: {'; '.join(users)}; delete or change those first, or annotate the "
                    f'Credential {names.ALLOW_DELETE_IN_USE_ANNOTATION}="true" to delete it anyway'
                ),
            )
        return ALLOW
    if operation == "UPDATE" and old is not None and (new or {}).get("spec") == old.get("spec"):
        # Metadata-only change (labels, annotations such as allow-delete-in-use): the content was
        # judged before, and a Credential made invalid by a type change must still be annotatable.
        return ALLOW
    return _review_content(where, new or {}, types, literal_secrets)


def _listed(items: collections.abc.Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(sorted(items)[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def sealed_data_problems(obj: Json) -> list[str]:
    """What the headers of a Credential's spec.sealedData say against applying it: a value that is not a
    sealed value, or one sealed for another namespace, Credential or field. The webhook cannot see the
    plaintext (only the operator's reconciler opens it), but the scope is public."""
    metadata = obj.get("metadata") or {}
    namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
    spec = obj.get("spec") or {}
    sealed, type_name = spec.get("sealedData") or {}, str(spec.get("type") or "TYPE")
    found = (
        sealing.placement(str(field), token, namespace, name, type_name=type_name)
        for field, token in sorted(sealed.items())
    )
    return [placement.message for placement in found if placement.verdict != "ok"]


def _review_content(where: str, obj: Json, types: registry.Registry, literal_secrets: str) -> Decision:
    spec = obj.get("spec") or {}
    type_name = str(spec.get("type", ""))
    data = {str(k): str(v) for k, v in (spec.get("data") or {}).items()}
    value_from = list(spec.get("valueFrom") or {})
    sealed = {str(k): str(v) for k, v in (spec.get("sealedData") or {}).items()}
    cred_type = types.get(type_name)
    problems = [problem.message for problem in validation.check_spec(cred_type, type_name, data, value_from, sealed)]
    problems.extend(sealed_data_problems(obj))
    if problems:
        return Decision(False, f"{where}: {'; '.join(problems)}")
    assert cred_type is not None
    # Troubleshooting lint (extra spaces, another vendor's key) warns and never refuses.
    hints = tuple(f"{where}: {warning.message}" for warning in lint.lint_literals(cred_type, data))
    literal = validation.literal_secret_fields(cred_type, data)
    if not literal or literal_secrets == "allow":
        return Decision(True, warnings=hints) if hints else ALLOW
    text = (
        f"{where}: field(s) {', '.join(literal)} hold a literal secret in spec.data, which ends up in Git and "
        "in the object (and in kubectl's last-applied annotation unless you use --server-side); use a "
        "sealed value (credbridge seal, spec.sealedData), a <<CRED_...>> reference or spec.valueFrom instead"
    )
    if literal_secrets == "deny":
        return Decision(False, text)
    return Decision(True, warnings=(text, *hints))


def review_managed_secret(
    operation: str, new: Json | None, old: Json | None, *, username: str, operator_username: str
) -> Decision:
    """Decide an UPDATE or DELETE of a Secret labelled as managed by credbridge."""
    obj = old if old is not None else new
    metadata = (obj or {}).get("metadata") or {}
    label = (metadata.get("labels") or {}).get(names.SHARED_FROM_LABEL)
    if not label or username == operator_username or username in SYSTEM_CONTROLLERS:
        return ALLOW
    source = str(label).replace(".", "/", 1)
    verb = "delete" if operation == "DELETE" else "change"
    return Decision(
        False,
        (
            f"Secret {metadata.get('namespace')}/{metadata.get('name')} belongs to a read-only mirror of Credential "
            f"{source}, owned by namespace {source.split('/')[0]}: you cannot {verb} it; ask that namespace's owners "
            "to change or revoke the CredentialShare"
        ),
    )


def review_binding(
    operation: str,
    new: Json | None,
    old: Json | None,
    *,
    credential: Json | None,
    types: registry.Registry,
    binding_secrets: str,
) -> Decision:
    """Decide a CREATE or UPDATE of a CredentialBinding: its reference, templates and rollout targets.

    `credential` is the Credential it names (None when it does not exist yet: the binding is
    accepted with a warning and waits for it).
    """
    if new is None or operation not in ("CREATE", "UPDATE"):
        return ALLOW
    if operation == "UPDATE" and old is not None and new.get("spec") == old.get("spec"):
        return ALLOW
    view = binding.BindingView.from_object(new)
    problems: list[str] = []
    reference = binding.reference_problem(view.credential_name)
    if reference is not None:
        problems.append(reference)
    templates: templating.Templates | None = None
    if view.template is not None:
        try:
            templates = templating.parse_templates(view.template)
        except templating.TemplateError as error:
            problems.extend(error.problems)
    problems.extend(binding.rollout_problems(view.rollout_targets))
    warnings: list[str] = []
    if credential is None:
        if reference is None:
            warnings.append(
                f"Credential {view.credential_name} does not exist in namespace {view.namespace} yet: "
                "the binding waits for it"
            )
    elif templates is not None:
        type_name = str((credential.get("spec") or {}).get("type", ""))
        cred_type = types.get(type_name)
        if cred_type is not None:
            problems.extend(templating.unknown_field_problems(templates, cred_type.field_names(), type_name))
    if problems:
        return Decision(False, f"{view.where}: " + "; ".join(problems))
    if binding_secrets == "deny" and view.secret_name is not None:
        warnings.append(
            f"{view.where}: plain Secret output is turned off in this cluster (--binding-secrets=deny): "
            "spec.secret will not be written"
        )
    return Decision(True, warnings=tuple(warnings))


def pods_using_secret(pods: collections.abc.Iterable[Json], secret_name: str) -> list[str]:
    """Names of Pods that reference `secret_name` through env, envFrom, volumes or projected volumes."""
    return pods_using_secrets(pods, {secret_name})


def pods_using_secrets(
    pods: collections.abc.Iterable[Json], secret_names: collections.abc.Collection[str]
) -> list[str]:
    """Names of Pods that reference any of `secret_names` through env, envFrom, volumes or projected volumes."""
    using: list[str] = []
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        if secrets_used_by_pod(pod) & set(secret_names):
            using.append(str((pod.get("metadata") or {}).get("name")))
    return using


def secrets_used_by_pod(pod: Json) -> set[str]:
    """Names of the Secrets a Pod references through env, envFrom, volumes or projected volumes."""
    spec = pod.get("spec") or {}
    used: set[str] = set()
    containers = [
        *(spec.get("containers") or []),
        *(spec.get("initContainers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]
    for container in containers:
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name"):
                used.add(str(ref["name"]))
        for source in container.get("envFrom") or []:
            if (source.get("secretRef") or {}).get("name"):
                used.add(str(source["secretRef"]["name"]))
    for volume in spec.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName"):
            used.add(str(volume["secret"]["secretName"]))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name"):
                used.add(str(source["secret"]["name"]))
    return used
