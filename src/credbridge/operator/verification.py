"""The verification consumer: checks Credentials against their services, and reports expiry.

`Ready` says a Credential's Secret opens; this consumer says whether the credential works at the
vendor (`Verified`) and when it runs out (`ExpiringSoon`, `Expired`, `status.expiresAt`), on the
`CredentialConsumer` base (keyed by Credential, conditions merged into the status it planned from,
written with its resourceVersion). Each pass is gather → core plan → apply:

- when: `core.verifying.next_check` decides from the status alone — a content change (debounced),
  a `credbridge verify` request, the periodic interval with a per-Credential jitter — so a
  restarted operator writes nothing for Credentials that are not due. A pass that is not due
  only keeps the expiry conditions current and comes back when the next check or expiry
  transition is due (`Result.after`).
- whether values may go out: the one release rule (`reading.Reader.denial` with
  `release.external(VERIFICATION_PROBE, namespace)`): a refusal is `Verified=Unknown/NotReleased`
  and nothing is opened or sent. The plaintext comes only from `reading.Reader.settled`.
- the check: `core.verification.build_probe`, then `credbridge.probing.probe` — the egress policy,
  one lookup, a pinned connection, bounded reads. Probes block; they run on this consumer's own
  worker threads, never on kopf's event loop. A global `Pacer` shared by those workers starts at
  most `--verification-rate` checks per second however many Credentials are due: a key that
  must wait is given a slot and comes back then, so no worker sleeps on the rate, and it takes
  its turn before its Secret is opened. A check a user asked for does not wait its turn.
- what it saw: a keyed digest of the content of each check, in memory only, so a Secret
  rewritten with the same content (a key rotation re-encrypts every one) is not checked again.
- the result: `core.verification.plan_verification` and `core.expiry.plan_expiry`, merged with
  `core.verifying.status_patch`; Events when an outcome or an expiry state changes; lint findings
  about the resolved values (`core.lint`) as one Warning Event when the content is new; the
  per-Credential gauges of `metrics.VERIFICATION` (forgotten when the Credential goes).

A mirror is verified once, at its source: it shows its source's outcome and expiry
(`core.verifying.plan_mirror`) and sends nothing itself.
"""

from __future__ import annotations

import datetime
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from credbridge import probing
from credbridge.core import (
    egress,
    expiry,
    lint,
    names,
    planning,
    ratelimit,
    redaction,
    release,
    verification,
    verifying,
    views,
)
from credbridge.kube import errors
from credbridge.operator import consumer, metrics, reading
from credbridge.operator import settings as settings_module
from credbridge.probing import network

logger = logging.getLogger(__name__)

Key = views.Key
Result = consumer.Result
Outcome = verification.Outcome
Prober = Callable[..., verification.ProbeResult]

WRITE_ATTEMPTS = 3
"""Status writes tried for one finished check when they meet a concurrent writer (409): the check is not
repeated for a conflict, its result is planned again onto the newer status."""


def _fingerprint(view: views.CredentialView) -> tuple[Any, ...]:
    """What of a Credential decides whether a pass is needed: content, generation, readiness, a request."""
    ready = view.ready_condition or {}
    return (
        view.generation,
        view.status.get("observedGeneration"),
        view.status.get("updatedDate"),
        ready.get("status"),
        view.annotations.get(verification.VERIFY_REQUESTED_ANNOTATION),
    )


def _shown_to_mirrors(view: views.CredentialView) -> tuple[Any, ...]:
    """What of a source its mirrors show."""
    verified = next((c for c in view.status.get("conditions") or () if c.get("type") == verification.VERIFIED), None)
    return (
        None if verified is None else (verified.get("status"), verified.get("reason")),
        view.status.get("lastVerifiedTime"),
        view.status.get("expiresAt"),
        view.spec.get("remindBefore"),
    )


def _timestamp(text: object) -> float | None:
    parsed = verification.parse_time(text)
    return parsed.timestamp() if parsed is not None else None


class VerificationConsumer(consumer.CredentialConsumer):
    """Checks Credentials (thread-safe: events come from kopf's loop, passes run on the queue's workers)."""

    name = "verification"

    def __init__(
        self,
        context: consumer.Context,
        settings: settings_module.VerificationSettings,
        *,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        monotonic: Callable[[], float] = time.monotonic,
        prober: Prober = probing.probe,
    ) -> None:
        super().__init__(context, workers=max(1, settings.workers))
        self.settings = settings
        self.policy = settings.egress_policy()
        self.network = network.with_static_hosts(settings.static_hosts())
        self.tls = probing.system_tls_context(settings.ca_file)
        self.limits = settings.probe_limits()
        self.schedule = verifying.Schedule(settings.interval, settings.jitter, settings.debounce)
        self._clock = clock
        self._monotonic = monotonic
        self._prober = prober
        self._lock = threading.Lock()
        self._pacer = ratelimit.Pacer(settings.per_second)
        self._digest_key = secrets.token_bytes(32)
        self._seen: dict[Key, tuple[str | None, bytes]] = {}
        """Per Credential: its managed Secret's marker and a keyed digest of the content its last check saw."""

    def start(self) -> None:
        super().start()
        # A restarted operator hears nothing new of the Credentials its cache was primed with: look at
        # each once (no write unless something is due), which also fills the gauges.
        for key in self.context.cache.credential_keys():
            self.queue.add(key)

    # ---- inputs (no I/O: comparisons, index lookups, queue adds) -------------------------------

    def wants(self, view: views.CredentialView, previous: views.CredentialView | None) -> bool:
        return previous is None or _fingerprint(view) != _fingerprint(previous)

    def credential_changed(
        self, event_type: str | None, view: views.CredentialView, previous: views.CredentialView | None
    ) -> None:
        super().credential_changed(event_type, view, previous)
        if view.shared_from is None and previous is not None and _shown_to_mirrors(view) != _shown_to_mirrors(previous):
            for mirror in self.context.cache.mirrors_of(view.key):
                self.queue.add(mirror.key)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._pacer.forget(key)
            self._seen.pop(key, None)
        metrics.VERIFICATION.forget_credential(key)

    # ---- one pass ------------------------------------------------------------------------------

    def reconcile_credential(self, view: views.CredentialView) -> Result:
        if not view.status or int(view.status.get("observedGeneration") or 0) != view.generation:
            return Result.done("waiting")  # its reconciler's status write brings it back
        if view.shared_from is not None:
            return self._reconcile_mirror(view)
        spec = self.context.types_now().get(view.type_name)
        if spec is None:
            return Result.done("unknown-type")  # Ready=False says so; nothing to check against
        self._record(view)  # the gauges show the status as it is, also while a check waits for its turn
        if not view.ready:
            # Nothing to verify until it is Ready: the Verified condition (if any) keeps describing the content its
            # Secret still holds, and the expiry stays current.
            written = self._write(view, None, None, [])
            return written if isinstance(written, Result) else Result.done("not-ready")
        now = self._clock()
        output = release.external(release.VERIFICATION_PROBE, view.namespace)
        denial = self.context.reader.denial(view, output, self.context.release_policy)
        requested = verification.verify_requested(view.annotations, view.status)
        due = self._due(view, requested=requested, has_check=spec.verify is not None, released=denial is None, now=now)
        content: redaction.SecretFields | None = None
        marker = self._marker(view)  # read before the content: a later change shows as a new marker
        if due.now(now) and due.why == verifying.CHANGED and denial is None and view.key in self._seen:
            # Its Secret was written since the last check: new content, or the same re-encrypted (a key rotation).
            opened = self._open(view)
            if not isinstance(opened, redaction.SecretFields):
                return opened
            content = opened
            if self._remember_if_same(view.key, marker, content):
                due = self._due(view, requested=requested, has_check=spec.verify is not None, released=True, now=now)
        if not due.now(now):
            return self._apply(view, None, requested, due, events=[])
        if denial is not None:
            return self._apply(view, verification.ProbeResult(Outcome.NOT_RELEASED, denial.message), requested, due)
        if spec.verify is None:
            result = verification.build_probe(spec, {})
            assert isinstance(result, verification.ProbeResult)
            return self._apply(view, result, requested, due)
        # Its turn under the global rate comes before its Secret is opened: a thousand Credentials due at once
        # wait without a thousand decryptions (a check that then sends nothing has used a turn, no more).
        wait = self._take_turn(view.key, urgent=requested is not None)
        if wait > 0:
            return Result.after("paced", wait)
        if content is None:
            opened = self._open(view)
            if not isinstance(opened, redaction.SecretFields):
                return opened
            content = opened
        lint_event = None
        if due.why in (verifying.NEW, verifying.CHANGED):
            where = f"Credential {view.namespace}/{view.name}"
            lint_event = verifying.lint_event(lint.lint_values(spec, content), where)
        events = [lint_event] if lint_event else []
        request = verification.build_probe(spec, content)
        if isinstance(request, verification.ProbeResult):
            self._remember(view.key, marker, content)
            return self._apply(view, request, requested, due, events=events)
        refusal = egress.check_destination(
            scheme=request.scheme,
            host=request.host,
            host_from_field=request.host_from_field,
            type_name=request.type_name,
            policy=self.policy,
        )
        if refusal is not None:
            result = verification.ProbeResult(Outcome.BLOCKED, refusal.message)
        else:
            result = self._prober(request, self.policy, limits=self.limits, net=self.network, tls=self.tls)
            metrics.VERIFICATION_CHECKS.labels(result.outcome.value).inc()
            logger.debug("Credential %s/%s checked (%s): %s", view.namespace, view.name, due.why, result.outcome.value)
        self._remember(view.key, marker, content)
        return self._apply(view, result, requested, due, events=events)

    def _due(
        self,
        view: views.CredentialView,
        *,
        requested: str | None,
        has_check: bool,
        released: bool,
        now: datetime.datetime,
    ) -> verifying.Due:
        marker = self._marker(view)
        with self._lock:
            seen = self._seen.get(view.key)
        return verifying.next_check(
            view.status,
            uid=view.uid,
            requested=requested,
            has_check=has_check,
            released=released,
            now=now,
            schedule=self.schedule,
            content_unchanged=seen is not None and marker is not None and seen[0] == marker,
        )

    def _marker(self, view: views.CredentialView) -> str | None:
        """What tells one write of the managed Secret from another: its content HMAC (it changes with the content
        and with the key; a Secret rewritten with both the same, as drift is repaired, keeps it)."""
        secret = self.context.cache.secret((view.namespace, view.secret_name))
        return None if secret is None else secret.annotations.get(names.CONTENT_HMAC_ANNOTATION)

    def _open(self, view: views.CredentialView) -> redaction.SecretFields | Result:
        """The settled plaintext of `view` (the one reader), or the Result that ends this pass."""
        settled = self.context.reader.settled(view.key)
        if settled is None:
            return Result.done("gone")
        if settled is reading.UNSETTLED:
            return Result.done("waiting")
        assert isinstance(settled, reading.Settled)
        if settled.view.resource_version != view.resource_version:
            return Result.after("changed", 0.0)  # plan again from the newer version
        if isinstance(settled.content, planning.Failure):
            # Its Secret does not open right now: the Verified condition keeps describing the content it held.
            written = self._write(view, None, None, [])
            return written if isinstance(written, Result) else Result.done("not-ready")
        return settled.content

    def _remember(self, key: Key, marker: str | None, content: redaction.SecretFields) -> None:
        """Keeps (in memory only) a keyed digest of the content a check saw, and the Secret's marker then."""
        digest = verifying.content_digest(self._digest_key, content)
        with self._lock:
            self._seen[key] = (marker, digest)

    def _remember_if_same(self, key: Key, marker: str | None, content: redaction.SecretFields) -> bool:
        """True (and the new marker remembered) when `content` is what the last check saw."""
        digest = verifying.content_digest(self._digest_key, content)
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or not hmac.compare_digest(seen[1], digest):
                return False
            self._seen[key] = (marker, digest)
        return True

    def _take_turn(self, key: Key, *, urgent: bool) -> float:
        """0.0 when this check may start now under the global rate; else seconds until its slot."""
        now = self._monotonic()
        with self._lock:
            if urgent:
                self._pacer.forget(key)
                self._pacer.start_now(now)
                wait = 0.0
            else:
                wait = self._pacer.take(key, now)
            metrics.VERIFICATION_WAITING.set(self._pacer.waiting())
        return wait

    # ---- apply ---------------------------------------------------------------------------------

    def _apply(
        self,
        view: views.CredentialView,
        result: verification.ProbeResult | None,
        requested: str | None,
        due: verifying.Due,
        events: list[planning.Event] | None = None,
    ) -> Result:
        """Writes a finished check (`result`, None when none ran) and the expiry, and says when to come back."""
        written = self._write(view, result, requested, events or [])
        if isinstance(written, Result):
            return written
        view, next_transition = written
        outcome = f"checked:{result.outcome.value}" if result is not None else "unchanged"
        now = self._clock()
        moments = [next_transition]
        if due.why is not None:
            moments.append(self._next_due(view, now).at)
        soonest = min((moment for moment in moments if moment is not None), default=None)
        if soonest is None:
            return Result.done(outcome)
        return Result.after(outcome, max(1.0, (soonest - now).total_seconds()))

    def _write(
        self,
        view: views.CredentialView,
        result: verification.ProbeResult | None,
        requested: str | None,
        events: list[planning.Event],
    ) -> tuple[views.CredentialView, datetime.datetime | None] | Result:
        """Writes the status a pass planned, posts its Events and updates the gauges; returns the Credential as
        stored and the next expiry transition (or a Result when the pass must end here)."""
        posted = list(events)
        for _ in range(WRITE_ATTEMPTS):
            now = self._clock()
            checked = None
            if result is not None:
                checked = verification.plan_verification(
                    view.status, result, now=now, generation=view.generation, request=requested
                )
            discovered = checked.status["discoveredExpiresAt"] if checked else view.status.get("discoveredExpiresAt")
            expiry_plan = expiry.plan_expiry(
                spec=view.spec,
                previous=view.status,
                discovered_expires_at=discovered,
                now=now,
                generation=view.generation,
                where=f"Credential {view.namespace}/{view.name}",
            )
            patch = verifying.status_patch(view.status, checked=checked, expiry_plan=expiry_plan)
            if patch is None:
                break
            try:
                view = self.write_status(view, patch)
            except errors.ApiError as error:
                if not error.conflict or result is None:
                    raise  # the base plans again after a conflict: nothing was sent
                fresh = self.context.reader.credential(view.key, from_api=True)
                if fresh is None:
                    return Result.done("gone")
                self.context.cache.put_credential(fresh)
                if (fresh.generation, fresh.status.get("updatedDate")) != (
                    view.generation,
                    view.status.get("updatedDate"),
                ):
                    return Result.after("conflict", 0.0)  # the content moved on: this result is stale
                view = fresh
                continue
            if checked is not None and checked.event is not None:
                posted.append(checked.event)
            posted.extend(expiry_plan.events)
            break
        else:
            return Result.retry_later("conflict")
        for event in posted:
            self.event(view, event)
        self._record(view)
        return view, expiry_plan.next_transition

    def _next_due(self, view: views.CredentialView, now: datetime.datetime) -> verifying.Due:
        """When the next check of `view` (as stored after a pass) is due."""
        spec = self.context.types_now().get(view.type_name)
        output = release.external(release.VERIFICATION_PROBE, view.namespace)
        return self._due(
            view,
            requested=None,
            has_check=spec is not None and spec.verify is not None,
            released=self.context.reader.denial(view, output, self.context.release_policy) is None,
            now=now,
        )

    def _record(self, view: views.CredentialView) -> None:
        status = view.status
        outcome = verifying.last_outcome(status)
        metrics.VERIFICATION.set_credential(
            view.key,
            view.type_name,
            outcome=outcome.value if outcome is not None else None,
            expires_at=_timestamp(status.get("expiresAt")),
            last_verified=_timestamp(status.get("lastVerifiedTime")),
            last_rotated=_timestamp(status.get("updatedDate")),
        )

    # ---- mirrors ---------------------------------------------------------------------------------

    def _reconcile_mirror(self, view: views.CredentialView) -> Result:
        """A mirror shows its source's outcome and expiry; it is never checked itself."""
        assert view.shared_from is not None
        source = self.context.cache.credential(view.shared_from)
        if source is None:
            return Result.done("waiting")  # the share controller removes mirrors of a deleted source
        now = self._clock()
        plan = verifying.plan_mirror(
            view.status,
            source="/".join(view.shared_from),
            source_spec=source.spec,
            source_status=source.status,
            now=now,
            generation=view.generation,
            where=f"Credential {view.namespace}/{view.name}",
        )
        if plan.patch is not None:
            view = self.write_status(view, plan.patch)
        for event in plan.events:
            self.event(view, event)
        outcome = "written" if plan.patch is not None else "unchanged"
        if plan.next_transition is None:
            return Result.done(outcome)
        return Result.after(outcome, max(1.0, (plan.next_transition - now).total_seconds()))
