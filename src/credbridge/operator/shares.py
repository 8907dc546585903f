"""Reconciling the sharing of one source Credential: gather its shares, namespaces and mirrors from the
cache, plan with core.sharing, apply the creates, updates, deletes and statuses.

The work-queue key is the *source* Credential, not a share: sharing is planned over all the
shares that name a source at once (two shares naming one namespace give one mirror). Mirrors
created here are written through into the cache, so the next plan sees them before their watch
event arrives.
"""

from __future__ import annotations

import collections
import collections.abc
import logging
import threading

from credbridge.core import names, planning, sharing, views
from credbridge.kube import errors
from credbridge.operator import applying, reconciling
from credbridge.operator import cache as cache_module

logger = logging.getLogger(__name__)

Key = views.Key


class ShareReconciler:
    """Gather → plan → apply for the mirrors of one source Credential."""

    def __init__(
        self,
        cache: cache_module.Cache,
        applier: applying.Applier,
        *,
        enqueue_credential: collections.abc.Callable[[Key], None],
    ) -> None:
        self._api = applier.api
        self._cache = cache
        self._applier = applier
        self._enqueue_credential = enqueue_credential
        """Queues a mirror for its own reconcile after it is created or its spec reverted here."""
        self._lock = threading.Lock()
        self._target_states: dict[Key, collections.Counter[str]] = {}
        """Share key → count of its target namespaces by state, for the share metric."""

    def state_counts(self) -> dict[str, int]:
        """Share targets by state (Shared, NotAccepted, Failed) over every share, for the metric."""
        with self._lock:
            total: collections.Counter[str] = collections.Counter()
            for counts in self._target_states.values():
                total.update(counts)
            return dict(total)

    def reconcile(self, source_key: Key) -> reconciling.Result:
        """Brings the mirrors of one source Credential in line with all the shares that name it."""
        namespace, name = source_key
        source_view = self._cache.credential(source_key)
        shares = self._cache.shares_of(source_key)
        plan = sharing.plan_source_shares(
            namespace,
            name,
            source_view,
            shares,
            self._cache.namespaces(),
            self._cache.mirrors_of(source_key),
        )
        try:
            failed = self._apply_mirrors(plan)
        except errors.ApiError as error:
            if not (error.conflict or error.namespace_terminating) and self._applier.failures.record(
                ("share", source_key)
            ):
                self._report_write_failure(shares, plan, error)
            raise
        self._applier.failures.clear(("share", source_key))
        statuses = sharing.mark_failed(plan.share_statuses, failed)
        for share in shares:
            self._write_share_status(share, statuses[share.name])
        with self._lock:
            for share in shares:
                entries = statuses[share.name].get("namespaces", [])
                self._target_states[share.key] = collections.Counter(entry["state"] for entry in entries)
        if source_view is not None:
            shared_with = [target for target in plan.shared_with if target not in failed]
            self._write_shared_with(source_view, shared_with)
        written = plan.create or plan.update or plan.delete
        return reconciling.Result.done("written" if written else "unchanged")

    def _report_write_failure(
        self, shares: list[views.ShareView], plan: sharing.SharePlan, error: errors.ApiError
    ) -> None:
        """After several refused writes in a row, the shares of a source say so (Ready=False, WriteFailed)."""
        message = (
            f"{error}; the operator keeps retrying with backoff: check the operator log, its RBAC and the "
            "admission webhooks and policies of the target namespaces"
        )
        statuses = sharing.mark_write_failed(plan.share_statuses, message)
        for share in shares:
            try:
                self._write_share_status(share, statuses[share.name])
            except errors.ApiError as status_error:
                logger.warning(
                    "could not report the failed write on CredentialShare %s/%s: %s", *share.key, status_error
                )

    def forget_share(self, key: Key) -> None:
        with self._lock:
            self._target_states.pop(key, None)

    def _apply_mirrors(self, plan: sharing.SharePlan) -> dict[str, str]:
        """Creates, updates and deletes mirrors; returns target namespace → why a create failed."""
        failed: dict[str, str] = {}
        for mirror in plan.create:
            target = mirror["metadata"]["namespace"]
            try:
                created = self._applier.create_credential(mirror)
            except errors.ApiError as error:
                if error.namespace_terminating:
                    continue
                if not error.conflict:
                    raise
                failed[target] = (
                    f"a Credential named {mirror['metadata']['name']} already exists there and is not a mirror"
                )
                continue
            self._enqueue_credential(created.key)
        for target, mirror_name, spec in plan.update:
            updated = self._applier.patch_credential_spec(target, mirror_name, spec)
            self._enqueue_credential(updated.key)
        for target, mirror_name in plan.delete:
            self._remove_mirror(target, mirror_name)
        return failed

    def _remove_mirror(self, namespace: str, name: str) -> None:
        """Delete a mirror and its Secret now, rather than leaving the Secret to the garbage collector.

        Revocation should take effect at once: a revoked namespace must not keep readable content
        for however long garbage collection takes.
        """
        mirror = self._cache.credential((namespace, name))
        if mirror is None:
            return
        self._applier.delete_credential(namespace, name)
        secret = self._cache.secret((namespace, mirror.secret_name))
        if secret is not None and secret.controller_uid == mirror.uid:
            self._applier.delete_secret(namespace, mirror.secret_name, uid=secret.uid)
        logger.info("removed mirror %s/%s of %s", namespace, name, "/".join(mirror.shared_from or ("?", "?")))

    def _write_share_status(self, share: views.ShareView, desired: dict[str, object]) -> None:
        patch = planning.status_patch(share.status, desired)
        if patch is None:
            return
        written = self._applier.patch_status(
            names.CREDENTIAL_SHARE_PLURAL,
            names.CREDENTIAL_SHARE_KIND,
            share.namespace,
            share.name,
            patch,
            resource_version=share.resource_version,
        )
        self._cache.put_share(views.ShareView.from_object(written))

    def _write_shared_with(self, source: views.CredentialView, shared_with: collections.abc.Sequence[str]) -> None:
        if list(source.status.get("sharedWith", [])) == list(shared_with):
            return
        try:
            self._applier.patch_credential_status(source, {"sharedWith": list(shared_with)})
        except errors.ApiError as error:
            if error.not_found:
                return
            raise
