"""The shape every consumer of Credentials shares, so that a new one is one file.

A consumer takes a Credential's plaintext out of its encrypted Secret: a binding's Secret, a push
into Flowise, a probe, a token refresh. What is the same for all of them lives here:
- `Context`: what the operator hands each consumer — the API client, the watch cache, the one
  reader of plaintext (`reading.Reader`), the one applier of writes (`applying.Applier`), the
  keyring, the type registry and the release policy (`core.release`);
- `Consumer`: a work queue whose reconciles are counted and timed (`reconciling.instrumented`),
  a periodic resync at a bounded rate, and the inputs the controller routes to it (Credential,
  Secret and share events) — each an index lookup and a queue add, never a scan;
- `ObjectConsumer`: a consumer with a kind of its own (CredentialBinding, FlowiseTarget), kept
  in the watch cache as a `cache.Store` with the indexes it declares; an optional finalizer added
  before the first reconcile and released after `finalize`; status written back through the cache
  with the resourceVersion it was planned from (a 409 re-reads the object and plans again);
- `ExternalSync`: an `ObjectConsumer` that pushes the Credentials its objects select into an
  external system (Flowise): the selection by label, the release decision per Credential, the
  settled plaintext, the Secrets its objects read (an API key, a CA) and the clean-up on delete
  with a deadline;
- `CredentialConsumer`: a consumer that works on Credentials themselves (a verification probe, a
  token refresh), keyed by Credential: it owns some of the Credential's conditions and status
  fields, and writes them merged into the status it planned from (core.conditions.merge), with
  the resourceVersion (409: plan again).

A subclass declares its kind and indexes and writes `reconcile_object` (gather → core plan →
apply); the registry in `consumers.py` wires it into the runner, the handlers, the settings and
the CLI flags.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import logging
import threading
import typing
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from credbridge.core import conditions, keyring, names, planning, redaction, registry, release, sharing, views
from credbridge.kube import connecting, errors, fetching
from credbridge.operator import applying, reading, reconciling, workqueue
from credbridge.operator import cache as cache_module
from credbridge.operator import settings as settings_module

logger = logging.getLogger(__name__)

Json = dict[str, Any]
Key = views.Key
Result = reconciling.Result


@dataclasses.dataclass(frozen=True)
class Context:
    """What the operator gives every consumer."""

    api: connecting.ApiClient
    settings: settings_module.OperatorSettings
    cache: cache_module.Cache
    reader: reading.Reader
    applier: applying.Applier
    keyring_now: Callable[[], keyring.Keyring | None]
    types_now: Callable[[], registry.Registry]
    release_policy: release.Policy
    active: Callable[[], bool] = lambda: True
    """Whether this replica works now (`activity.Activity`): every queue's gate."""


class Consumer(abc.ABC):
    """A work queue of keys, reconciled one at a time per key, resynced periodically, fed by events."""

    name: ClassVar[str]
    """The queue's name and the `kind` label of its reconciles in the metrics."""

    def __init__(
        self, context: Context, *, workers: int, resync_seconds: float = 0.0, resync_per_second: float = 1.0
    ) -> None:
        self.context = context
        self.queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue(
            reconciling.instrumented(self.name, self.reconcile), workers=workers, name=self.name, gate=context.active
        )
        self._resync_seconds = resync_seconds
        self._resync_per_second = resync_per_second
        self._stopping = threading.Event()
        self._resync_thread = threading.Thread(target=self._resync_forever, name=f"{self.name}-resync", daemon=True)

    def start(self) -> None:
        self.queue.start()
        if self._resync_seconds > 0:
            self._resync_thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.queue.stop()

    def resync_keys(self) -> list[Key]:
        """Every key a periodic resync visits (none by default)."""
        return []

    def _resync_forever(self) -> None:
        """Every `resync_seconds`, queue every key again, spread at `resync_per_second`."""
        while not self._stopping.wait(self._resync_seconds):
            spacing = 1.0 / max(self._resync_per_second, 0.001)
            for index, key in enumerate(self.resync_keys()):
                self.queue.add_after(key, index * spacing)

    # ---- inputs the controller routes here (no I/O: index lookups, then queue adds) ------------

    # Optional hooks: a consumer overrides those it needs.
    def credential_changed(  # noqa: B027
        self, event_type: str | None, view: views.CredentialView, previous: views.CredentialView | None
    ) -> None:
        """A Credential change the watch cache stored (`previous`: the view it replaced)."""

    def secret_changed(self, event_type: str | None, key: Key, labels: Mapping[str, str]) -> None:  # noqa: B027
        """A Secret event (managed or not, written through or not): its key and labels only."""

    def share_changed(self, event_type: str | None, view: views.ShareView) -> None:  # noqa: B027
        """A CredentialShare event."""

    @abc.abstractmethod
    def reconcile(self, key: Key) -> Result:
        """Brings one key in line; returns what the queue should do next."""


class ObjectView(Protocol):
    """What an ObjectConsumer reads of its own objects (core views provide it)."""

    @property
    def key(self) -> Key: ...

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def uid(self) -> str: ...

    @property
    def resource_version(self) -> str: ...

    @property
    def deleting(self) -> bool: ...

    @property
    def finalizers(self) -> tuple[str, ...]: ...


V = TypeVar("V", bound=ObjectView)


class ObjectConsumer(Consumer, Generic[V]):
    """A consumer of a kind of its own, kept in the watch cache with the indexes it declares."""

    plural: ClassVar[str]
    kind: ClassVar[str]
    finalizer: ClassVar[str | None] = None
    """Held on each object until `finalize` says its outputs are cleaned up; None: no finalizer."""

    def __init__(
        self,
        context: Context,
        *,
        indexes: Mapping[str, Callable[[V], Iterable[Hashable]]],
        workers: int,
        resync_seconds: float = 0.0,
        resync_per_second: float = 1.0,
    ) -> None:
        super().__init__(context, workers=workers, resync_seconds=resync_seconds, resync_per_second=resync_per_second)
        self.store: cache_module.Store[V] = context.cache.store(self.plural, indexes)

    @staticmethod
    @abc.abstractmethod
    def view_of(obj: Mapping[str, Any]) -> V:
        """The typed view of one of this consumer's objects."""

    @abc.abstractmethod
    def reconcile_object(self, view: V) -> Result:
        """Gather → plan → apply for one object that is not being deleted (and holds the finalizer)."""

    def finalize(self, view: V) -> Result | None:
        """Cleans up after a deleted object; None when done (the finalizer is then released)."""
        return None

    def object_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event on one of this consumer's objects: store it and queue it."""
        view = self.view_of(body)
        if event_type == "DELETED":
            previous = self.store.remove(view.key)
            self.removed(previous or view)
            return
        stored, previous = self.store.put(view)
        if stored:
            self.stored(view, previous)
            self.queue.add(view.key)

    def stored(self, view: V, previous: V | None) -> None:
        """Called when a new version is stored (before it is queued): queue what else depends on it."""

    def removed(self, view: V) -> None:
        """Called when an object was deleted: forget what is kept about it."""

    def resync_keys(self) -> list[Key]:
        return self.store.key_list()

    def reconcile(self, key: Key) -> Result:
        view = self.store.get(key)
        if view is None:
            return Result.done("gone")
        try:
            if view.deleting:
                if self.finalizer is None or self.finalizer not in view.finalizers:
                    return Result.done("deleting")
                pending = self.finalize(view)
                if pending is not None:
                    return pending
                self._set_finalizers(view, [item for item in view.finalizers if item != self.finalizer])
                return Result.done("finalized")
            if self.finalizer is not None and self.finalizer not in view.finalizers:
                added = self._set_finalizers(view, [*view.finalizers, self.finalizer])
                if added is None:
                    return Result.done("gone")
                view = added
            return self.reconcile_object(view)
        except errors.ApiError as error:
            if error.conflict:
                # Planned from an older version: read the object as stored and plan again.
                self.refresh(key)
                return Result.after("conflict", 0.0)
            if error.namespace_terminating:
                return Result.done("skipped")
            if error.not_found and self.store.get(key) is not None and self.refresh(key) is None:
                return Result.done("gone")
            raise

    def refresh(self, key: Key) -> V | None:
        """Reads one object as stored into the store (a newer version wins); None when it is gone."""
        stored = fetching.read_object(self.context.api, self.plural, self.kind, *key)
        if stored is None:
            return None
        view = self.view_of(stored)
        self.store.put(view)
        return view

    def _set_finalizers(self, view: V, finalizers: list[str]) -> V | None:
        written = self.context.applier.set_finalizers(
            self.plural, self.kind, view.namespace, view.name, finalizers, resource_version=view.resource_version
        )
        if written is None:
            return None
        updated = self.view_of(written)
        self.store.put(updated)
        return updated

    # ---- apply helpers ---------------------------------------------------------------------------

    def write_status(self, view: V, patch: Json) -> V:
        """Merge-patches the status planned from `view` (409 if it moved on) and returns the stored view."""
        written = self.context.applier.patch_status(
            self.plural, self.kind, view.namespace, view.name, patch, resource_version=view.resource_version
        )
        updated = self.view_of(written)
        self.store.put(updated)
        return updated

    def event(self, view: V, event: planning.Event) -> None:
        """Posts an Event about one of this consumer's objects (best effort)."""
        self.context.applier.event(
            applying.involved(self.kind, view.namespace, view.name, view.uid, view.resource_version), event
        )


class TargetView(ObjectView, Protocol):
    """What an ExternalSync reads of its objects besides ObjectView."""

    @property
    def selector(self) -> Mapping[str, Any]: ...

    @property
    def referenced_secrets(self) -> frozenset[str]: ...

    @property
    def deletion_timestamp(self) -> str: ...


T = TypeVar("T", bound=TargetView)


@dataclasses.dataclass(frozen=True)
class Selected:
    """A Credential an external sync's object selects, with the release decision for it."""

    view: views.CredentialView
    denial: planning.Failure | None
    """Why its plaintext may not go to the external system (core.release), or None."""

    @property
    def not_ready(self) -> str | None:
        """None when Ready=True for its current generation; else why not (`NotReconciled` before its first
        reconcile, `Reconciling` while its status does not describe its spec yet)."""
        ready = self.view.ready_condition
        if ready is None or ready.get("status") != "True":
            return str((ready or {}).get("reason") or "NotReconciled")
        if int(self.view.status.get("observedGeneration") or 0) != self.view.generation:
            return "Reconciling"
        return None


class ExternalSync(ObjectConsumer[T]):
    """Pushes the Credentials each object selects in its namespace into an external system.

    Subclasses write `reconcile_object` (sync one object: gather what the system holds, plan
    with core, push) and `clean_up` (remove what was pushed when the object goes).
    """

    system: ClassVar[str]
    """The external system's name, for messages and the release rule ("Flowise")."""
    INDEXES: ClassVar[Mapping[str, cache_module.IndexFunction[TargetView]]] = {
        "namespace": lambda view: (view.namespace,),
        "secret": lambda view: ((view.namespace, name) for name in view.referenced_secrets),
    }
    """By namespace (a Credential's change reaches the targets of its namespace) and by the Secrets an
    object reads (an API key, a CA)."""

    def __init__(
        self,
        context: Context,
        *,
        workers: int,
        resync_seconds: float,
        resync_per_second: float,
        cleanup_timeout: float,
    ) -> None:
        super().__init__(
            context,
            indexes=self.INDEXES,
            workers=workers,
            resync_seconds=resync_seconds,
            resync_per_second=resync_per_second,
        )
        self.cleanup_timeout = cleanup_timeout

    @abc.abstractmethod
    def clean_up(self, view: T, *, give_up: bool) -> Result | None:
        """Removes what `view` pushed; None when done. `give_up`: the deadline passed, report and let go."""

    def finalize(self, view: T) -> Result | None:
        return self.clean_up(view, give_up=_age(view.deletion_timestamp) > self.cleanup_timeout)

    # ---- inputs ----------------------------------------------------------------------------------

    def credential_changed(
        self, event_type: str | None, view: views.CredentialView, previous: views.CredentialView | None
    ) -> None:
        # A status write that changes nothing pushed (usage, a check's time) queues nothing: with periodic
        # verification that is most Credential events. New content arrives through the managed Secret's
        # events too (a mirror's content follows its source that way).
        if event_type != "DELETED" and output_fingerprint(view) == output_fingerprint(previous):
            return
        for key in self.store.lookup_keys("namespace", view.namespace):
            self.queue.add(key)

    def secret_changed(self, event_type: str | None, key: Key, labels: Mapping[str, str]) -> None:
        queued = set(self.store.lookup_keys("secret", key))
        if labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY_VALUE and labels.get(names.CREDENTIAL_LABEL):
            queued.update(self.store.lookup_keys("namespace", key[0]))
        for target in sorted(queued):
            self.queue.add(target)

    # ---- gather helpers --------------------------------------------------------------------------

    def selected(self, view: T) -> list[Selected]:
        """The Credentials (and mirrors) of the object's namespace its selector selects, with the release
        decision for each."""
        output = release.external(self.system, view.namespace)
        policy = self.context.release_policy
        return [
            Selected(credential, self.context.reader.denial(credential, output, policy))
            for credential in self.context.cache.in_namespace(view.namespace)
            if sharing.selector_matches(view.selector, credential.labels)
        ]

    def content(self, credential: views.CredentialView) -> redaction.SecretFields | str:
        """The settled plaintext of a selected Credential, or why it cannot be pushed now (no value)."""
        settled = self.context.reader.settled(credential.key)
        if settled is None:
            return "it does not exist any more"
        if settled is reading.UNSETTLED:
            return "it is changing; it is pushed once its status catches up"
        assert isinstance(settled, reading.Settled)
        if isinstance(settled.content, planning.Failure):
            return settled.content.message
        return settled.content

    def secret_value(self, namespace: str, name: str, key: str) -> redaction.Redacted | None:
        """One value of a Secret the object reads (an API key, a CA), stripped; None when absent."""
        stored = fetching.read_secret(self.context.api, namespace, name)
        if stored is None:
            return None
        value = views.SecretView.from_object(stored).data.get(key)
        return redaction.Redacted(value.strip()) if value else None


class CredentialConsumer(Consumer):
    """Works on Credentials themselves, keyed by Credential; subclasses write `reconcile_credential`.

    The periodic resync visits every Credential at `resync_per_second` (work that must look at
    all of them, spread out); every other input is routed by `wants`, which sees each stored change.
    """

    def resync_keys(self) -> list[Key]:
        return self.context.cache.credential_keys()

    def wants(self, view: views.CredentialView, previous: views.CredentialView | None) -> bool:
        """Whether a stored change of a Credential needs a reconcile (default: its generation or its
        Secret's content changed, by `status.updatedDate`)."""
        if previous is None:
            return True
        return (view.generation, view.status.get("updatedDate")) != (
            previous.generation,
            previous.status.get("updatedDate"),
        )

    def credential_changed(
        self, event_type: str | None, view: views.CredentialView, previous: views.CredentialView | None
    ) -> None:
        if event_type == "DELETED":
            self.forget(view.key)
        elif self.wants(view, previous):
            self.queue.add(view.key)

    def forget(self, key: Key) -> None:
        """A Credential was deleted: drop what is kept about it (metrics, schedules)."""

    @abc.abstractmethod
    def reconcile_credential(self, view: views.CredentialView) -> Result:
        """Gather → plan → apply for one Credential that exists and is not being deleted."""

    def reconcile(self, key: Key) -> Result:
        view = self.context.cache.credential(key)
        if view is None or view.deleting:
            return Result.done("gone")
        try:
            return self.reconcile_credential(view)
        except errors.ApiError as error:
            if error.conflict:
                # Planned from an older version: read the Credential as stored into the cache, plan again.
                stored = self.context.reader.credential(key, from_api=True)
                if stored is not None:
                    self.context.cache.put_credential(stored)
                return Result.after("conflict", 0.0)
            if error.not_found or error.namespace_terminating:
                return Result.done("gone")
            raise

    def write_status(self, view: views.CredentialView, patch: Json) -> views.CredentialView:
        """Merge-patches status fields this consumer owns, planned from `view` (409 if it moved on). A patch
        that sets `conditions` must have merged them with `core.conditions.merge` from `view.status`."""
        return self.context.applier.patch_credential_status(view, patch)

    def event(self, view: views.CredentialView, event: planning.Event) -> None:
        """Posts an Event about the Credential (best effort)."""
        self.context.applier.event(
            applying.involved(names.CREDENTIAL_KIND, view.namespace, view.name, view.uid, view.resource_version),
            event,
        )


def output_fingerprint(view: views.CredentialView | None) -> tuple[typing.Any, ...] | None:
    """What of a Credential a consumer's output depends on: its object and spec (generation), whether it is
    Ready and for which generation, its content (`updatedDate`), its labels (selectors), its id, and its
    Verified outcome (the release rule reads it with --verification-block-consumers). Status fields other
    writers own (usage, the time of a check) are not part of it."""
    if view is None:
        return None
    ready = view.ready_condition or {}
    verified = conditions.find(view.status, release.VERIFIED_CONDITION) or {}
    return (
        view.uid,
        view.generation,
        view.status.get("observedGeneration"),
        ready.get("status"),
        ready.get("reason"),
        view.status.get("updatedDate"),
        view.status.get("id"),
        tuple(sorted(view.labels.items())),
        view.deleting,
        verified.get("status"),
        verified.get("reason"),
    )


def _age(timestamp: str) -> float:
    """Seconds since an RFC 3339 `timestamp` (0 when there is none)."""
    try:
        then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return 0.0
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()
