"""The CredentialBinding reconciler: gather → core.binding plan → apply, on the consumer base.

A binding renders a Credential into a plain Secret and rolls workloads out when that content
changes. Its bindings live in the watch cache (`consumer.ObjectConsumer`) with three indexes — by
Credential (a Credential's change reaches exactly its bindings), by Credential name (a share's
change reaches the bindings of its mirrors), by output Secret (drift and deletion of a binding's
Secret are repaired, a foreign Secret going away lets the binding write). The plaintext comes
from the one reader (`reading.Reader.settled`), and whether it may be written as a plain Secret
from the one release rule (`core.release`).

It also keeps each Credential's `status.usedBy`, `usedByCount` and `usedByPods`, which
`kubectl get credentials` shows; the webhook's in-use check asks the API server itself.
"""

from __future__ import annotations

import logging
import threading
import time
import typing
from collections.abc import Callable, Mapping
from typing import Any

from credbridge.core import admission, binding, conditions, names, planning, release, views
from credbridge.kube import connecting, errors, fetching, writing
from credbridge.operator import cache as cache_module
from credbridge.operator import consumer, metrics, reading, reconciling, workqueue
from credbridge.operator import credentials as credentials_module
from credbridge.operator import settings as settings_module

logger = logging.getLogger(__name__)

Key = views.Key
Result = consumer.Result
BindingView = binding.BindingView

USAGE_DELAY = 1.0
"""Seconds a Credential's usage update waits, so that a burst of events costs one status write."""


def _fingerprint(view: views.CredentialView | None) -> tuple[Any, ...] | None:
    """What of a Credential a binding's plan depends on (usage changes queue no binding): what every
    consumer's output depends on, and its OAuth2Ready condition, which a binding reports."""
    base = consumer.output_fingerprint(view)
    if view is None or base is None:
        return None
    oauth2 = conditions.find(view.status, binding.OAUTH2_CONDITION) or {}
    return (*base, oauth2.get("status"), oauth2.get("reason"))


class BindingController(consumer.ObjectConsumer[BindingView]):
    """Bindings of one operator process: their reconcile, and the usage status of the Credentials they name."""

    name = "binding"
    plural = names.CREDENTIAL_BINDING_PLURAL
    kind = names.CREDENTIAL_BINDING_KIND
    view_of = staticmethod(BindingView.from_object)
    INDEXES: typing.ClassVar[Mapping[str, cache_module.IndexFunction[BindingView]]] = {
        "credential": lambda view: ((view.namespace, view.credential_name),),
        "credential-name": lambda view: (view.credential_name,),
        "secret": lambda view: ((view.namespace, name) for name in view.output_secrets),
    }
    """By the Credential it names (in its namespace), by that name alone (a share's mirrors have the same
    name everywhere), and by the Secrets it writes or wrote."""

    def __init__(
        self,
        context: consumer.Context,
        settings: settings_module.BindingSettings,
        *,
        workers: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(context, indexes=self.INDEXES, workers=workers)
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._usage_pending: set[Key] = set()
        """Credentials with a usage update waiting in usage_queue's delay."""
        self._rollout_at: dict[Key, float] = {}
        """Bindings with a rollout due -> when the debounce lets it happen (monotonic seconds)."""
        self.usage_queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue(
            reconciling.instrumented("binding-usage", self._update_usage),
            workers=1,
            name="binding-usage",
            gate=context.active,
        )

    def start(self) -> None:
        super().start()
        self.usage_queue.start()

    def stop(self) -> None:
        super().stop()
        self.usage_queue.stop()

    # ---- inputs (no I/O: index lookups, then queue adds) --------------------------------------

    def stored(self, view: BindingView, previous: BindingView | None) -> None:
        if previous is None:
            self._queue_usage((view.namespace, view.credential_name))
        elif previous.credential_name != view.credential_name:
            self._queue_usage((view.namespace, previous.credential_name))
            self._queue_usage((view.namespace, view.credential_name))

    def removed(self, view: BindingView) -> None:
        with self._lock:
            self._rollout_at.pop(view.key, None)
        self._queue_usage((view.namespace, view.credential_name))

    def credential_changed(
        self, event_type: str | None, view: views.CredentialView, previous: views.CredentialView | None
    ) -> None:
        """A Credential changed (or went away): its bindings re-render; its usage status is checked."""
        deleted = event_type == "DELETED"
        bound = self.store.lookup_keys("credential", view.key)
        if deleted or _fingerprint(view) != _fingerprint(previous):
            for key in bound:
                self.queue.add(key)
        if not deleted:
            names_bound = sorted(name for _, name in bound)
            status = view.status
            if status.get("usedBy", []) != names_bound[:100] or status.get("usedByCount", 0) != len(names_bound):
                self._queue_usage(view.key)

    def secret_changed(self, event_type: str | None, key: Key, labels: Mapping[str, str]) -> None:
        """A binding's output Secret changed (drift, deletion, a foreign one coming or going), or a
        Credential's managed Secret (new content): queue the bindings concerned."""
        for writer in self.store.lookup_keys("secret", key):
            self.queue.add(writer)
        owner = labels.get(names.CREDENTIAL_LABEL)
        if labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY_VALUE and owner:
            for bound in self.store.lookup_keys("credential", (key[0], str(owner))):
                self.queue.add(bound)

    def share_changed(self, event_type: str | None, view: views.ShareView) -> None:
        """A CredentialShare changed: bindings of its mirrors re-check whether the share allows them."""
        for key in self.store.lookup_keys("credential-name", names.mirror_name(view.namespace, view.credential)):
            self.queue.add(key)

    def pod_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A Pod came, changed or went: the Credentials whose Secret or binding Secret it reads re-check
        their `status.usedByPods` (index lookups per referenced Secret, no scan)."""
        namespace = str((body.get("metadata") or {}).get("namespace"))
        credentials: set[Key] = set()
        for secret in admission.secrets_used_by_pod(body):
            credentials.update(self.context.cache.targeting_secret(namespace, secret))
            writers = self.store.lookup("secret", (namespace, secret))
            credentials.update((namespace, view.credential_name) for view in writers)
        for credential in credentials:
            self._queue_usage(credential)

    def _queue_usage(self, credential: Key) -> None:
        """Queue a usage update after USAGE_DELAY, once however many events ask for it meanwhile."""
        if not credential[1]:
            return
        with self._lock:
            if credential in self._usage_pending:
                return
            self._usage_pending.add(credential)
        self.usage_queue.add_after(credential, USAGE_DELAY)

    # ---- reconciling ---------------------------------------------------------------------------

    def reconcile_object(self, view: BindingView) -> Result:
        inputs = self._gather(view, from_api=False)
        if inputs is None:
            return Result.done("waiting")  # the Credential is mid-change; its next status event queues us again
        plan = binding.plan_binding(view, inputs)
        if plan.failure is not None and plan.failure.reason in binding.WITHDRAWING_REASONS:
            # Removing a Secret is decided on what the API server says, not on a cache that may
            # not hold every share or namespace yet (right after a start).
            inputs = self._gather(view, from_api=True)
            if inputs is None:
                return Result.done("waiting")
            plan = binding.plan_binding(view, inputs)
        result = self._apply(view, plan, inputs.current_secret)
        if inputs.missing_targets:
            return result.sooner(self.settings.target_recheck)
        return result

    def _gather(self, view: BindingView, *, from_api: bool) -> binding.Inputs | None:
        """The plan's inputs, or None while the Credential's status does not reflect its spec yet."""
        credential: views.CredentialView | None = None
        content = None
        denial: planning.Failure | None = None
        if binding.reference_problem(view.credential_name) is None:
            settled = self.context.reader.settled((view.namespace, view.credential_name))
            if settled is reading.UNSETTLED:
                return None
            if isinstance(settled, reading.Settled):
                credential, content = settled.view, settled.content
                if view.secret_name is not None:
                    output = release.binding_secret(view.namespace)
                    denial = self.context.reader.denial(
                        credential, output, self.context.release_policy, from_api=from_api
                    )
                    if denial is not None:
                        denial = planning.Failure(denial.reason, f"{view.where}: {denial.message}")
        missing = frozenset(
            target
            for target in view.rollout_targets
            if self.settings.rollouts
            and target.kind in fetching.WORKLOAD_KINDS
            and target.name
            and fetching.read_workload(self.context.api, target.kind, view.namespace, target.name) is None
        )
        return binding.Inputs(
            now=credentials_module.now_rfc3339(),
            keyring=self.context.keyring_now(),
            credential=credential,
            content=content,
            cred_type=self.context.types_now().get(credential.type_name) if credential else None,
            current_secret=self._output_secret(view, from_api=from_api),
            plain_output_denial=denial,
            missing_targets=missing,
            rollouts_enabled=self.settings.rollouts,
        )

    def _output_secret(self, view: BindingView, *, from_api: bool) -> views.SecretView | None:
        """The Secret spec.secret.name names: from the cache when it is ours (labelled), else as stored."""
        if view.secret_name is None:
            return None
        key = (view.namespace, view.secret_name)
        cached = None if from_api else self.context.cache.secret(key)
        if cached is not None:
            return cached
        stored = fetching.read_secret(self.context.api, *key)
        return views.SecretView.from_object(stored) if stored is not None else None

    # ---- apply -----------------------------------------------------------------------------------

    def _apply(self, view: BindingView, plan: binding.Plan, current: views.SecretView | None) -> Result:
        applier = self.context.applier
        for name in plan.delete_secrets:
            self._delete_output(view, name)
        if plan.secret is not None:
            applier.write_secret(plan.secret, current)
            logger.info("CredentialBinding %s/%s: Secret %s written", view.namespace, view.name, view.secret_name)
        status = dict(plan.status)
        events = list(plan.events)
        rolled_out, wait = self._roll_out(view, plan)
        if rolled_out:
            status.update(plan.rollout_status)
            targets = ", ".join(str(target) for target in plan.rollout)
            events.append(planning.Event("Normal", "RolledOut", f"{view.where}: rolled out {targets}"))
        patch = planning.status_patch(view.status, status)
        if patch is not None:
            view = self.write_status(view, patch)
        for event in events:
            self.event(view, event)
        if plan.failure is not None:
            logger.info("CredentialBinding %s/%s is not ready: %s", view.namespace, view.name, plan.failure.reason)
            outcome = f"failed:{plan.failure.reason}"
        else:
            outcome = "written" if plan.secret is not None else "unchanged"
        return Result.done(outcome) if wait is None else Result.after(outcome, wait)

    def _roll_out(self, view: BindingView, plan: binding.Plan) -> tuple[bool, float | None]:
        """Patch the rollout targets once the debounce allows: (patched now, seconds until it allows)."""
        if not plan.rollout:
            with self._lock:
                self._rollout_at.pop(view.key, None)
            return False, None
        now = self._clock()
        with self._lock:
            due = self._rollout_at.setdefault(view.key, now + self.settings.rollout_debounce)
        if now < due:
            return False, due - now
        annotations = {
            names.RESTARTED_AT_ANNOTATION: credentials_module.now_rfc3339(),
            names.RESTARTED_BY_ANNOTATION: f"{names.CREDENTIAL_BINDING_KIND}/{view.name}",
        }
        for target in plan.rollout:
            if writing.restart_workload(self.context.api, target.kind, view.namespace, target.name, annotations):
                metrics.API_WRITES.labels(target.kind.lower() + "s", "patch").inc()
                logger.info("CredentialBinding %s/%s rolled out %s", view.namespace, view.name, target)
        with self._lock:
            self._rollout_at.pop(view.key, None)
        return True, None

    def _delete_output(self, view: BindingView, name: str) -> None:
        """Delete Secret `name` if this binding still owns it (never a foreign one)."""
        stored = fetching.read_secret(self.context.api, view.namespace, name)
        if stored is None or views.SecretView.from_object(stored).controller_uid != view.uid:
            return
        if self.context.applier.delete_secret(view.namespace, name, uid=stored["metadata"]["uid"]):
            logger.info("CredentialBinding %s/%s: Secret %s removed", view.namespace, view.name, name)

    # ---- usage -----------------------------------------------------------------------------------

    def _update_usage(self, credential: Key) -> Result:
        """Write who uses a Credential into its status (read from the API server, not the cache)."""
        with self._lock:
            self._usage_pending.discard(credential)
        view = self.context.cache.credential(credential)
        if view is None or view.deleting:
            return Result.done("gone")
        desired = binding.usage_status(*usage(self.context.api, *credential, view.secret_name))
        patch = {field: value for field, value in desired.items() if view.status.get(field) != value}
        never_used = all(field not in view.status for field in desired)
        if not patch or (never_used and not desired["usedByCount"] and not desired["usedByPods"]):
            return Result.done("unchanged")
        try:
            # Written through, so the Credential's own reconcile plans from this version (no conflict).
            self.context.applier.patch_credential_status(view, patch)
        except errors.ApiError as error:
            if error.not_found or error.namespace_terminating:
                return Result.done("gone")
            if error.conflict:
                return Result.after("conflict", USAGE_DELAY)
            raise
        return Result.done("written")


def usage(api: connecting.ApiClient, namespace: str, credential: str, secret_name: str) -> tuple[list[str], list[str]]:
    """Who uses a Credential, asked of the API server (the in-use check before a delete, and usage status):
    the bindings that render it, and the Pods that read its Secret or those bindings' Secrets."""
    bound = [
        BindingView.from_object(item)
        for item in fetching.list_credential_bindings(api, namespace)
        if (item.get("spec") or {}).get("credential") == credential
    ]
    secrets = {secret_name} | {view.secret_name for view in bound if view.secret_name}
    pods = admission.pods_using_secrets(fetching.list_pods(api, namespace), secrets)
    return sorted(view.name for view in bound), pods
