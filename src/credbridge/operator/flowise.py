"""The Flowise sync: keeps every FlowiseTarget's Flowise server in line with the selected Credentials of
its namespace — gather → plan (core.flowise.sync) → push → report (core.flowise.report).

Everything a consumer that pushes into an external system needs besides talking to that system —
the targets in the watch cache with their indexes, the finalizer, the periodic resync (how edits
made in Flowise's UI are noticed and reverted), status written through with its resourceVersion,
the release rule per Credential, the settled plaintext, the clean-up deadline — comes from
`consumer.ExternalSync`. What is here is Flowise's part: a client per target (kept while URL, API
key and CA stay the same), what Flowise lists and knows, the pushes and deletes.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import threading
import time

from credbridge.core import planning
from credbridge.core.flowise import report, sync
from credbridge.core.flowise import target as target_module
from credbridge.flowise import client as flowise_client
from credbridge.operator import consumer, metrics
from credbridge.operator import settings as settings_module

logger = logging.getLogger(__name__)

Result = consumer.Result
TargetView = target_module.TargetView


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _failure(error: flowise_client.FlowiseError) -> report.Failure:
    return report.Failure(error.reason, str(error))


@dataclasses.dataclass
class _Connection:
    """A client for one target, kept while URL, key and CA stay the same."""

    fingerprint: str
    client: flowise_client.FlowiseClient


class FlowiseSync(consumer.ExternalSync[TargetView]):
    """Syncs FlowiseTargets. Thread-safe: watch events come from kopf, syncs run on the queue's workers."""

    name = "flowise"
    plural = target_module.PLURAL
    kind = target_module.KIND
    finalizer = target_module.FINALIZER
    system = "Flowise"
    view_of = staticmethod(TargetView.from_object)

    def __init__(self, context: consumer.Context, settings: settings_module.FlowiseSettings) -> None:
        super().__init__(
            context,
            workers=max(1, settings.workers),
            resync_seconds=settings.resync_seconds,
            resync_per_second=settings.resync_per_second,
            cleanup_timeout=settings.cleanup_timeout,
        )
        self.settings = settings
        self._lock = threading.Lock()
        self._connections: dict[consumer.Key, _Connection] = {}
        self._types: dict[str, tuple[float, frozenset[str]]] = {}
        """Flowise URL and version -> (when asked, credential type names it knows)."""
        self.client_settings = flowise_client.ClientSettings(
            connect_timeout=settings.connect_timeout,
            request_timeout=settings.request_timeout,
            max_response_bytes=settings.max_response_bytes,
        )

    def stop(self) -> None:
        super().stop()
        with self._lock:
            for connection in self._connections.values():
                connection.client.close()

    def removed(self, view: TargetView) -> None:
        with self._lock:
            connection = self._connections.pop(view.key, None)
        if connection is not None:
            connection.client.close()

    # ---- one sync ------------------------------------------------------------------------------

    def reconcile_object(self, view: TargetView) -> Result:
        ring = self.context.keyring_now()
        if ring is None:
            failure = report.Failure(
                "KeyUnavailable", "the operator has no usable keyring; see the operator log", from_server=False
            )
            return self._stopped(view, failure)
        connection = self._connect(view)
        if isinstance(connection, report.Failure):
            return self._stopped(view, connection)
        try:
            version = self._version(connection.client)
            remote = {item.id: item for item in connection.client.list_credentials()}
            known_types = self._known_types(connection.client, version)
        except flowise_client.FlowiseError as error:
            return self._stopped(view, _failure(error))

        selected = {item.view.name: item for item in self.selected(view)}
        previous = [sync.Entry.from_status(item) for item in view.status.get("credentials") or []]
        if (view.status.get("url") or view.url) != view.url:
            # A new server: what was owned on the old one is not ours there. Start over (and say so).
            message = (
                f"spec.url changed to {view.url}: entries of the old server are dropped; credentials pushed there stay"
            )
            self.event(view, planning.Event("Normal", "UrlChanged", message))
            previous = []
        plan = sync.plan_sync(
            namespace=view.namespace,
            target=view.name,
            candidates=[self._candidate(item) for item in selected.values()],
            previous=previous,
            remote={
                item.id: sync.Remote(item.id, item.name, item.credential_name, item.updated_date)
                for item in remote.values()
            },
            known_types=known_types,
            content_of=lambda candidate: self.content(selected[candidate.name].view),
            ring=ring,
            prune=view.prune,
            now=_now(),
        )
        claims = report.claims(previous, plan, view.url)
        if claims is not None:
            view = self.write_status(view, claims)
        results, stop = self._run(view, connection.client, plan)
        now = _now()
        return self._report(
            view,
            report.after_sync(
                view.status, plan, results, stop, url=view.url, version=version, generation=view.generation, now=now
            ),
            now,
        )

    def _candidate(self, item: consumer.Selected) -> sync.Candidate:
        credential = item.view
        managed = self.context.cache.secret((credential.namespace, credential.secret_name))
        spec = self.context.types_now().get(credential.type_name)
        return sync.Candidate(
            name=credential.name,
            id=str(credential.status.get("id") or credential.credential_id),
            display_name=credential.display_name,
            type_name=credential.type_name,
            revision=f"g{credential.generation}-s{managed.resource_version if managed else '?'}",
            not_ready=item.not_ready,
            denial=item.denial.message if item.denial is not None else None,
            oauth2=spec is not None and spec.oauth2 is not None,
        )

    def _run(
        self, view: TargetView, client: flowise_client.FlowiseClient, plan: sync.SyncPlan
    ) -> tuple[dict[str, sync.PushResult], report.Failure | None]:
        """Pushes and deletes as planned, until a failure that stops the sync."""
        results: dict[str, sync.PushResult] = {}
        for push in plan.pushes:
            try:
                stored = client.put_credential(push.payload)
            except flowise_client.FlowiseError as error:
                failure = _failure(error)
                results[push.id] = sync.PushResult(push.id, False, message=failure.message, reason=failure.reason)
                if failure.stops_sync:
                    return results, failure
                continue
            results[push.id] = sync.PushResult(push.id, True, updated_date=stored.updated_date)
            metrics.FLOWISE_WRITES.labels(push.action).inc()
            logger.info("FlowiseTarget %s/%s: %s credential %s (%s)", *view.key, push.action, push.id, push.name)
        for delete in plan.deletes:
            try:
                already_gone = not client.delete_credential(delete.id)
            except flowise_client.FlowiseError as error:
                failure = _failure(error)
                results[delete.id] = sync.PushResult(delete.id, False, message=failure.message, reason=failure.reason)
                if failure.stops_sync:
                    return results, failure
                continue
            results[delete.id] = sync.PushResult(delete.id, True)
            metrics.FLOWISE_WRITES.labels("delete").inc()
            logger.info(
                "FlowiseTarget %s/%s: deleted credential %s (%s)%s",
                *view.key,
                delete.id,
                delete.name,
                " (already gone)" if already_gone else "",
            )
        return results, None

    def _stopped(self, view: TargetView, failure: report.Failure) -> Result:
        logger.info("FlowiseTarget %s/%s is not ready: %s", view.namespace, view.name, failure.reason)
        now = _now()
        return self._report(view, report.stopped(view.status, failure, generation=view.generation, now=now), now)

    def _report(self, view: TargetView, outcome: report.Report, now: str) -> Result:
        patch = planning.status_patch(view.status, outcome.status)
        if patch is not None:
            view = self.write_status(view, {**patch, "lastSyncTime": now})
        for event in outcome.events:
            self.event(view, event)
        return Result.retry_later(outcome.outcome) if outcome.retry else Result.done(outcome.outcome)

    # ---- deletion ------------------------------------------------------------------------------

    def clean_up(self, view: TargetView, *, give_up: bool) -> Result | None:
        """Removes (with prune) what the target pushed; retried until `give_up`, then let go with an Event."""
        owned = [entry for entry in map(sync.Entry.from_status, view.status.get("credentials") or []) if entry.owned]
        if not view.prune or not owned:
            return None
        connection = self._connect(view)
        if isinstance(connection, report.Failure):
            # When the namespace is being deleted, the API key Secret may already be gone: use the last client.
            with self._lock:
                remembered = self._connections.get(view.key)
            connection = remembered or report.Failure("Unauthorized", "no API key to remove the pushed credentials")
        failure = connection if isinstance(connection, report.Failure) else self._delete_all(connection.client, owned)
        if failure is None:
            logger.info(
                "FlowiseTarget %s/%s deleted: removed %d credential(s) from %s", *view.key, len(owned), view.url
            )
            return None
        if not give_up:
            message = f"cannot remove the pushed credentials yet: {failure.message}"
            self._stopped(view, dataclasses.replace(failure, message=message))
            return Result.retry_later(failure.reason)
        ids = ", ".join(entry.id for entry in owned)
        message = (
            f"gave up removing {len(owned)} credential(s) from {view.url} after {self.cleanup_timeout:g}s "
            f"({failure.reason}); remove them in Flowise by hand: ids {ids}"
        )
        self.event(view, planning.Event("Warning", "CleanupAbandoned", message))
        return None

    def _delete_all(self, client: flowise_client.FlowiseClient, owned: list[sync.Entry]) -> report.Failure | None:
        remaining = 0
        try:
            for entry in owned:
                try:
                    client.delete_credential(entry.id)
                    metrics.FLOWISE_WRITES.labels("delete").inc()
                except flowise_client.ServerError:
                    remaining += 1
        except flowise_client.FlowiseError as error:
            return _failure(error)
        if remaining:
            return report.Failure("ServerError", f"{remaining} credential(s) could not be deleted from Flowise")
        return None

    # ---- talking to Flowise --------------------------------------------------------------------

    def _connect(self, view: TargetView) -> _Connection | report.Failure:
        """The client for this target, with the API key (and CA) read from their Secrets."""
        api_key = self.secret_value(view.namespace, view.api_key.name, view.api_key.key)
        if api_key is None:
            return report.Failure(
                "SecretReferenceMissing",
                f"the API key Secret {view.api_key.name} (key {view.api_key.key}) does not exist in namespace "
                f"{view.namespace} or lacks that key: create it with a Flowise API key that has the "
                "credentials:view, credentials:create, credentials:update and credentials:delete permissions",
                from_server=False,
            )
        ca_pem: str | None = None
        if view.ca is not None:
            ca = self.secret_value(view.namespace, view.ca.name, view.ca.key)
            if ca is None:
                return report.Failure(
                    "SecretReferenceMissing",
                    f"the CA Secret {view.ca.name} (key {view.ca.key}) in spec.tls.caSecretRef does not exist in "
                    f"namespace {view.namespace} or lacks that key",
                    from_server=False,
                )
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
            return report.Failure("InvalidSpec", f"{error}: fix spec.url or spec.tls.caSecretRef", from_server=False)
        connection = _Connection(fingerprint, made)
        with self._lock:
            old, self._connections[view.key] = self._connections.get(view.key), connection
        if old is not None:
            old.client.close()
        return connection

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
