"""The CredentialBinding reconciler: gather → core.binding plan → apply, on its own work queue.

A binding renders a Credential into a plain Secret and rolls workloads out when that content
changes. This module keeps its own view of the bindings with indexes — by Credential (a
Credential's change reaches exactly its bindings, never a scan), by Credential name (a share's
change reaches the bindings of its mirrors), by output Secret (drift and deletion of a binding's
Secret are repaired, a foreign Secret going away lets the binding write) — and reads Credentials,
their managed Secrets and CredentialShares from the controller's watch cache. The plaintext comes
from opening the Credential's managed Secret with the keyring, as mirrors do.

It also keeps each Credential's `status.usedBy`, `usedByCount` and `usedByPods`, which
`kubectl get credentials` shows; the webhook's in-use check asks the API server itself.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from credbridge.core import (
    admission,
    binding,
    envelope,
    envrefs,
    keyring,
    names,
    planning,
    redaction,
    registry,
    tenancy,
    views,
)
from credbridge.kube import connecting, errors, fetching, writing
from credbridge.operator import cache as cache_module
from credbridge.operator import credentials as credentials_module
from credbridge.operator import metrics, workqueue
from credbridge.operator import settings as settings_module

logger = logging.getLogger(__name__)

Json = dict[str, Any]
Key = views.Key

USAGE_DELAY = 1.0
"""Seconds a Credential's usage update waits, so that a burst of events costs one status write."""


@dataclasses.dataclass(frozen=True)
class _Settled:
    """A Credential whose status reflects its current spec, and its plaintext (or why there is none)."""

    view: views.CredentialView
    content: redaction.SecretFields | planning.Failure


def _key(body: Mapping[str, Any]) -> Key:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace")), str(metadata.get("name"))


def _involved(view: binding.BindingView) -> Json:
    """The binding as an Event's involved object."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_BINDING_KIND,
        "metadata": {"namespace": view.namespace, "name": view.name, "uid": view.uid},
    }


def _fingerprint(view: views.CredentialView) -> tuple[Any, ...]:
    """What of a Credential a binding's plan depends on; other changes (usage) queue no binding."""
    ready = view.ready_condition or {}
    return (
        view.uid,
        view.generation,
        view.status.get("observedGeneration"),
        ready.get("status"),
        ready.get("reason"),
        view.status.get("updatedDate"),
        view.deleting,
    )


class BindingController:
    """Bindings of one operator process: their view, indexes, queues and reconcile."""

    def __init__(
        self,
        api: connecting.ApiClient,
        settings: settings_module.OperatorSettings,
        cache: cache_module.Cache,
        *,
        keyring_now: Callable[[], keyring.Keyring | None],
        types_now: Callable[[], registry.Registry],
        env_policy: envrefs.EnvPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.settings = settings.bindings
        self._cache = cache
        self._keyring_now = keyring_now
        self._types_now = types_now
        self._env_policy = env_policy
        self._clock = clock
        self._lock = threading.RLock()
        self._bindings: dict[Key, Json] = {}
        self._by_credential: dict[Key, set[Key]] = {}
        """(namespace, Credential name) -> bindings naming it."""
        self._by_credential_name: dict[str, set[Key]] = {}
        """Credential name -> bindings naming it in any namespace (mirrors share a name everywhere)."""
        self._by_secret: dict[Key, Key] = {}
        """(namespace, output Secret name) -> the binding writing it."""
        self._managed_secrets: dict[Key, Key] = {}
        """(namespace, managed Secret name) -> the Credential whose Secret it is (for Pod events)."""
        self._fingerprints: dict[Key, tuple[Any, ...]] = {}
        """Credential -> what its bindings depend on, as last seen."""
        self._usage_pending: set[Key] = set()
        """Credentials with a usage update waiting in usage_queue's delay."""
        self._rollout_at: dict[Key, float] = {}
        """Bindings with a rollout due -> when the debounce lets it happen (monotonic seconds)."""
        self.queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue(
            self._reconcile_key, workers=settings.workers, name="binding"
        )
        self.usage_queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue(
            self._update_usage, workers=1, name="binding-usage"
        )

    def start(self) -> None:
        self.queue.start()
        self.usage_queue.start()

    def stop(self) -> None:
        self.queue.stop()
        self.usage_queue.stop()

    # ---- inputs from watches (no I/O: index, then queue) -------------------------------------

    def binding_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event on a CredentialBinding: re-index it and queue it (and its Credentials' usage)."""
        key = _key(body)
        view = binding.BindingView.from_object(body)
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        affected: set[Key] = set()
        with self._lock:
            previous = self._bindings.get(key)
            if event_type != "DELETED" and previous is not None:
                metadata = previous.get("metadata") or {}
                cached = str(metadata.get("resourceVersion", ""))
                if metadata.get("uid") == view.uid and cached and views.resource_version_newer(cached, version):
                    return  # this version or a newer one is cached (our own status write, written through)
            if previous is None or event_type == "DELETED":
                affected.add((key[0], view.credential_name))
            if previous is not None:
                before = binding.BindingView.from_object(previous)
                if before.credential_name != view.credential_name:
                    affected |= {(key[0], before.credential_name), (key[0], view.credential_name)}
                self._unindex(key, before)
            if event_type == "DELETED":
                self._bindings.pop(key, None)
                self._rollout_at.pop(key, None)
            else:
                self._bindings[key] = dict(body)
                self._index(key, view)
        if event_type != "DELETED":
            self.queue.add(key)
        for credential in affected:
            if credential[1]:
                self._queue_usage(credential)

    def cached_binding(self, key: Key) -> Json | None:
        """The CredentialBinding as last seen by the watch, or None (the workload read endpoint reads it)."""
        with self._lock:
            return self._bindings.get(key)

    def _index(self, key: Key, view: binding.BindingView) -> None:
        self._by_credential.setdefault((key[0], view.credential_name), set()).add(key)
        self._by_credential_name.setdefault(view.credential_name, set()).add(key)
        for secret in (view.secret_name, view.status.get("secretName")):
            if secret:
                self._by_secret[(key[0], str(secret))] = key

    def _unindex(self, key: Key, view: binding.BindingView) -> None:
        self._by_credential.get((key[0], view.credential_name), set()).discard(key)
        self._by_credential_name.get(view.credential_name, set()).discard(key)
        for secret in (view.secret_name, view.status.get("secretName")):
            if secret and self._by_secret.get((key[0], str(secret))) == key:
                del self._by_secret[(key[0], str(secret))]

    def credential_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A Credential changed (or went away): its bindings re-render; its usage status is checked."""
        view = views.CredentialView.from_object(body)
        key = view.key
        secret = (key[0], view.secret_name)
        with self._lock:
            if event_type == "DELETED":
                self._managed_secrets.pop(secret, None)
                changed = self._fingerprints.pop(key, None) is not None
            else:
                self._managed_secrets[secret] = key
                fingerprint = _fingerprint(view)
                changed = self._fingerprints.get(key) != fingerprint
                self._fingerprints[key] = fingerprint
        bound = self._bound_to(key)
        if changed:
            for binding_key in bound:
                self.queue.add(binding_key)
        if event_type != "DELETED":
            names_bound = sorted(name for _, name in bound)
            status = view.status
            if status.get("usedBy", []) != names_bound[:100] or status.get("usedByCount", 0) != len(names_bound):
                self._queue_usage(key)

    def secret_changed(self, event_type: str | None, key: Key, labels: Mapping[str, str]) -> None:
        """A Secret changed: a binding's output (drift, deletion, a foreign one appearing or going) or a
        Credential's managed Secret (new content) queues the bindings concerned."""
        with self._lock:
            writer = self._by_secret.get(key)
        if writer is not None:
            self.queue.add(writer)
        owner = labels.get(names.CREDENTIAL_LABEL)
        if labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY_VALUE and owner:
            for binding_key in self._bound_to((key[0], str(owner))):
                self.queue.add(binding_key)

    def share_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A CredentialShare changed: bindings of its mirrors re-check whether the share allows them."""
        share = views.ShareView.from_object(body)
        mirror = names.mirror_name(share.namespace, share.credential)
        with self._lock:
            keys = sorted(self._by_credential_name.get(mirror, ()))
        for key in keys:
            self.queue.add(key)

    def pod_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A Pod came, changed or went: the Credentials whose Secret or binding Secret it reads re-check
        their `status.usedByPods` (an index lookup per referenced Secret, no scan)."""
        namespace = str((body.get("metadata") or {}).get("namespace"))
        credentials: set[Key] = set()
        with self._lock:
            for secret in admission.secrets_used_by_pod(body):
                owner = self._managed_secrets.get((namespace, secret))
                if owner is not None:
                    credentials.add(owner)
                writer = self._by_secret.get((namespace, secret))
                if writer is not None and writer in self._bindings:
                    name = binding.BindingView.from_object(self._bindings[writer]).credential_name
                    credentials.add((namespace, name))
        for credential in credentials:
            self._queue_usage(credential)

    def _queue_usage(self, credential: Key) -> None:
        """Queue a usage update after USAGE_DELAY, once however many events ask for it meanwhile."""
        with self._lock:
            if credential in self._usage_pending:
                return
            self._usage_pending.add(credential)
        self.usage_queue.add_after(credential, USAGE_DELAY)

    def _bound_to(self, credential: Key) -> list[Key]:
        with self._lock:
            return sorted(self._by_credential.get(credential, ()))

    # ---- who uses a Credential (from the API server) -------------------------------------------

    def bindings_using(self, namespace: str, credential: str) -> list[Json]:
        """The bindings in `namespace` that name `credential` (from the API, not the view)."""
        return [
            item
            for item in fetching.list_credential_bindings(self.api, namespace)
            if (item.get("spec") or {}).get("credential") == credential
        ]

    def usage(self, namespace: str, credential: str, secret_name: str) -> tuple[list[str], list[str]]:
        """Who uses a Credential, for the in-use check before deleting it: the bindings that render it,
        and the Pods that read its Secret or one of those bindings' Secrets."""
        bound = [binding.BindingView.from_object(item) for item in self.bindings_using(namespace, credential)]
        secrets = {secret_name} | {view.secret_name for view in bound if view.secret_name}
        pods = admission.pods_using_secrets(fetching.list_pods(self.api, namespace), secrets)
        return sorted(view.name for view in bound), pods

    # ---- reconciling -----------------------------------------------------------------------

    def _reconcile_key(self, key: Key) -> None:
        with self._lock:
            body = self._bindings.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        started = time.perf_counter()
        try:
            result = self._reconcile(key, body)
        except errors.ApiError as error:
            if error.namespace_terminating:
                metrics.RECONCILES.labels("binding", "skipped").inc()
                return
            metrics.RECONCILES.labels("binding", "error").inc()
            raise
        except Exception:
            metrics.RECONCILES.labels("binding", "error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.labels("binding").observe(time.perf_counter() - started)
        metrics.RECONCILES.labels("binding", result).inc()

    def _reconcile(self, key: Key, body: Json) -> str:
        view = binding.BindingView.from_object(body)
        inputs = self._gather(view, from_api=False)
        if inputs is None:
            return "waiting"  # the Credential is mid-change; its next status event queues us again
        plan = binding.plan_binding(view, inputs)
        if plan.failure is not None and plan.failure.reason in binding.WITHDRAWING_REASONS:
            # Removing a Secret is decided on what the API server says, not on a cache that may
            # not hold every share or namespace yet (right after a start).
            inputs = self._gather(view, from_api=True)
            if inputs is None:
                return "waiting"
            plan = binding.plan_binding(view, inputs)
        result = self._apply(key, body, view, plan, inputs.current_secret)
        if inputs.missing_targets:
            self.queue.add_after(key, self.settings.target_recheck)
        return result

    def _gather(self, view: binding.BindingView, *, from_api: bool) -> binding.Inputs | None:
        """The plan's inputs, or None while the Credential's status does not reflect its spec yet."""
        credential: views.CredentialView | None = None
        content: redaction.SecretFields | planning.Failure | None = None
        denial: planning.Failure | None = None
        if binding.reference_problem(view.credential_name) is None:
            settled = self._settled_credential(view.namespace, view.credential_name)
            if settled == "unsettled":
                return None
            if isinstance(settled, _Settled):
                credential, content = settled.view, settled.content
                if view.secret_name is not None:
                    denial = self._plain_output_denial(view, credential, from_api=from_api)
        missing = frozenset(
            target
            for target in view.rollout_targets
            if self.settings.rollouts
            and target.kind in fetching.WORKLOAD_KINDS
            and target.name
            and fetching.read_workload(self.api, target.kind, view.namespace, target.name) is None
        )
        return binding.Inputs(
            now=credentials_module.now_rfc3339(),
            keyring=self._keyring_now(),
            credential=credential,
            content=content,
            cred_type=self._types_now().get(credential.type_name) if credential else None,
            current_secret=self._output_secret(view, from_api=from_api),
            plain_output_denial=denial,
            missing_targets=missing,
            rollouts_enabled=self.settings.rollouts,
        )

    def _output_secret(self, view: binding.BindingView, *, from_api: bool) -> views.SecretView | None:
        """The Secret spec.secret.name names: from the cache when it is ours (labelled), else as stored."""
        if view.secret_name is None:
            return None
        key = (view.namespace, view.secret_name)
        cached = None if from_api else self._cache.secret(key)
        if cached is not None:
            return cached
        stored = fetching.read_secret(self.api, *key)
        return views.SecretView.from_object(stored) if stored is not None else None

    def _settled_credential(self, namespace: str, name: str) -> _Settled | str | None:
        """The Credential with its plaintext; None when it does not exist; "unsettled" while it changes.

        The Credential is read from the cache before and after its managed Secret: only when both
        reads are the same version, and its status says it reconciled that version, does the
        Secret hold the content of the spec that the tenancy rule judges.
        """
        key = (namespace, name)
        first = self._cache.credential(key)
        if first is None:
            # The cache may not know it yet: ask the API server before calling it gone.
            if fetching.read_credential(self.api, namespace, name) is None:
                return None
            return "unsettled"  # its watch event is on the way and queues this binding again
        where = f"Credential {namespace}/{name}"
        if first.deleting:
            return None
        if not first.status:
            return _Settled(first, planning.Failure("NotReconciled", f"{where} has not been reconciled yet"))
        if int(first.status.get("observedGeneration") or 0) != first.generation:
            return "unsettled"
        if not first.ready:
            reason = str((first.ready_condition or {}).get("reason") or "Unknown")
            return _Settled(first, planning.Failure(reason, f"{where} is not Ready ({reason})"))
        ring = self._keyring_now()
        secret = self._cache.secret((namespace, first.secret_name))
        second = self._cache.credential(key)
        if second is None or second.resource_version != first.resource_version:
            return "unsettled"
        if secret is None or ring is None:
            return _Settled(first, planning.Failure("SecretUnavailable", f"the Secret of {where} is not available"))
        try:
            content = planning.open_managed_secret(first, secret, ring)
        except envelope.EnvelopeError:
            return _Settled(first, planning.Failure("SecretUnreadable", f"the Secret of {where} could not be opened"))
        return _Settled(first, content)

    def _plain_output_denial(
        self, view: binding.BindingView, credential: views.CredentialView, *, from_api: bool
    ) -> planning.Failure | None:
        """Why this binding may not write a plain Secret: the cluster flag, the share, the tenancy rule."""
        if self.settings.secrets == "deny":
            return planning.Failure(
                "PlaintextDenied",
                (
                    f"{view.where}: plain Secret output of CredentialBindings is turned off in this cluster "
                    "(--binding-secrets=deny, Helm value bindings.secrets): remove spec.secret, or ask an "
                    "operator admin"
                ),
            )
        data: Mapping[str, Any] = credential.data
        data_namespace = credential.namespace
        if credential.shared_from is not None:
            reason = binding.share_denial(view.namespace, credential, *self._shares(view, credential, from_api))
            if reason is not None:
                return planning.Failure("ShareForbidsBinding", f"{view.where}: {reason}")
            source = self._cache.credential(credential.shared_from)
            if source is None or from_api:
                stored = fetching.read_credential(self.api, *credential.shared_from)
                source = views.CredentialView.from_object(stored) if stored is not None else None
            data = source.data if source is not None else {}
            data_namespace = credential.shared_from[0]
        reason = tenancy.plaintext_denial(data, data_namespace, self._env_policy, output="a CredentialBinding Secret")
        if reason is not None:
            return planning.Failure("EnvNotGranted", f"{view.where}: Credential {credential.name}: {reason}")
        return None

    def _shares(
        self, view: binding.BindingView, mirror: views.CredentialView, from_api: bool
    ) -> tuple[list[views.ShareView], views.NamespaceView | None]:
        """The shares of a mirror's source and the binding's Namespace, from the cache or the API server."""
        assert mirror.shared_from is not None
        if from_api:
            shares = [
                views.ShareView.from_object(s) for s in fetching.list_credential_shares(self.api, mirror.shared_from[0])
            ]
            namespace = fetching.read_namespace(self.api, view.namespace)
            return shares, views.NamespaceView.from_object(namespace) if namespace is not None else None
        return self._cache.shares_of(mirror.shared_from), self._cache.namespace(view.namespace)

    # ---- apply -----------------------------------------------------------------------------

    def _apply(
        self,
        key: Key,
        body: Json,
        view: binding.BindingView,
        plan: binding.Plan,
        current: views.SecretView | None,
    ) -> str:
        for name in plan.delete_secrets:
            self._delete_output(view, name)
        if plan.secret is not None:
            if current is None:
                written = writing.create_secret(self.api, plan.secret)
                metrics.API_WRITES.labels("secrets", "create").inc()
            else:
                written = writing.replace_secret(self.api, plan.secret, current.resource_version)
                metrics.API_WRITES.labels("secrets", "update").inc()
            self._cache.put_secret(views.SecretView.from_object(written))
            logger.info("CredentialBinding %s/%s: Secret %s written", view.namespace, view.name, view.secret_name)
        status = dict(plan.status)
        events = list(plan.events)
        if self._roll_out(key, view, plan):
            status.update(plan.rollout_status)
            targets = ", ".join(str(target) for target in plan.rollout)
            events.append(planning.Event("Normal", "RolledOut", f"{view.where}: rolled out {targets}"))
        patch = planning.status_patch(view.status, status)
        if patch is not None:
            version = str((body.get("metadata") or {}).get("resourceVersion", "")) or None
            written = writing.patch_credential_binding_status(
                self.api, view.namespace, view.name, patch, resource_version=version
            )
            metrics.API_WRITES.labels("credentialbindings/status", "patch").inc()
            with self._lock:
                cached = self._bindings.get(key)
                if cached is not None and (cached.get("metadata") or {}).get("uid") == view.uid:
                    self._unindex(key, binding.BindingView.from_object(cached))
                    self._bindings[key] = {
                        **cached,
                        "metadata": written.get("metadata"),
                        "status": written.get("status"),
                    }
                    self._index(key, binding.BindingView.from_object(self._bindings[key]))
        for event in events:
            self._post_event(view, event)
        if plan.failure is not None:
            logger.info("CredentialBinding %s/%s is not ready: %s", view.namespace, view.name, plan.failure.reason)
            return f"failed:{plan.failure.reason}"
        return "written" if plan.secret is not None else "unchanged"

    def _roll_out(self, key: Key, view: binding.BindingView, plan: binding.Plan) -> bool:
        """Patch the rollout targets once the debounce allows; True when they were patched now."""
        if not plan.rollout:
            with self._lock:
                self._rollout_at.pop(key, None)
            return False
        now = self._clock()
        with self._lock:
            due = self._rollout_at.setdefault(key, now + self.settings.rollout_debounce)
        if now < due:
            self.queue.add_after(key, due - now)
            return False
        annotations = {
            names.RESTARTED_AT_ANNOTATION: credentials_module.now_rfc3339(),
            names.RESTARTED_BY_ANNOTATION: f"{names.CREDENTIAL_BINDING_KIND}/{view.name}",
        }
        for target in plan.rollout:
            if writing.restart_workload(self.api, target.kind, view.namespace, target.name, annotations):
                metrics.API_WRITES.labels(target.kind.lower() + "s", "patch").inc()
                logger.info("CredentialBinding %s/%s rolled out %s", view.namespace, view.name, target)
        with self._lock:
            self._rollout_at.pop(key, None)
        return True

    def _delete_output(self, view: binding.BindingView, name: str) -> None:
        """Delete Secret `name` if this binding still owns it (never a foreign one)."""
        stored = fetching.read_secret(self.api, view.namespace, name)
        if stored is None or views.SecretView.from_object(stored).controller_uid != view.uid:
            return
        if writing.delete_secret(self.api, view.namespace, name, uid=stored["metadata"]["uid"]):
            metrics.API_WRITES.labels("secrets", "delete").inc()
            self._cache.remove_secret((view.namespace, name))
            logger.info("CredentialBinding %s/%s: Secret %s removed", view.namespace, view.name, name)

    def _post_event(self, view: binding.BindingView, event: planning.Event) -> None:
        try:
            writing.post_event(self.api, _involved(view), type=event.type, reason=event.reason, message=event.message)
            metrics.API_WRITES.labels("events", "create").inc()
        except errors.ApiError as error:
            # A namespace being deleted refuses Events; never let an Event stop the reconcile.
            logger.debug("could not post an event for %s/%s: %s", view.namespace, view.name, error.explanation)

    # ---- usage -----------------------------------------------------------------------------

    def _update_usage(self, credential: Key) -> None:
        """Write who uses a Credential into its status: its bindings and the Pods reading its Secret or
        theirs (read from the API server, not the view)."""
        with self._lock:
            self._usage_pending.discard(credential)
        namespace, name = credential
        view = self._cache.credential(credential)
        if view is None or view.deleting:
            return
        desired = binding.usage_status(*self.usage(namespace, name, view.secret_name))
        status = view.status
        patch = {field: value for field, value in desired.items() if status.get(field) != value}
        never_used = all(field not in status for field in desired)
        if not patch or (never_used and not desired["usedByCount"] and not desired["usedByPods"]):
            return
        try:
            written = writing.patch_credential_status(
                self.api, namespace, name, patch, resource_version=view.resource_version
            )
        except errors.ApiError as error:
            if error.not_found or error.namespace_terminating:
                return
            raise
        metrics.API_WRITES.labels("credentials/status", "patch").inc()
        # Written through, so the Credential's own reconcile plans from this version (no conflict).
        self._cache.put_credential(views.CredentialView.from_object(written))
