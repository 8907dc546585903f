"""The Flowise sync: keeps every FlowiseTarget's Flowise server in line with the selected
Credentials of its namespace — gather → plan (core.flowise.sync) → apply.

It runs beside the Credential controller with its own work queue (one target is never synced by
two workers at once) and its own small index of what it needs from watch events: Credentials by
namespace (labels, id, display name, type, Ready state, the revision of their managed Secret),
targets by namespace, and targets by the Secrets they read. A watch event therefore costs work
proportional to the targets of one namespace, never to every Credential in the cluster.

What it needs from the controller is small and written down as `CredentialController`: the
keyring (to open managed Secrets and to key the HMAC of what was pushed) and the env policy (for
the tenancy rule). The handlers feed it watch events with `credential_changed`,
`secret_changed` and `target_changed`.

Flowise is outside the cluster, so:
- a finalizer on each FlowiseTarget holds its deletion until what it pushed is removed (or, with
  prune off, released), for at most `cleanup_timeout` seconds;
- a target whose Flowise is down, refuses the key or fails is retried with backoff (the work
  queue's), and its status says why; nothing is lost, because each sync compares the whole
  desired state with what Flowise lists;
- every target is synced again every `resync_seconds` (at a bounded rate), which is how edits
  made in Flowise's UI are noticed (its `updatedDate`) and reverted.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from credbridge.core import conditions, envelope, envrefs, keyring, names, planning, redaction, sharing, tenancy, views
from credbridge.core.flowise import sync
from credbridge.core.flowise import target as target_module
from credbridge.flowise import client as flowise_client
from credbridge.kube import connecting, errors, fetching, flowisetargets, writing
from credbridge.operator import metrics, workqueue
from credbridge.operator import settings as settings_module

logger = logging.getLogger(__name__)

Json = dict[str, Any]
Key = tuple[str, str]


class WatchCache(Protocol):
    """The controller's watch cache (operator/cache.py), as the Flowise sync reads it."""

    def secret(self, key: Key) -> views.SecretView | None:
        """A managed Secret as last seen (with its data), or None."""

    def credential(self, key: Key) -> views.CredentialView | None:
        """A Credential as last seen, or None."""

    def in_namespace(self, namespace: str) -> list[views.CredentialView]:
        """Every Credential (and mirror) of a namespace."""


class CredentialController(Protocol):
    """What the Flowise sync needs from the Credential controller."""

    api: connecting.ApiClient
    env_policy: envrefs.EnvPolicy

    @property
    def cache(self) -> WatchCache:
        """The watch cache (Credentials, managed Secrets with their data), kept current by the controller."""

    def current_keyring(self) -> keyring.Keyring | None:
        """The keyring in use now, or None when it could not be loaded."""


@dataclasses.dataclass(frozen=True)
class CredentialFacts:
    """What syncing needs to know about one Credential, parsed once when its event arrives."""

    view: planning.CredentialView
    labels: Mapping[str, str]
    ready_reason: str | None
    """None when Ready=True; else the reason (or `NotReconciled` before the first reconcile)."""

    @classmethod
    def from_view(cls, view: views.CredentialView) -> CredentialFacts:
        ready = view.ready_condition
        reason = None if ready and ready.get("status") == "True" else str((ready or {}).get("reason", "NotReconciled"))
        return cls(view=view, labels=view.labels, ready_reason=reason)

    @property
    def flowise_id(self) -> str:
        return str(self.view.status.get("id") or self.view.credential_id)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RetryLater(Exception):
    """The sync reached a state worth retrying with backoff (Flowise down, a push failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class _Connection:
    """A client for one target, kept while URL, key and CA stay the same."""

    fingerprint: str
    client: flowise_client.FlowiseClient
    api_key: redaction.Redacted


class FlowiseSync:
    """Syncs FlowiseTargets. Thread-safe: watch events come from kopf, syncs run on the queue's workers."""

    def __init__(self, controller: CredentialController, settings: settings_module.FlowiseSettings) -> None:
        self.controller = controller
        self.settings = settings
        self._lock = threading.RLock()
        self._targets: dict[Key, Json] = {}
        self._targets_in: dict[str, set[str]] = {}
        """namespace -> names of its targets."""
        self._targets_reading: dict[Key, set[Key]] = {}
        """(namespace, Secret name) -> targets reading that Secret (API key, CA)."""
        self._written_status: dict[Key, tuple[str, Json]] = {}
        """target -> (uid, status) as this process last wrote it: newer than any watch event may be."""
        self._connections: dict[Key, _Connection] = {}
        self._types: dict[str, tuple[float, frozenset[str]]] = {}
        """Flowise URL -> (when asked, credential type names it knows)."""
        self.client_settings = flowise_client.ClientSettings(
            connect_timeout=settings.connect_timeout,
            request_timeout=settings.request_timeout,
            max_response_bytes=settings.max_response_bytes,
        )
        self.queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue(
            self._sync_key, workers=max(1, settings.workers), name="flowise"
        )
        self._stopping = threading.Event()
        self._resync_thread = threading.Thread(target=self._resync_loop, name="flowise-resync", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.queue.start()
        self._resync_thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.queue.stop()
        with self._lock:
            for connection in self._connections.values():
                connection.client.close()

    def _resync_loop(self) -> None:
        """Queue every target again every `resync_seconds`, at most `resync_per_second` at a time."""
        while not self._stopping.wait(self.settings.resync_seconds):
            with self._lock:
                keys = sorted(self._targets)
            spacing = 1.0 / max(self.settings.resync_per_second, 0.001)
            for index, key in enumerate(keys):
                self.queue.add_after(key, index * spacing)

    # ---- inputs from watches ---------------------------------------------------------------

    def target_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event on a FlowiseTarget."""
        view = target_module.TargetView.from_object(body)
        key = view.key
        with self._lock:
            previous = self._targets.get(key)
            if previous is not None:
                for secret in target_module.TargetView.from_object(previous).referenced_secrets():
                    self._targets_reading.get((key[0], secret), set()).discard(key)
            if event_type == "DELETED":
                self._targets.pop(key, None)
                self._targets_in.get(key[0], set()).discard(key[1])
                self._written_status.pop(key, None)
                connection = self._connections.pop(key, None)
                if connection is not None:
                    connection.client.close()
                return
            # The handlers' plain copy has no apiVersion/kind; Events about the target need them.
            self._targets[key] = {**body, "apiVersion": names.API_VERSION, "kind": target_module.KIND}
            self._targets_in.setdefault(key[0], set()).add(key[1])
            for secret in view.referenced_secrets():
                self._targets_reading.setdefault((key[0], secret), set()).add(key)
        self.queue.add(key)

    def credential_changed(self, event_type: str | None, credential: views.CredentialView) -> None:
        """A Credential changed (the controller's credential listener, once its cache holds it): queue
        the targets of its namespace."""
        targets = self._targets_of_namespace(credential.namespace)
        # A mirror's content follows its source through its own managed Secret, whose events land here.
        for key in sorted(targets):
            self.queue.add(key)

    def secret_changed(self, event_type: str | None, secret: Key, labels: Mapping[str, str]) -> None:
        """A Secret changed (the controller's secret listener): a managed Secret's new content queues
        the targets of its namespace; an API key or CA Secret queues the targets that read it."""
        namespace = secret[0]
        queued: set[Key] = set()
        if labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY_VALUE and labels.get(names.CREDENTIAL_LABEL):
            queued |= self._targets_of_namespace(namespace)
        with self._lock:
            queued |= self._targets_reading.get(secret, set())
        for key in sorted(queued):
            self.queue.add(key)

    def _targets_of_namespace(self, namespace: str) -> set[Key]:
        with self._lock:
            return {(namespace, name) for name in self._targets_in.get(namespace, set())}

    # ---- one sync ------------------------------------------------------------------------------

    def _sync_key(self, key: Key) -> None:
        with self._lock:
            body = self._targets.get(key)
        if body is None:
            return
        started = time.perf_counter()
        result = "error"
        try:
            result = self._sync(body)
        except RetryLater as later:
            result = later.reason
            raise
        finally:
            metrics.FLOWISE_SYNCS.labels(result).inc()
            metrics.FLOWISE_SYNC_SECONDS.observe(time.perf_counter() - started)

    def _status_of(self, view: target_module.TargetView) -> Mapping[str, Any]:
        """The target's status as this process last wrote it (the watch may not have caught up)."""
        with self._lock:
            written = self._written_status.get(view.key)
        if written is not None and written[0] == view.uid:
            return written[1]
        return view.status

    def _sync(self, body: Json) -> str:
        view = target_module.TargetView.from_object(body)
        status = self._status_of(view)
        view = dataclasses.replace(view, status=status)
        if view.deleting:
            return self._clean_up(body, view)
        if not view.has_finalizer:
            finalizers = [*view.finalizers, target_module.FINALIZER]
            if not flowisetargets.set_flowise_target_finalizers(
                self.controller.api, view.namespace, view.name, finalizers, str(body["metadata"]["resourceVersion"])
            ):
                return "gone"
            metrics.API_WRITES.labels("flowisetargets", "patch").inc()
            # The finalizer write brings a new watch event; the sync continues from there.
            return "finalizer"
        ring = self.controller.current_keyring()
        if ring is None:
            self._report(body, view, "KeyUnavailable", "the operator has no usable keyring; see the operator log")
            raise RetryLater("keyring")
        connection = self._connect(body, view)
        if connection is None:
            return "invalid"
        try:
            version = self._version(connection.client)
            remote = {item.id: item for item in connection.client.list_credentials()}
            known_types = self._known_types(connection.client, version)
        except flowise_client.FlowiseError as error:
            self._report(body, view, error.reason, str(error), reachable=_reachable(error))
            raise RetryLater(error.reason) from None

        candidates = self._candidates(view)
        previous = [sync.Entry.from_status(item) for item in view.status.get("credentials") or []]
        if (view.status.get("url") or view.url) != view.url:
            # A new server: what was owned on the old one is not ours there. Start over (and say so).
            self._event(
                body,
                "Normal",
                "UrlChanged",
                f"spec.url changed to {view.url}: entries of the old server are dropped; credentials pushed there stay",
            )
            previous = []
        plan = sync.plan_sync(
            namespace=view.namespace,
            target=view.name,
            candidates=[candidate for candidate, _ in candidates.values()],
            previous=previous,
            remote={
                item.id: sync.Remote(item.id, item.name, item.credential_name, item.updated_date)
                for item in remote.values()
            },
            known_types=known_types,
            content_of=lambda candidate: self._content_of(candidates[candidate.name][1]),
            ring=ring,
            prune=view.prune,
            now=_now(),
        )
        return self._apply(body, view, connection, plan, previous, version)

    def _apply(
        self,
        body: Json,
        view: target_module.TargetView,
        connection: _Connection,
        plan: sync.SyncPlan,
        previous: list[sync.Entry],
        version: str,
    ) -> str:
        if plan.claims:
            # Ownership first: a crash after the POST must not turn our credential into a "conflict".
            claimed = [entry.to_status() for entry in sync.claimed_entries(previous, plan)]
            view, _ = self._write_status(view, {"url": view.url, "credentials": claimed})
        results: dict[str, sync.PushResult] = {}
        stop: flowise_client.FlowiseError | None = None
        for push in plan.pushes:
            if stop is not None:
                break
            try:
                stored = connection.client.put_credential(push.payload)
            except (flowise_client.Unreachable, flowise_client.Unauthorized, flowise_client.Forbidden) as error:
                stop = error  # the next push would fail the same way
                results[push.id] = sync.PushResult(push.id, False, message=str(error))
                continue
            except flowise_client.FlowiseError as error:
                results[push.id] = sync.PushResult(push.id, False, message=str(error))
                continue
            results[push.id] = sync.PushResult(push.id, True, updated_date=stored.updated_date)
            metrics.FLOWISE_WRITES.labels(push.action).inc()
            logger.info(
                "FlowiseTarget %s/%s: %s credential %s (%s) in %s",
                view.namespace,
                view.name,
                push.action,
                push.id,
                push.name,
                view.url,
            )
        for delete in plan.deletes:
            if stop is not None:
                break
            try:
                connection.client.delete_credential(delete.id)
            except (flowise_client.Unreachable, flowise_client.Unauthorized, flowise_client.Forbidden) as error:
                stop = error
                results[delete.id] = sync.PushResult(delete.id, False, message=str(error))
                continue
            except flowise_client.FlowiseError as error:
                results[delete.id] = sync.PushResult(delete.id, False, message=str(error))
                continue
            results[delete.id] = sync.PushResult(delete.id, True)
            metrics.FLOWISE_WRITES.labels("delete").inc()
            logger.info(
                "FlowiseTarget %s/%s: deleted credential %s (%s) from %s",
                view.namespace,
                view.name,
                delete.id,
                delete.name,
                view.url,
            )
        entries = sync.entries_after(plan, results)
        now = _now()
        if stop is not None:
            state, reason, message = "False", stop.reason, str(stop)
        else:
            state, reason, message = sync.ready_condition(entries)
        patch: Json = {
            "url": view.url,
            "flowiseVersion": version,
            "reachable": stop is None or not isinstance(stop, flowise_client.Unreachable),
            "counts": sync.counts(entries),
            "credentials": [entry.to_status() for entry in entries],
            "observedGeneration": view.generation,
            "conditions": [
                conditions.condition(
                    view.status, names.READY_CONDITION, state, reason, message[:2000], now, view.generation
                )
            ],
        }
        old_reason = next(
            (c.get("reason") for c in view.status.get("conditions") or [] if c.get("type") == names.READY_CONDITION),
            None,
        )
        view, changed = self._write_status(view, patch, now=now)
        for event in plan.events:
            self._event(body, event.type, event.reason, event.message)
        if reason not in (old_reason, "Synced"):
            self._event(body, "Warning", reason, message)
        transient = stop is not None or any(
            not result.ok and "HTTP 5" in (result.message or "") for result in results.values()
        )
        if transient:
            raise RetryLater(reason)
        return "written" if plan.pushes or plan.deletes else ("status" if changed else "unchanged")

    # ---- gather helpers ------------------------------------------------------------------------

    def _candidates(self, view: target_module.TargetView) -> dict[str, tuple[sync.Candidate, CredentialFacts]]:
        selected: dict[str, tuple[sync.Candidate, CredentialFacts]] = {}
        for facts in map(CredentialFacts.from_view, self.controller.cache.in_namespace(view.namespace)):
            if not sharing.selector_matches(view.selector, facts.labels):
                continue
            credential = facts.view
            managed = self.controller.cache.secret((credential.namespace, credential.secret_name))
            candidate = sync.Candidate(
                name=credential.name,
                id=facts.flowise_id,
                display_name=credential.display_name,
                type_name=credential.type_name,
                revision=f"g{credential.generation}-s{managed.resource_version if managed else '?'}",
                not_ready=facts.ready_reason,
                denial=self._denial(facts),
            )
            selected[credential.name] = (candidate, facts)
        return selected

    def _denial(self, facts: CredentialFacts) -> str | None:
        """The tenancy rule (core.tenancy): a mirror is judged by its source's data and namespace."""
        shared_from = facts.view.shared_from
        if shared_from is None:
            data, namespace = facts.view.spec.get("data") or {}, facts.view.namespace
        else:
            source = self.controller.cache.credential(shared_from)
            if source is None:
                return (
                    f"its source Credential {shared_from[0]}/{shared_from[1]} is not visible to this operator, so "
                    "whether its values may leave as plaintext cannot be judged"
                )
            data, namespace = source.spec.get("data") or {}, shared_from[0]
        return tenancy.plaintext_denial(data, namespace, self.controller.env_policy, output="Flowise")

    def _content_of(self, facts: CredentialFacts) -> redaction.SecretFields | str:
        """The decrypted fields of a Credential, read from its managed Secret with the keyring."""
        ring = self.controller.current_keyring()
        secret = self.controller.cache.secret((facts.view.namespace, facts.view.secret_name))
        if secret is None:
            # Not seen by the watch yet (a moment after the operator started): ask the API server.
            found = fetching.read_secret(self.controller.api, facts.view.namespace, facts.view.secret_name)
            secret = views.SecretView.from_object(found) if found is not None else None
        if secret is None or ring is None:
            return f"its Secret {facts.view.secret_name} is not available yet"
        try:
            return planning.open_managed_secret(facts.view, secret, ring)
        except envelope.EnvelopeError:
            return (
                f"its Secret {facts.view.secret_name} could not be opened (being rewritten?); "
                "retried on its next change"
            )

    def _connect(self, body: Json, view: target_module.TargetView) -> _Connection | None:
        """The client for this target, with the API key (and CA) read from their Secrets."""
        api_key = self._secret_value(view.namespace, view.api_key)
        if api_key is None:
            self._report(
                body,
                view,
                "SecretReferenceMissing",
                f"the API key Secret {view.api_key.name} (key {view.api_key.key}) does not exist in namespace "
                f"{view.namespace} or lacks that key: create it with a Flowise API key that has the "
                "credentials:view, credentials:create, credentials:update and credentials:delete permissions",
            )
            return None
        ca_pem = None
        if view.ca is not None:
            ca = self._secret_value(view.namespace, view.ca)
            if ca is None:
                self._report(
                    body,
                    view,
                    "SecretReferenceMissing",
                    f"the CA Secret {view.ca.name} (key {view.ca.key}) in spec.tls.caSecretRef does not exist in "
                    f"namespace {view.namespace} or lacks that key",
                )
                return None
            ca_pem = ca.reveal()
        fingerprint = hashlib.sha256(
            "\x00".join((view.url, api_key.reveal(), ca_pem or "")).encode("utf-8", "surrogatepass")
        ).hexdigest()
        with self._lock:
            existing = self._connections.get(view.key)
            if existing is not None and existing.fingerprint == fingerprint:
                return existing
        try:
            made = flowise_client.FlowiseClient(view.url, api_key, settings=self.client_settings, ca_pem=ca_pem)
        except ValueError as error:
            self._report(body, view, "InvalidSpec", f"{error}: fix spec.url or spec.tls.caSecretRef")
            return None
        connection = _Connection(fingerprint, made, api_key)
        with self._lock:
            old = self._connections.get(view.key)
            self._connections[view.key] = connection
        if old is not None:
            old.client.close()
        return connection

    def _secret_value(self, namespace: str, ref: target_module.SecretKeyRef) -> redaction.Redacted | None:
        secret = fetching.read_secret(self.controller.api, namespace, ref.name)
        if secret is None:
            return None
        value = planning.SecretView.from_object(secret).data.get(ref.key)
        return redaction.Redacted(value.strip()) if value else None

    def _version(self, flowise: flowise_client.FlowiseClient) -> str:
        try:
            return flowise.version()
        except flowise_client.NotFound:
            return ""  # older Flowise without /version: the credential calls say whether it works

    def _known_types(self, flowise: flowise_client.FlowiseClient, version: str) -> frozenset[str] | None:
        cache_key = f"{flowise.url}|{version}"
        now = time.monotonic()
        with self._lock:
            cached = self._types.get(cache_key)
        if cached is not None and now - cached[0] < self.settings.types_cache_seconds:
            return cached[1]
        try:
            known = frozenset(flowise.credential_types())
        except (flowise_client.NotFound, flowise_client.BadResponse, flowise_client.ServerError):
            return None  # cannot tell: push and let Flowise decide
        with self._lock:
            self._types[cache_key] = (now, known)
        return known

    # ---- writes to the cluster -----------------------------------------------------------------

    def _report(
        self, body: Json, view: target_module.TargetView, reason: str, message: str, *, reachable: bool | None = None
    ) -> None:
        """Status for a sync that stopped before planning: the entries stay as they were."""
        now = _now()
        patch: Json = {
            "observedGeneration": view.generation,
            "conditions": [
                conditions.condition(
                    view.status, names.READY_CONDITION, "False", reason, message[:2000], now, view.generation
                )
            ],
        }
        if reachable is not None:
            patch["reachable"] = reachable
        old = next((c for c in view.status.get("conditions") or [] if c.get("type") == names.READY_CONDITION), None)
        self._write_status(view, patch, now=now)
        if old is None or old.get("reason") != reason or old.get("message") != message:
            self._event(body, "Warning", reason, message)
        logger.info("FlowiseTarget %s/%s is not ready: %s", view.namespace, view.name, reason)

    def _write_status(
        self, view: target_module.TargetView, patch: Json, *, now: str | None = None
    ) -> tuple[target_module.TargetView, bool]:
        """Writes the parts of `patch` that differ from the status; returns the view with the new
        status (later steps of a sync read it) and whether it wrote."""
        changed = planning.status_patch(view.status, patch)
        if changed is None:
            return view, False
        if now is not None:
            changed["lastSyncTime"] = now
        if flowisetargets.patch_flowise_target_status(self.controller.api, view.namespace, view.name, changed) is None:
            return view, False
        metrics.API_WRITES.labels("flowisetargets/status", "patch").inc()
        merged = {**view.status, **changed}
        with self._lock:
            self._written_status[view.key] = (view.uid, merged)
        return dataclasses.replace(view, status=merged), True

    def _event(self, body: Json, type_: str, reason: str, message: str) -> None:
        try:
            writing.post_event(self.controller.api, body, type=type_, reason=reason, message=message)
            metrics.API_WRITES.labels("events", "create").inc()
        except errors.ApiError as error:
            logger.debug("could not post an event about a FlowiseTarget: %s", error)

    # ---- deletion ------------------------------------------------------------------------------

    def _clean_up(self, body: Json, view: target_module.TargetView) -> str:
        """The target is being deleted: remove (or release) what it pushed, then drop the finalizer."""
        if not view.has_finalizer:
            return "gone"
        owned = [sync.Entry.from_status(item) for item in view.status.get("credentials") or []]
        owned = [entry for entry in owned if entry.owned]
        if view.prune and owned:
            deadline = _deletion_age(body) > self.settings.cleanup_timeout
            try:
                connection = self._connect(body, view) or self._remembered_connection(view)
                if connection is None:
                    raise flowise_client.Unauthorized("no API key to remove the pushed credentials with")
                remaining = []
                for entry in owned:
                    try:
                        connection.client.delete_credential(entry.id)
                        metrics.FLOWISE_WRITES.labels("delete").inc()
                    except flowise_client.ServerError:
                        remaining.append(entry)
                if remaining:
                    raise flowise_client.ServerError(
                        f"{len(remaining)} credential(s) could not be deleted from Flowise"
                    )
                logger.info(
                    "FlowiseTarget %s/%s deleted: removed %d credential(s) from %s",
                    view.namespace,
                    view.name,
                    len(owned),
                    view.url,
                )
            except flowise_client.FlowiseError as error:
                if not deadline:
                    self._report(
                        body,
                        view,
                        error.reason,
                        f"cannot remove the pushed credentials yet: {error}",
                        reachable=_reachable(error),
                    )
                    raise RetryLater(error.reason) from None
                self._event(
                    body,
                    "Warning",
                    "CleanupAbandoned",
                    f"gave up removing {len(owned)} credential(s) from {view.url} after "
                    f"{self.settings.cleanup_timeout:g}s ({error.reason}); remove them in Flowise by hand: "
                    f"ids {', '.join(e.id for e in owned)}",
                )
        finalizers = [item for item in view.finalizers if item != target_module.FINALIZER]
        flowisetargets.set_flowise_target_finalizers(
            self.controller.api, view.namespace, view.name, finalizers, str(body["metadata"]["resourceVersion"])
        )
        metrics.API_WRITES.labels("flowisetargets", "patch").inc()
        return "cleaned"

    def _remembered_connection(self, view: target_module.TargetView) -> _Connection | None:
        """The last client of this target: when its namespace is deleted, the API key Secret may already be gone."""
        with self._lock:
            return self._connections.get(view.key)


def stop(flowise_sync: FlowiseSync | None) -> None:
    """Stops a Flowise sync, if there is one (the operator runs without it with --no-flowise)."""
    if flowise_sync is not None:
        flowise_sync.stop()


def _reachable(error: flowise_client.FlowiseError) -> bool:
    return not isinstance(error, flowise_client.Unreachable)


def _deletion_age(body: Mapping[str, Any]) -> float:
    stamp = str((body.get("metadata") or {}).get("deletionTimestamp") or "")
    try:
        deleted = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return 0.0
    return (datetime.datetime.now(datetime.UTC) - deleted).total_seconds()
