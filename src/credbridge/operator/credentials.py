"""Reconciling one Credential: gather its inputs from the watch cache, plan with core.planning, apply.

Gathering reads only the cache — the Credential, its managed Secret, the Secrets it references,
the other Credentials with its id, its source (for a mirror) — except where freshness matters: a
referenced Secret whose cached data is older than the version the watch reported is read again,
and a periodic verification reads the managed Secret from the API server itself. Applying writes
only what the plan asks for, puts what the API server returned back into the cache (so the next
reconcile plans from it, and the watch event of our own write triggers nothing), and reports a
write that keeps failing on the Credential's status.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import logging
import secrets
import threading
from typing import Any

from credbridge.core import conditions, envrefs, keyring, names, planning, redaction, registry, views
from credbridge.kube import errors
from credbridge.operator import applying, metrics, reading, reconciling
from credbridge.operator import cache as cache_module

logger = logging.getLogger(__name__)

Key = views.Key


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def involved(view: views.CredentialView) -> dict[str, Any]:
    """The Credential as an Event's involved object."""
    return applying.involved(names.CREDENTIAL_KIND, view.namespace, view.name, view.uid, view.resource_version)


@dataclasses.dataclass(frozen=True)
class Gathered:
    """Everything a plan for one Credential depends on, read from the cache (or the API where stated)."""

    inputs: planning.Inputs
    cred_type: registry.CredentialTypeSpec | None
    referenced: collections.abc.Mapping[str, collections.abc.Mapping[str, str] | None]
    duplicate_of: str | None
    source_content: redaction.SecretFields | planning.Failure | None = dataclasses.field(default=None, repr=False)


class CredentialReconciler:
    """Gather → plan → apply for Credentials and mirrors; one call of `reconcile` per work-queue key."""

    def __init__(
        self,
        cache: cache_module.Cache,
        reader: reading.Reader,
        applier: applying.Applier,
        *,
        keyring_now: collections.abc.Callable[[], keyring.Keyring | None],
        types_now: collections.abc.Callable[[], registry.Registry],
        env_lookup: envrefs.Lookup,
        env_policy: envrefs.EnvPolicy,
        enqueue: collections.abc.Callable[[Key], None],
    ) -> None:
        self._cache = cache
        self._reader = reader
        self._applier = applier
        self._keyring_now = keyring_now
        self._types_now = types_now
        self._env_lookup = env_lookup
        self._env_policy = env_policy
        self._enqueue = enqueue
        self._lock = threading.Lock()
        self._verify_from_api: set[Key] = set()
        """Credentials whose next reconcile reads the managed Secret from the API server, not the cache."""

    def verify_from_api(self, key: Key) -> None:
        """Makes the next reconcile of `key` check the managed Secret as stored, not as cached."""
        with self._lock:
            self._verify_from_api.add(key)

    def forget(self, key: Key) -> None:
        """Drops what is remembered about a deleted Credential."""
        with self._lock:
            self._verify_from_api.discard(key)
        self._applier.failures.clear(key)

    # ---- the work-queue entry point ------------------------------------------------------------

    def reconcile(self, key: Key) -> reconciling.Result:
        """Brings one Credential's Secret and status in line."""
        view = self._cache.credential(key)
        if view is None or view.deleting:
            return reconciling.Result.done("skipped")
        with self._lock:
            from_api = key in self._verify_from_api
            self._verify_from_api.discard(key)
        try:
            current = self._managed_secret(view, from_api=from_api)
            plan = self._plan(view, current)
            try:
                return self._apply(view, plan, current)
            except errors.ApiError as error:
                if not (error.conflict and current is None and plan.secret is not None):
                    raise
                # The Secret exists but is not in the cache: not ours (no label), or ours and not
                # seen yet. Plan again from the Secret as stored.
                current = self._managed_secret(view, from_api=True)
                return self._apply(view, self._plan(view, current), current)
        except errors.ApiError as error:
            if error.namespace_terminating:
                logger.debug("skipping %s/%s: its namespace is being deleted", *key)
                return reconciling.Result.done("skipped")
            if from_api:
                self.verify_from_api(key)
            raise

    # ---- gather --------------------------------------------------------------------------------

    def _managed_secret(self, view: views.CredentialView, *, from_api: bool) -> views.SecretView | None:
        if not from_api:
            return self._cache.secret((view.namespace, view.secret_name))
        secret = self._reader.managed_secret(view, from_api=True)
        if secret is None:
            self._cache.remove_secret((view.namespace, view.secret_name))
        return secret

    def _referenced_data(self, namespace: str, name: str) -> collections.abc.Mapping[str, str] | None:
        """A referenced Secret's data: from the cache when it is as new as the watch says, else read."""
        key = (namespace, name)
        known = self._cache.referenced_secret(key)
        if known is not None and known.fresh:
            return known.data
        if known is not None and known.resource_version == "":
            return None  # the watch saw it deleted
        secret = self._reader.secret(namespace, name)
        if secret is None:
            self._cache.store_referenced_data(key, "", None)
            return None
        self._cache.store_referenced_data(key, secret.resource_version, secret.data)
        return secret.data

    def _source_content(self, source_key: Key) -> redaction.SecretFields | planning.Failure:
        """The plaintext of a mirror's source, opened from the source's managed Secret in the cache."""
        where = f"{source_key[0]}/{source_key[1]}"
        source = self._cache.credential(source_key)
        if source is None or source.deleting:
            return planning.Failure("SourceNotFound", f"the shared Credential {where} does not exist any more")
        if not source.ready:
            return planning.Failure("SourceNotReady", f"the shared Credential {where} is not Ready yet")
        content = self._reader.open(source)
        if isinstance(content, planning.Failure):
            return planning.Failure("SourceNotReady", f"the shared Credential {where}: {content.message}")
        return content

    def gather(self, view: views.CredentialView, current: views.SecretView | None) -> Gathered:
        inputs = planning.Inputs(
            now=now_rfc3339(),
            random_bytes=secrets.token_bytes,
            keyring=self._keyring_now(),
            current_secret=current,
        )
        cred_type = self._types_now().get(view.type_name)
        if view.shared_from is not None:
            return Gathered(inputs, cred_type, {}, None, source_content=self._source_content(view.shared_from))
        referenced = {name: self._referenced_data(view.namespace, name) for name in sorted(view.referenced_secrets)}
        duplicate_of = planning.find_duplicate_id(view, self._cache.with_id(view.namespace, view.credential_id))
        return Gathered(inputs, cred_type, referenced, duplicate_of)

    # ---- plan ----------------------------------------------------------------------------------

    def _plan(self, view: views.CredentialView, current: views.SecretView | None) -> planning.Plan:
        gathered = self.gather(view, current)
        if gathered.source_content is not None:
            return planning.plan_mirror(
                view,
                gathered.inputs,
                source_content=gathered.source_content,
                type_version=gathered.cred_type.version if gathered.cred_type else None,
            )
        return planning.plan_credential(
            view,
            gathered.inputs,
            cred_type=gathered.cred_type,
            env_lookup=self._env_lookup,
            env_policy=self._env_policy,
            referenced_secrets=gathered.referenced,
            duplicate_of=gathered.duplicate_of,
        )

    # ---- apply ---------------------------------------------------------------------------------

    def _apply(
        self, view: views.CredentialView, plan: planning.Plan, current: views.SecretView | None
    ) -> reconciling.Result:
        if plan.secret is not None:
            self._write_secret(view, plan.secret, current)
        patch = planning.status_patch(view.status, plan.status)
        if patch is not None:
            try:
                self._write_status(view, patch)
            except errors.ApiError as error:
                if not (error.conflict and plan.secret is not None):
                    raise
                self._write_status_after_conflict(view, plan)
        if plan.event is not None:
            self._applier.event(involved(view), plan.event)
        key_id = str(plan.status.get("keyId") or "")
        metrics.STATE.set_credential(view.key, "False" if plan.failure else "True", view.type_name, key_id)
        if plan.failure:
            logger.info("Credential %s/%s is not ready: %s", view.namespace, view.name, plan.failure.reason)
            return reconciling.Result.done(f"failed:{plan.failure.reason}")
        if plan.secret is None:
            return reconciling.Result.done("unchanged")
        logger.info("Credential %s/%s: Secret %s written (key %s)", view.namespace, view.name, view.secret_name, key_id)
        if view.shared_from is None:
            for mirror in self._cache.mirrors_of(view.key):
                self._enqueue(mirror.key)
        return reconciling.Result.done("written")

    def _write_secret(
        self, view: views.CredentialView, secret: dict[str, Any], current: views.SecretView | None
    ) -> None:
        try:
            self._applier.write_secret(secret, current)
        except errors.ApiError as error:
            if not (error.conflict or error.namespace_terminating) and self._applier.failures.record(view.key):
                self._report_write_failure(view, error)
            raise
        self._applier.failures.clear(view.key)

    def _write_status_after_conflict(self, view: views.CredentialView, plan: planning.Plan) -> None:
        """The Secret was written, then another writer of the status (the OAuth2 refresh, verification) patched
        it first, so the status patch got 409. A plain retry would plan from the written Secret, find nothing
        to write and lose what this write means (`updatedDate`, `keyId`): write the planned status onto the
        Credential as stored instead, its Ready condition merged into the other writers' conditions."""
        fresh = self._reader.credential(view.key, from_api=True)
        if fresh is None or fresh.generation != view.generation:
            raise errors.ApiError(
                f"update the status of Credential {view.namespace}/{view.name}",
                409,
                "its spec changed while its Secret was written: planned again",
            )
        self._cache.put_credential(fresh)
        desired = dict(plan.status)
        ours = [c for c in plan.status.get("conditions") or () if c.get("type") == names.READY_CONDITION]
        desired["conditions"] = conditions.merge(fresh.status, ours)
        patch = planning.status_patch(fresh.status, desired)
        if patch is not None:
            self._write_status(fresh, patch)

    def _write_status(self, view: views.CredentialView, patch: dict[str, Any]) -> None:
        updated = self._applier.patch_credential_status(view, patch)
        if updated.credential_id != view.credential_id or updated.established_id != view.established_id:
            # Which of several Credentials with one id holds it may have changed.
            for other in self._cache.with_id(view.namespace, updated.credential_id):
                if other.name != view.name:
                    self._enqueue(other.key)

    def _report_write_failure(self, view: views.CredentialView, error: errors.ApiError) -> None:
        """After several failed writes in a row, says so on the status (Ready=False, WriteFailed)."""
        plan = planning.plan_write_failure(
            view, now=now_rfc3339(), target=f"Secret {view.secret_name}", error=error.explanation
        )
        patch = planning.status_patch(view.status, plan.status)
        try:
            if patch is not None:
                self._write_status(view, patch)
            if plan.event is not None:
                self._applier.event(involved(view), plan.event)
        except errors.ApiError as status_error:
            logger.warning(
                "could not report the failed write on Credential %s/%s: %s",
                view.namespace,
                view.name,
                status_error.explanation,
            )
        metrics.STATE.set_credential(view.key, "False", view.type_name, str(view.status.get("keyId") or ""))
