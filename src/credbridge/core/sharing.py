"""Sharing planning: which read-only mirrors of a Credential should exist, and what each share says.

Sharing needs consent on both sides: the owner's namespace says where with a CredentialShare, the
target namespace says from whom with its `credbridge.io/accept-shares-from` annotation. The plan
is computed per source Credential over all of its shares at once, so two shares naming the same
namespace yield one mirror, and deleting one of them keeps the mirror the other still wants.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing

from credbridge.core import names, views

Json = dict[str, typing.Any]

SHARED = "Shared"
NOT_ACCEPTED = "NotAccepted"
FAILED = "Failed"


@dataclasses.dataclass(frozen=True)
class SharePlan:
    """Writes that bring the mirrors of one source in line, and the statuses to report."""

    create: list[Json]
    update: list[tuple[str, str, Json]]
    """(namespace, name, spec) of mirrors whose spec drifted from the source."""
    delete: list[tuple[str, str]]
    share_statuses: dict[str, Json]
    """Desired status of each share of this source, by share name."""
    shared_with: list[str]
    """Namespaces holding a mirror, for the source's status.sharedWith."""


def accepts(namespace: views.NamespaceView, source_namespace: str) -> bool:
    """True when the namespace's accept-shares-from annotation lists `source_namespace` or `*`."""
    listed = str(namespace.annotations.get(names.ACCEPT_SHARES_ANNOTATION, ""))
    accepted = {part.strip() for part in listed.split(",")}
    return "*" in accepted or source_namespace in accepted


def selector_matches(
    selector: collections.abc.Mapping[str, typing.Any], labels: collections.abc.Mapping[str, str]
) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions, ANDed)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = set(expression.get("values") or [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def targets(share: views.ShareView, namespaces: collections.abc.Iterable[views.NamespaceView]) -> list[str]:
    """Names the share targets: its explicit list plus every namespace its selector matches now."""
    wanted = set(share.namespaces)
    if share.namespace_selector is not None:
        for namespace in namespaces:
            if selector_matches(share.namespace_selector, namespace.labels):
                wanted.add(namespace.name)
    return sorted(wanted)


def mirror_object(source: views.CredentialView, target_namespace: str) -> Json:
    """The mirror Credential of `source` in `target_namespace`: no data, only where it comes from."""
    name = names.mirror_name(source.namespace, source.name)
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_KIND,
        "metadata": {
            "name": name,
            "namespace": target_namespace,
            "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE, names.SHARED_FROM_LABEL: name},
        },
        "spec": mirror_spec(source),
    }


def mirror_spec(source: views.CredentialView) -> Json:
    return {
        "type": source.type_name,
        "displayName": source.display_name,
        "id": source.credential_id,
        "sharedFrom": {"namespace": source.namespace, "name": source.name},
    }


def plan_source_shares(
    source_namespace: str,
    source_name: str,
    source: views.CredentialView | None,
    shares: collections.abc.Sequence[views.ShareView],
    namespaces: collections.abc.Sequence[views.NamespaceView],
    existing_mirrors: collections.abc.Sequence[views.CredentialView],
) -> SharePlan:
    """Plan the mirrors of one source Credential from all CredentialShares that name it."""
    by_name = {namespace.name: namespace for namespace in namespaces}
    existing = {mirror.namespace: mirror for mirror in existing_mirrors}
    source_missing = source is None or source.deleting
    wanted: set[str] = set()
    statuses: dict[str, Json] = {}
    for share in shares:
        entries: list[Json] = []
        for target in targets(share, namespaces):
            namespace = by_name.get(target)
            if source_missing:
                entries.append(
                    {
                        "name": target,
                        "state": FAILED,
                        "message": (f"Credential {source_name} does not exist in namespace {source_namespace}"),
                    }
                )
            elif target == source_namespace and target not in share.namespaces:
                continue  # a selector that also matches the owner's namespace: nothing to share there
            elif target == source_namespace:
                entries.append(
                    {
                        "name": target,
                        "state": FAILED,
                        "message": "the source namespace itself: nothing to share",
                    }
                )
            elif namespace is None or namespace.deleting:
                entries.append({"name": target, "state": FAILED, "message": f"namespace {target} does not exist"})
            elif not accepts(namespace, source_namespace):
                entries.append(
                    {
                        "name": target,
                        "state": NOT_ACCEPTED,
                        "message": (
                            f"namespace {target} has not accepted shares from {source_namespace}: "
                            f"its owner can annotate it with {names.ACCEPT_SHARES_ANNOTATION}={source_namespace}"
                        ),
                    }
                )
            else:
                wanted.add(target)
                entries.append(
                    {
                        "name": target,
                        "state": SHARED,
                        "message": f"mirrored as Credential {names.mirror_name(source_namespace, source_name)}",
                    }
                )
        statuses[share.name] = _share_status(entries, source_missing, source_name)

    create: list[Json] = []
    update: list[tuple[str, str, Json]] = []
    if source is not None and not source_missing:
        desired_spec = mirror_spec(source)
        for target in sorted(wanted):
            mirror = existing.get(target)
            if mirror is None:
                create.append(mirror_object(source, target))
            elif {key: mirror.spec.get(key) for key in desired_spec} != desired_spec:
                update.append((target, names.mirror_name(source_namespace, source_name), desired_spec))
    delete = sorted((namespace, mirror.name) for namespace, mirror in existing.items() if namespace not in wanted)
    return SharePlan(create=create, update=update, delete=delete, share_statuses=statuses, shared_with=sorted(wanted))


def _share_status(entries: list[Json], source_missing: bool, source_name: str) -> Json:
    shared = sum(1 for entry in entries if entry["state"] == SHARED)
    pending = sum(1 for entry in entries if entry["state"] == NOT_ACCEPTED)
    failed = [entry for entry in entries if entry["state"] == FAILED]
    if source_missing:
        condition = {
            "type": names.READY_CONDITION,
            "status": "False",
            "reason": "SourceNotFound",
            "message": f"Credential {source_name} does not exist in this namespace: create it or fix spec.credential",
        }
    elif failed:
        condition = {
            "type": names.READY_CONDITION,
            "status": "False",
            "reason": "Failed",
            "message": "; ".join(f"{e['name']}: {e['message']}" for e in failed),
        }
    elif pending:
        condition = {
            "type": names.READY_CONDITION,
            "status": "True",
            "reason": "Pending",
            "message": f"shared with {shared} namespace(s); {pending} have not accepted yet",
        }
    else:
        condition = {
            "type": names.READY_CONDITION,
            "status": "True",
            "reason": "Shared",
            "message": f"shared with {shared} namespace(s)",
        }
    return {"namespaces": entries, "sharedCount": shared, "pendingCount": pending, "conditions": [condition]}


def mark_failed(
    statuses: collections.abc.Mapping[str, Json], failed: collections.abc.Mapping[str, str]
) -> dict[str, Json]:
    """Statuses with the given target namespaces turned to Failed (a write that the plan could not make)."""
    if not failed:
        return dict(statuses)
    result: dict[str, Json] = {}
    for share_name, status in statuses.items():
        entries = [
            {"name": e["name"], "state": FAILED, "message": failed[e["name"]]}
            if e["name"] in failed and e["state"] == SHARED
            else e
            for e in status["namespaces"]
        ]
        result[share_name] = _share_status(entries, False, "")
    return result


def mark_write_failed(statuses: collections.abc.Mapping[str, Json], message: str) -> dict[str, Json]:
    """Statuses with Ready=False, reason WriteFailed: a write the plan needs keeps failing (`message` says which)."""
    condition = {"type": names.READY_CONDITION, "status": "False", "reason": "WriteFailed", "message": message}
    return {share_name: {**status, "conditions": [condition]} for share_name, status in statuses.items()}
