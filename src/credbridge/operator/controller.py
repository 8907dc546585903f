"""The controller: routes watch events into the cache and the work queues, and runs the reconcilers.

kopf handlers (handlers.py) and the Secret metadata watch only feed events in. Each event costs a
constant amount of work: it updates the cache (operator/cache.py) and queues the keys the cache's
indexes name — never a scan over every Credential. Only work that must visit everything does so,
at a bounded rate: a keyring change (every managed Secret is verified against the new keyring)
and the periodic verification of every managed Secret as stored.

Every reconcile goes through a work queue, so one object is never reconciled by two threads at
once, whatever triggered it. Credentials are reconciled by operator/credentials.py, the mirrors of
a shared Credential by operator/shares.py. Consumers (operator/consumer.py: bindings, the Flowise
sync...) are added with `add_consumer`: the controller tells them of every Credential the cache
stores, every Secret event and every share event, and hands them the `context` they work with.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from credbridge.core import keyring, names, registry, release, views
from credbridge.kube import builtins, connecting, fetching, watching
from credbridge.operator import (
    activity,
    applying,
    consumer,
    credentials,
    metrics,
    reading,
    reconciling,
    shares,
    workqueue,
)
from credbridge.operator import cache as cache_module
from credbridge.operator import settings as settings_module

logger = logging.getLogger(__name__)

Key = views.Key


class Controller:
    """Shared state of one operator process: the cache, the keyring, the types, the reconcilers and their queues."""

    def __init__(
        self,
        api: connecting.ApiClient,
        settings: settings_module.OperatorSettings,
        ring: keyring.Keyring | None,
        types: registry.Registry,
        env_lookup: Callable[[str], str | None] = os.environ.get,
    ) -> None:
        self.api = api
        self.settings = settings
        self.env_policy = settings_module.env_policy(settings.env.allow, settings.env.namespace_rules)
        self._lock = threading.Lock()
        self._keyring = ring
        self._types = types
        self.cache = cache_module.Cache()
        self.reader = reading.Reader(api, self.cache, self.current_keyring)
        self.applier = applying.Applier(
            api, self.cache, write_failures_before_report=settings.write_failures_before_report
        )
        self.release_policy = release.Policy(
            env=self.env_policy,
            plain_secrets=settings.bindings.secrets == "allow",
            block_unverified=settings.verification.enabled and settings.verification.block_consumers,
        )
        self.activity = activity.Activity(api, settings)
        """Whether this replica works (kopf peering): every work queue's gate."""
        self.queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue(
            reconciling.instrumented(self._credential_label, self._reconcile_credential),
            workers=settings.workers,
            name="credential",
            gate=self.activity.active,
        )
        self.share_queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue(
            reconciling.instrumented("share", self._reconcile_share), workers=1, name="share", gate=self.activity.active
        )
        self.credentials = credentials.CredentialReconciler(
            self.cache,
            self.reader,
            self.applier,
            keyring_now=self.current_keyring,
            types_now=self.types,
            env_lookup=env_lookup,
            env_policy=self.env_policy,
            enqueue=self.queue.add,
        )
        self.shares = shares.ShareReconciler(self.cache, self.applier, enqueue_credential=self.queue.add)
        metrics.STATE.set_share_source(self.shares.state_counts)
        self.consumers: list[consumer.Consumer] = []
        """Told of every Credential the cache stores, every Secret event and every share event."""
        self._stopping = threading.Event()
        self._secret_watches: list[watching.SecretMetadataWatch] = []
        self._resync_thread = threading.Thread(target=self._resync_forever, name="resync", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------

    def prime(self) -> int:
        """Fills the cache with every Credential, managed Secret, share and namespace before reconciling starts;
        returns the number of Credentials.

        Reconciles then start from a complete view: duplicate ids are judged against every
        Credential with the id, and each managed Secret is compared from the cache (no create
        that fails because the Secret is merely not seen yet). kopf's own first events repeat
        these versions and trigger nothing; every Credential is queued here instead, once.
        """
        for namespace in self.settings.watch.namespaces or (None,):
            for page in fetching.iter_managed_secrets(self.api, namespace):
                for secret in page:
                    self.cache.put_secret(views.SecretView.from_object(secret))
            for page in fetching.iter_credentials(self.api, namespace):
                for credential in page:
                    self.cache.put_credential(views.CredentialView.from_object(credential))
            # Shares are planned from every namespace's consent: with the namespaces and shares known
            # from the start, a restart re-plans them to what their status already says.
            for share in fetching.list_credential_shares(self.api, namespace):
                self.cache.put_share(views.ShareView.from_object(share))
        for page in fetching.iter_namespaces(self.api):
            for namespace_object in page:
                self.cache.put_namespace(views.NamespaceView.from_object(namespace_object))
        keys = self.cache.credential_keys()
        for key in keys:
            self.queue.add(key)
        for source in self.cache.shared_sources():
            self.share_queue.add(source)
        return len(keys)

    def start(self) -> None:
        """Starts the reconcile workers, the Secret metadata watch and the periodic verification."""
        self.activity.start()
        self.queue.start()
        self.share_queue.start()
        for namespace in self.settings.watch.namespaces or (None,):
            secret_watch = watching.SecretMetadataWatch(
                self.api,
                namespace,
                self.secret_metadata_changed,
                self.secrets_listed,
                label_selector=names.UNMANAGED_SELECTOR,
            )
            secret_watch.start()
            self._secret_watches.append(secret_watch)
        if self.settings.resync.interval > 0:
            self._resync_thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.activity.stop()
        for secret_watch in self._secret_watches:
            secret_watch.stop()
        for each in self.consumers:
            each.stop()
        self.queue.stop()
        self.share_queue.stop()

    def context(self) -> consumer.Context:
        """What a consumer works with: the API, the cache, the reader, the applier, keys, types, policy."""
        return consumer.Context(
            api=self.api,
            settings=self.settings,
            cache=self.cache,
            reader=self.reader,
            applier=self.applier,
            keyring_now=self.current_keyring,
            types_now=self.types,
            release_policy=self.release_policy,
            active=self.activity.active,
        )

    def add_consumer(self, added: consumer.Consumer) -> None:
        """Routes Credential, Secret and share events to `added` from now on (it is started by the caller)."""
        self.consumers.append(added)
        self.cache.credential_listeners.append(added.credential_changed)

    # ---- inputs from watches ---------------------------------------------------------------

    def credential_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event on a Credential: cache it and queue it, and what depends on it."""
        view = views.CredentialView.from_object(body)
        if event_type == "DELETED":
            self.cache.remove_credential(view.key)
            self.credentials.forget(view.key)
            metrics.STATE.forget_credential(view.key)
            self._queue_same_id(view)
            self.share_queue.add(view.shared_from or view.key)
            return
        # Consumers hear of a stored change from the cache itself (its credential listeners).
        stored, previous = self.cache.put_credential(view)
        if not stored:
            return  # nothing newer than what the cache holds (our own write, written through)
        self.queue.add(view.key)
        if previous is None or previous.credential_id != view.credential_id:
            self._queue_same_id(view)
            if previous is not None:
                self._queue_same_id(previous)
        if view.shared_from is not None:
            # A mirror changed: its source's share plan reverts drift.
            self.share_queue.add(view.shared_from)
        elif self.cache.shares_of(view.key):
            self.share_queue.add(view.key)

    def _queue_same_id(self, view: views.CredentialView) -> None:
        for other in self.cache.with_id(view.namespace, view.credential_id):
            if other.name != view.name:
                self.queue.add(other.key)

    def secret_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event on a managed Secret (label-selected): cache it, queue the Credential it belongs to."""
        view = views.SecretView.from_object(body)
        stored = True
        if event_type == "DELETED":
            self.cache.remove_secret(view.key)
        else:
            stored = self.cache.put_secret(view)
        for each in self.consumers:
            each.secret_changed(event_type, view.key, view.labels)
        if not stored:
            return  # the cache already holds this version (our own write)
        owner = view.credential_name
        if owner:
            self.queue.add((view.namespace, owner))
        for key in self.cache.targeting_secret(view.namespace, view.name):
            self.queue.add(key)

    def secret_metadata_changed(self, event_type: str, secret: watching.SecretMetadata) -> None:
        """A metadata-only event on a Secret credbridge does not manage: queue the Credentials it matters to.

        Secrets no Credential reads or wants as its target cost two dictionary lookups.
        """
        key = (secret.namespace, secret.name)
        self.cache.note_secret_version(key, None if event_type == "DELETED" else secret.resource_version)
        for each in self.consumers:
            each.secret_changed(event_type, key, secret.labels)
        for credential in self.cache.reading_secret(*key):
            self.queue.add(credential)
        for credential in self.cache.targeting_secret(*key):
            self.queue.add(credential)

    def secrets_listed(self, namespace: str | None, present: set[Key]) -> None:
        """After the metadata watch (re)listed: referenced Secrets no longer present were deleted meanwhile."""
        for key in self.cache.note_secrets_listed(namespace, present):
            for credential in self.cache.reading_secret(*key):
                self.queue.add(credential)

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
        for key in self.cache.of_type(spec.name):
            self.queue.add(key)

    def keyring_changed(self, ring: keyring.Keyring) -> None:
        """The keyring Secret changed and keyring_guard accepted it: use the new keys at once, then verify
        every managed Secret at a bounded rate.

        Credentials still on an older key come first; they are re-encrypted. The others are
        verified against the new keyring: a Secret that no longer opens is rewritten.
        """
        with self._lock:
            previous, self._keyring = self._keyring, ring
        if previous is not None and previous.active_id == ring.active_id and dict(previous.keys) == dict(ring.keys):
            return  # the same keyring (the watch's first event repeats the one loaded at start)
        rotated = previous is None or previous.active_id != ring.active_id
        stale = self._verify_all(self.settings.keyring.reencrypt_per_second, from_api=False)
        metrics.REENCRYPTION_PENDING.set(stale)
        if rotated:
            logger.info(
                "active key is now %s; re-encrypting %d credentials, then verifying the others", ring.active_id, stale
            )

    def share_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A CredentialShare changed: re-plan the mirrors of the Credential it names (and named before)."""
        view = views.ShareView.from_object(body)
        for each in self.consumers:
            each.share_changed(event_type, view)
        if event_type == "DELETED":
            previous = self.cache.remove_share(view.key)
            self.shares.forget_share(view.key)
        else:
            stored, previous = self.cache.put_share(view)
            if not stored:
                return
        self.share_queue.add(view.source)
        if previous is not None and previous.source != view.source:
            self.share_queue.add(previous.source)

    def namespace_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Consent or labels of a namespace may have changed: re-plan every shared source."""
        view = views.NamespaceView.from_object(body)
        if event_type == "DELETED":
            self.cache.remove_namespace(view.name)
        elif self.cache.put_namespace(view) == view:
            return  # labels, consent and phase as before
        for source in self.cache.shared_sources():
            self.share_queue.add(source)

    # ---- lookups ---------------------------------------------------------------------------

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

    # ---- work that visits every Credential, at a bounded rate --------------------------------

    def _verify_all(self, per_second: float, *, from_api: bool) -> int:
        """Queues every Credential at `per_second`, those on an older key first; returns how many are on one."""
        ring = self.current_keyring()
        active = ring.active_id if ring else None
        keys = self.cache.credential_keys()
        stale: list[Key] = []
        current: list[Key] = []
        for key in keys:
            view = self.cache.credential(key)
            (stale if view is not None and view.status.get("keyId") not in (None, active) else current).append(key)
        interval = 1.0 / max(per_second, 0.001)
        for index, key in enumerate(stale + current):
            if from_api:
                self.credentials.verify_from_api(key)
            self.queue.add_after(key, index * interval)
        return len(stale)

    def _resync_forever(self) -> None:
        """Every `resync.interval` seconds, verifies every managed Secret as stored in the API server."""
        interval = self.settings.resync.interval
        while not self._stopping.wait(interval):
            count = self.cache.credential_count()
            self._verify_all(self.settings.resync.per_second, from_api=True)
            logger.info(
                "periodic verification of %d managed Secrets queued (%.0f/s); next in %.0fs",
                count,
                self.settings.resync.per_second,
                interval,
            )
            metrics.RESYNCS.inc()

    # ---- reconciling -----------------------------------------------------------------------

    def _credential_label(self, key: Key) -> str:
        view = self.cache.credential(key)
        return "mirror" if view is not None and view.shared_from else "credential"

    def _reconcile_credential(self, key: Key) -> reconciling.Result:
        result = self.credentials.reconcile(key)
        if result.outcome == "written":
            ring = self.current_keyring()
            if ring is not None:
                metrics.REENCRYPTION_PENDING.set(metrics.STATE.not_on_key(ring.active_id))
        return result

    def _reconcile_share(self, source: Key) -> reconciling.Result:
        return self.shares.reconcile(source)
