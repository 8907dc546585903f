"""The controller: keeps a view of Credentials from watch events, and turns "reconcile this key"
into gathered inputs → a core plan → the writes the plan asks for.

kopf handlers (handlers.py) only feed events in; every reconcile goes through one work queue, so a
Credential is never reconciled by two threads at once, whatever triggered it (its own change, a
referenced Secret, its type, a key rotation, a share).
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from credbridge.core import envelope, keyring, names, planning, registry, sharing
from credbridge.kube import builtins, fetching, writing
from credbridge.operator import metrics, workqueue
from credbridge.operator import settings as settings_module

logger = logging.getLogger(__name__)

Json = dict[str, Any]
Key = tuple[str, str]


def namespace_terminating(error: client.ApiException) -> bool:
    """True for the API server's refusal to create objects in a namespace that is being deleted."""
    return error.status == 403 and "being terminated" in str(error.body or "")


def _referenced_secrets(body: Mapping[str, Any]) -> set[str]:
    """Names of the Secrets a Credential's spec.valueFrom reads."""
    value_from = (body.get("spec") or {}).get("valueFrom") or {}
    return {str((source.get("secretKeyRef") or {}).get("name")) for source in value_from.values()}


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Controller:
    """Shared state of one operator process and the reconcile logic around the core planners."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: settings_module.OperatorSettings,
        ring: keyring.Keyring | None,
        types: registry.Registry,
        env_lookup: Callable[[str], str | None] = os.environ.get,
    ) -> None:
        self.api = api
        self.settings = settings
        self.env_lookup = env_lookup
        self.env_policy = settings_module.env_policy(settings.env.allow, settings.env.namespace_rules)
        self._lock = threading.RLock()
        self._keyring = ring
        self._types = types
        self._credentials: dict[Key, Json] = {}
        self._referenced_by: dict[Key, set[Key]] = {}
        """(namespace, Secret name) -> Credentials whose spec.valueFrom reads that Secret."""
        self._shares: dict[Key, Json] = {}
        self._share_status: dict[Key, Json] = {}
        self.queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue(self._reconcile_key, workers=settings.workers)
        self.share_queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue(
            self._reconcile_share_key, workers=1, name="share"
        )
        metrics.STATE.set_share_source(self._share_state_counts)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.queue.start()
        self.share_queue.start()

    def stop(self) -> None:
        self.queue.stop()
        self.share_queue.stop()

    # ---- inputs from watches ---------------------------------------------------------------

    def credential_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event on a Credential: remember it and queue it (and what depends on it)."""
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        with self._lock:
            previous = self._credentials.get(key)
            if previous is not None:
                for secret in _referenced_secrets(previous):
                    self._referenced_by.get((key[0], secret), set()).discard(key)
            if event_type == "DELETED":
                self._credentials.pop(key, None)
                metrics.STATE.forget_credential(key)
            else:
                self._credentials[key] = dict(body)
                for secret in _referenced_secrets(body):
                    self._referenced_by.setdefault((key[0], secret), set()).add(key)
            same_id = [other for other in self._same_id(key, body) if other != key]
        for other in same_id:
            self.queue.add(other)
        if event_type != "DELETED":
            self.queue.add(key)
        shared_from = (body.get("spec") or {}).get("sharedFrom")
        if shared_from:
            # A mirror changed or went away: its source's share plan reverts the drift.
            self.share_queue.add((str(shared_from.get("namespace")), str(shared_from.get("name"))))
        elif event_type == "DELETED" or self._shares_of(key):
            self.share_queue.add(key)

    def secret_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event on a Secret: queue its owning Credential and every Credential referencing it."""
        metadata = body.get("metadata") or {}
        namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
        labels = metadata.get("labels") or {}
        owner = labels.get(names.CREDENTIAL_LABEL)
        if labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY_VALUE and owner:
            self.queue.add((namespace, owner))
        for key in self._referencing(namespace, name):
            self.queue.add(key)

    def type_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A CredentialType changed: update the registry and re-validate its Credentials.

        Built-ins always come from the package: a change in the cluster is reverted, not used.
        """
        spec_name = str((body.get("spec") or {}).get("name", ""))
        if spec_name in self.types().builtins:
            builtins.revert(self.api, event_type, body, self.types().builtins)
            return
        try:
            spec = registry.type_from_object(body)
        except registry.TypeDefinitionError as error:
            logger.warning("ignoring CredentialType %s: %s", (body.get("metadata") or {}).get("name"), error)
            return
        with self._lock:
            if event_type == "DELETED":
                self._types = self._types.without_custom(spec.name)
            else:
                self._types = self._types.with_custom(spec)
            affected = [
                key for key, cred in self._credentials.items() if (cred.get("spec") or {}).get("type") == spec.name
            ]
        for key in affected:
            self.queue.add(key)

    def keyring_changed(self, ring: keyring.Keyring | None, error: str | None) -> None:
        """The keyring Secret changed: use the new keys at once and re-encrypt at a bounded rate."""
        with self._lock:
            if ring is None:
                logger.error("keyring problem, keeping the last good keyring: %s", error)
                return
            rotated = self._keyring is not None and self._keyring.active_id != ring.active_id
            self._keyring = ring
            stale = [
                key
                for key, cred in self._credentials.items()
                if (cred.get("status") or {}).get("keyId") not in (None, ring.active_id)
            ]
        if rotated:
            logger.info("active key is now %s; re-encrypting %d credentials", ring.active_id, len(stale))
        metrics.REENCRYPTION_PENDING.set(len(stale))
        interval = 1.0 / max(self.settings.keyring.reencrypt_per_second, 0.001)
        for index, key in enumerate(stale):
            self.queue.add_after(key, index * interval)

    def share_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A CredentialShare changed: re-plan the mirrors of the Credential it names (and named before)."""
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        credential = str((body.get("spec") or {}).get("credential", ""))
        with self._lock:
            previous = self._shares.get(key)
            if event_type == "DELETED":
                self._shares.pop(key, None)
            else:
                self._shares[key] = dict(body)
        self.share_queue.add((key[0], credential))
        if previous is not None:
            before = str((previous.get("spec") or {}).get("credential", ""))
            if before != credential:
                self.share_queue.add((key[0], before))

    def namespace_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Consent or labels of a namespace may have changed: re-plan every shared source."""
        with self._lock:
            sources = {
                (key[0], str((share.get("spec") or {}).get("credential", ""))) for key, share in self._shares.items()
            }
        for source in sources:
            self.share_queue.add(source)

    # ---- lookups over the view -------------------------------------------------------------

    def credential(self, key: Key) -> Json | None:
        with self._lock:
            return self._credentials.get(key)

    def types(self) -> registry.Registry:
        with self._lock:
            return self._types

    def types_including(self, type_name: str) -> registry.Registry:
        """The registry, after reading `type_name` from the cluster if it is not known yet.

        A standby replica's watches are paused, yet its webhook still answers: it looks a type
        up instead of refusing a Credential of a type created since it started.
        """
        types = self.types()
        if not type_name or types.get(type_name) is not None:
            return types
        obj = fetching.read_credential_type(self.api, registry.type_object_name(type_name))
        if obj is None:
            return types
        try:
            spec = registry.type_from_object(obj)
        except registry.TypeDefinitionError:
            return types
        with self._lock:
            self._types = self._types.with_custom(spec)
            return self._types

    def current_keyring(self) -> keyring.Keyring | None:
        with self._lock:
            return self._keyring

    def _same_id(self, key: Key, body: Mapping[str, Any]) -> list[Key]:
        view = planning.CredentialView.from_object(body)
        return [
            other
            for other, cred in self._credentials.items()
            if other[0] == key[0] and planning.CredentialView.from_object(cred).credential_id == view.credential_id
        ]

    def _referencing(self, namespace: str, secret_name: str) -> list[Key]:
        with self._lock:
            return sorted(self._referenced_by.get((namespace, secret_name), ()))

    def _shares_of(self, source: Key) -> list[Json]:
        with self._lock:
            return [
                dict(share)
                for key, share in self._shares.items()
                if key[0] == source[0] and (share.get("spec") or {}).get("credential") == source[1]
            ]

    def _remember_status(self, cache: dict[Key, Json], key: Key, patch: Json, uid: str | None = None) -> None:
        """Merge a status patch we just wrote into the cached body, so the next plan starts from it.

        With `uid`, only when the cached object is still the one patched (not a re-created namesake).
        """
        with self._lock:
            cached = cache.get(key)
            if cached is not None and (uid is None or (cached.get("metadata") or {}).get("uid") == uid):
                cached["status"] = {**(cached.get("status") or {}), **patch}

    # ---- reconciling Credentials -----------------------------------------------------------

    def _reconcile_key(self, key: Key) -> None:
        body = self.credential(key)
        if body is None:
            return
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        started = time.perf_counter()
        kind = "mirror" if (body.get("spec") or {}).get("sharedFrom") else "credential"
        try:
            result = self._reconcile(key, body)
        except client.ApiException as error:
            if namespace_terminating(error):
                # Its namespace is being deleted, and the Credential with it: nothing to do.
                logger.debug("skipping %s/%s: its namespace is being deleted", *key)
                metrics.RECONCILES.labels(kind, "skipped").inc()
                return
            metrics.RECONCILES.labels(kind, "error").inc()
            if error.status == 409:
                logger.debug("conflict while reconciling %s/%s; retrying", *key)
            raise
        finally:
            metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(kind, result).inc()

    def _reconcile(self, key: Key, body: Json) -> str:
        view = planning.CredentialView.from_object(body)
        current = fetching.read_secret(self.api, view.namespace, view.secret_name)
        inputs = planning.Inputs(
            now=now_rfc3339(),
            random_bytes=secrets.token_bytes,
            keyring=self.current_keyring(),
            current_secret=planning.SecretView.from_object(current) if current else None,
        )
        plan = self._plan_mirror(view, inputs) if view.shared_from else self._plan_source(view, inputs)
        return self._apply(body, view, plan, current)

    def _plan_source(self, view: planning.CredentialView, inputs: planning.Inputs) -> planning.Plan:
        referenced: dict[str, Mapping[str, str] | None] = {}
        for source in (view.spec.get("valueFrom") or {}).values():
            name = str((source.get("secretKeyRef") or {}).get("name", ""))
            if name and name not in referenced:
                secret = fetching.read_secret(self.api, view.namespace, name)
                referenced[name] = planning.SecretView.from_object(secret).data if secret else None
        with self._lock:
            others = [cred for key, cred in self._credentials.items() if key[0] == view.namespace]
        return planning.plan_credential(
            view,
            inputs,
            cred_type=self.types().get(view.type_name),
            env_lookup=self.env_lookup,
            env_policy=self.env_policy,
            referenced_secrets=referenced,
            duplicate_of=planning.find_duplicate_id(view, others),
        )

    def _plan_mirror(self, view: planning.CredentialView, inputs: planning.Inputs) -> planning.Plan:
        assert view.shared_from is not None
        source_key = view.shared_from
        source_body = self.credential(source_key)
        content = self._source_content(source_key, source_body)
        cred_type = self.types().get(view.type_name)
        return planning.plan_mirror(
            view, inputs, source_content=content, type_version=cred_type.version if cred_type else None
        )

    def _source_content(self, source_key: Key, source_body: Json | None) -> Any:
        """The plaintext of a source Credential, read back from its own managed Secret."""
        where = f"{source_key[0]}/{source_key[1]}"
        if source_body is None:
            return planning.Failure("SourceNotFound", f"the shared Credential {where} does not exist any more")
        source = planning.CredentialView.from_object(source_body)
        ready = next((c for c in source.status.get("conditions") or [] if c.get("type") == names.READY_CONDITION), None)
        if not ready or ready.get("status") != "True":
            return planning.Failure("SourceNotReady", f"the shared Credential {where} is not Ready yet")
        secret = fetching.read_secret(self.api, source.namespace, source.secret_name)
        ring = self.current_keyring()
        if secret is None or ring is None:
            return planning.Failure("SourceNotReady", f"the Secret of the shared Credential {where} is not available")
        try:
            return planning.open_managed_secret(source, planning.SecretView.from_object(secret), ring)
        except envelope.EnvelopeError:
            return planning.Failure(
                "SourceNotReady", f"the Secret of the shared Credential {where} could not be opened"
            )

    def _apply(self, body: Json, view: planning.CredentialView, plan: planning.Plan, current: Json | None) -> str:
        if plan.secret is not None:
            if current is None:
                writing.create_secret(self.api, plan.secret)
                metrics.API_WRITES.labels("secrets", "create").inc()
            else:
                writing.replace_secret(self.api, plan.secret, str(current["metadata"]["resourceVersion"]))
                metrics.API_WRITES.labels("secrets", "update").inc()
        patch = planning.status_patch(view.status, plan.status)
        if patch is not None:
            writing.patch_credential_status(self.api, view.namespace, view.name, patch)
            metrics.API_WRITES.labels("credentials/status", "patch").inc()
            self._remember_status(self._credentials, (view.namespace, view.name), patch, uid=view.uid)
        if plan.event is not None:
            try:
                writing.post_event(
                    self.api, body, type=plan.event.type, reason=plan.event.reason, message=plan.event.message
                )
                metrics.API_WRITES.labels("events", "create").inc()
            except client.ApiException as error:
                # A namespace being deleted refuses new Events (403): expected, not an RBAC gap.
                terminating = namespace_terminating(error)
                logger.log(
                    logging.DEBUG if terminating else logging.WARNING,
                    "could not post an event for %s/%s: HTTP %s %s",
                    view.namespace,
                    view.name,
                    error.status,
                    error.reason,
                )
        ready = "False" if plan.failure else "True"
        key_id = str(plan.status.get("keyId") or "")
        metrics.STATE.set_credential((view.namespace, view.name), ready, view.type_name, key_id)
        if plan.failure:
            logger.info("Credential %s/%s is not ready: %s", view.namespace, view.name, plan.failure.reason)
            return f"failed:{plan.failure.reason}"
        if plan.secret is not None:
            logger.info(
                "Credential %s/%s: Secret %s written (key %s)",
                view.namespace,
                view.name,
                view.secret_name,
                key_id,
            )
            self._update_reencryption_gauge()
            if not view.shared_from:
                self._queue_mirrors((view.namespace, view.name))
            return "written"
        return "unchanged"

    def _update_reencryption_gauge(self) -> None:
        ring = self.current_keyring()
        if ring is None:
            return
        counts = metrics.STATE.key_ids()
        metrics.REENCRYPTION_PENDING.set(sum(n for key_id, n in counts.items() if key_id and key_id != ring.active_id))

    # ---- sharing ---------------------------------------------------------------------------

    def _queue_mirrors(self, source: Key) -> None:
        """The source's content changed: every mirror of it re-encrypts from the new content."""
        label = names.mirror_name(*source)
        with self._lock:
            mirrors = [
                key
                for key, cred in self._credentials.items()
                if ((cred.get("metadata") or {}).get("labels") or {}).get(names.SHARED_FROM_LABEL) == label
            ]
        for key in mirrors:
            self.queue.add(key)

    def _remove_mirror(self, namespace: str, name: str) -> None:
        """Delete a mirror and its Secret now, rather than leaving the Secret to the garbage collector.

        Revocation should take effect at once: a revoked namespace must not keep readable content
        for however long garbage collection takes.
        """
        mirror = fetching.read_credential(self.api, namespace, name)
        if mirror is None:
            return
        secret_name = planning.CredentialView.from_object(mirror).secret_name
        if writing.delete_credential(self.api, namespace, name):
            metrics.API_WRITES.labels("credentials", "delete").inc()
        secret = fetching.read_secret(self.api, namespace, secret_name)
        owner = planning.SecretView.from_object(secret).controller_uid if secret else None
        if secret is not None and owner == mirror["metadata"]["uid"]:
            writing.delete_secret(self.api, namespace, secret_name, uid=secret["metadata"]["uid"])
            metrics.API_WRITES.labels("secrets", "delete").inc()

    def _share_state_counts(self) -> dict[str, int]:
        with self._lock:
            counts: collections.Counter[str] = collections.Counter(
                entry["state"] for status in self._share_status.values() for entry in status.get("namespaces", [])
            )
        return dict(counts)

    def _reconcile_share_key(self, source_key: Key) -> None:
        """Bring the mirrors of one source Credential in line with all the shares that name it."""
        namespace, name = source_key
        source = self.credential(source_key)
        shares = self._shares_of(source_key)
        namespaces = fetching.list_namespaces(self.api)
        mirrors = fetching.list_credentials(
            self.api, None, label_selector=f"{names.SHARED_FROM_LABEL}={names.mirror_name(namespace, name)}"
        )
        plan = sharing.plan_source_shares(namespace, name, source, shares, namespaces, mirrors)
        failed: dict[str, str] = {}
        for mirror in plan.create:
            try:
                writing.create_credential(self.api, mirror)
                metrics.API_WRITES.labels("credentials", "create").inc()
            except client.ApiException as error:
                if namespace_terminating(error):
                    continue
                if error.status != 409:
                    raise
                failed[mirror["metadata"]["namespace"]] = (
                    f"a Credential named {mirror['metadata']['name']} already exists there and is not a mirror"
                )
        for target, mirror_name, spec in plan.update:
            writing.patch_credential(self.api, target, mirror_name, {"spec": spec})
            metrics.API_WRITES.labels("credentials", "patch").inc()
        for target, mirror_name in plan.delete:
            self._remove_mirror(target, mirror_name)
            logger.info("removed mirror %s/%s of %s/%s", target, mirror_name, namespace, name)
        statuses = sharing.mark_failed(plan.share_statuses, failed)
        for share in shares:
            share_name = str(share["metadata"]["name"])
            patch = planning.status_patch(share.get("status") or {}, statuses[share_name])
            if patch is not None:
                writing.patch_credential_share_status(self.api, namespace, share_name, patch)
                metrics.API_WRITES.labels("credentialshares/status", "patch").inc()
            with self._lock:
                self._share_status[(namespace, share_name)] = statuses[share_name]
            if patch is not None:
                self._remember_status(self._shares, (namespace, share_name), patch)
        with self._lock:
            for key in [k for k in self._share_status if k not in self._shares]:
                self._share_status.pop(key)
        shared_with = [target for target in plan.shared_with if target not in failed]
        if source is not None and (source.get("status") or {}).get("sharedWith", []) != shared_with:
            try:
                writing.patch_credential_status(self.api, namespace, name, {"sharedWith": shared_with})
            except client.ApiException as error:
                if error.status != 404:
                    raise
                return
            metrics.API_WRITES.labels("credentials/status", "patch").inc()
            self._remember_status(self._credentials, source_key, {"sharedWith": shared_with})
