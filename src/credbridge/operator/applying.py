"""Applying plans: the one place the operator's controllers post Events, write Secrets and patch statuses.

Every controller (Credentials, shares, bindings, each external sync) applies its plan through an
`Applier`, so the rules are the same everywhere:
- what the API server returns is put back into the watch cache (write-through), so the next plan
  starts from it and the watch event of our own write triggers nothing;
- status patches carry the resourceVersion they were planned from, so a concurrent change fails
  with 409 (`errors.ApiError.conflict`) and the controller plans again instead of overwriting it;
- every write is counted in `credbridge_api_writes_total{resource,verb}`;
- an Event is best effort: a refusal is logged (at debug level when the namespace is being
  deleted, which refuses every new Event; at warning otherwise) and never stops a reconcile;
- a write that keeps failing is counted per object (`WriteFailures`), so a controller can say so on
  the object's status after a few attempts instead of retrying in silence.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Mapping
from typing import Any

from credbridge.core import names, planning, views
from credbridge.kube import connecting, errors, writing
from credbridge.operator import cache as cache_module
from credbridge.operator import metrics

logger = logging.getLogger(__name__)

Json = dict[str, Any]


def involved(kind: str, namespace: str, name: str, uid: str, resource_version: str = "") -> Json:
    """One of credbridge's objects as an Event's involved object."""
    metadata = {"namespace": namespace, "name": name, "uid": uid}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": names.API_VERSION, "kind": kind, "metadata": metadata}


class WriteFailures:
    """Consecutive failed writes per object, so that a controller reports a write that keeps failing."""

    def __init__(self, before_report: int) -> None:
        self.before_report = before_report
        """Failures in a row after which `record` says to report (one alone is often a conflict)."""
        self._lock = threading.Lock()
        self._counts: dict[Hashable, int] = {}

    def record(self, key: Hashable) -> bool:
        """Counts one more failure of `key`; True once there were `before_report` in a row."""
        with self._lock:
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
        return count >= self.before_report

    def clear(self, key: Hashable) -> None:
        """A write of `key` succeeded (or the object is gone): start counting again."""
        with self._lock:
            self._counts.pop(key, None)


class Applier:
    """Writes to the API server for the controllers, written through into the watch cache."""

    def __init__(self, api: connecting.ApiClient, cache: cache_module.Cache, *, write_failures_before_report: int):
        self.api = api
        self.cache = cache
        self.failures = WriteFailures(write_failures_before_report)

    def event(self, involved_object: Mapping[str, Any], event: planning.Event) -> None:
        """Posts an Event about `involved_object`; a refusal is logged, never raised."""
        try:
            writing.post_event(
                self.api, dict(involved_object), type=event.type, reason=event.reason, message=event.message
            )
        except errors.ApiError as error:
            metadata = involved_object.get("metadata") or {}
            logger.log(
                logging.DEBUG if error.namespace_terminating else logging.WARNING,
                "could not post an event for %s %s/%s: %s",
                involved_object.get("kind"),
                metadata.get("namespace"),
                metadata.get("name"),
                error.explanation,
            )
            return
        metrics.API_WRITES.labels("events", "create").inc()

    def write_secret(self, wanted: Json, current: views.SecretView | None) -> views.SecretView:
        """Creates `wanted` (no `current`) or replaces `current` with it, failing with 409 if it moved on."""
        if current is None:
            written = writing.create_secret(self.api, wanted)
            metrics.API_WRITES.labels("secrets", "create").inc()
        else:
            written = writing.replace_secret(self.api, wanted, current.resource_version)
            metrics.API_WRITES.labels("secrets", "update").inc()
        view = views.SecretView.from_object(written)
        if view.managed:
            self.cache.put_secret(view)
        return view

    def patch_secret_data(self, namespace: str, name: str, data: Json, *, resource_version: str) -> views.SecretView:
        """Sets some data keys (base64 values) of a Secret planned from `resource_version` (409 when it moved on)."""
        written = writing.patch_secret_data(self.api, namespace, name, data, resource_version=resource_version)
        metrics.API_WRITES.labels("secrets", "patch").inc()
        view = views.SecretView.from_object(written)
        if view.managed:
            self.cache.put_secret(view)
        return view

    def delete_secret(self, namespace: str, name: str, *, uid: str) -> bool:
        """Deletes the Secret with `uid` (never another one that took its name); False when it was gone."""
        deleted = writing.delete_secret(self.api, namespace, name, uid=uid)
        if deleted:
            metrics.API_WRITES.labels("secrets", "delete").inc()
        self.cache.remove_secret((namespace, name))
        return deleted

    def patch_status(
        self, plural: str, kind: str, namespace: str, name: str, patch: Json, *, resource_version: str
    ) -> Json:
        """Merge-patches a status planned from `resource_version`; returns the object as stored (409 when
        it changed meanwhile: plan again from the newer version)."""
        written = writing.patch_status(
            self.api, plural, kind, namespace, name, patch, resource_version=resource_version or None
        )
        metrics.API_WRITES.labels(f"{plural}/status", "patch").inc()
        return written

    def set_finalizers(
        self, plural: str, kind: str, namespace: str, name: str, finalizers: list[str], *, resource_version: str
    ) -> Json | None:
        """Replaces an object's finalizers if it is still at `resource_version`; None when it is gone."""
        written = writing.set_finalizers(
            self.api, plural, kind, namespace, name, finalizers, resource_version=resource_version
        )
        if written is not None:
            metrics.API_WRITES.labels(plural, "patch").inc()
        return written

    def create_credential(self, credential: Json) -> views.CredentialView:
        """Creates a Credential (a mirror) and caches it as stored."""
        created = views.CredentialView.from_object(writing.create_credential(self.api, credential))
        metrics.API_WRITES.labels("credentials", "create").inc()
        self.cache.put_credential(created)
        return created

    def patch_credential_spec(self, namespace: str, name: str, spec: Json) -> views.CredentialView:
        """Merge-patches a Credential's spec (a mirror's drift reverted) and caches it as stored."""
        patched = views.CredentialView.from_object(writing.patch_credential(self.api, namespace, name, {"spec": spec}))
        metrics.API_WRITES.labels("credentials", "patch").inc()
        self.cache.put_credential(patched)
        return patched

    def delete_credential(self, namespace: str, name: str) -> bool:
        """Deletes a Credential (a mirror); False when it was gone."""
        deleted = writing.delete_credential(self.api, namespace, name)
        if deleted:
            metrics.API_WRITES.labels("credentials", "delete").inc()
        return deleted

    def patch_credential_status(self, view: views.CredentialView, patch: Json) -> views.CredentialView:
        """Merge-patches a Credential's status planned from `view`, and caches what the API server stored."""
        written = self.patch_status(
            names.CREDENTIAL_PLURAL,
            names.CREDENTIAL_KIND,
            view.namespace,
            view.name,
            patch,
            resource_version=view.resource_version,
        )
        updated = views.CredentialView.from_object(written)
        self.cache.put_credential(updated)
        return updated
