"""The OAuth2 token refresh: keeps the access tokens of OAuth2 Credentials fresh, as one consumer of Credentials.

Gather → plan (`core.oauth2.planning`) → send (`credbridge.oauth2client`) → apply, per Credential:

- gather: the Credential's type (only types with `spec.oauth2`; mirrors follow their source), where
  its tokens live (`core.oauth2.store`: the Secret its `valueFrom` names), that Secret as stored now
  (read from the API server every time: a stale copy would refresh twice), the release rule's
  decision for "an OAuth2 token endpoint" (the client secret and refresh token leave the cluster),
  and the client configuration from the Credential's settled plaintext (`reading.Reader.settled`);
- plan: when the next token request is due; a time in the future becomes the queue's requeue
  (`Result.after`), so the refresh runs at the planned time, not at a poll;
- send: through the token client with the egress policy (`oauth2client.egress`);
- apply, in this order: the token keys of the token Secret (a rotated refresh token exists nowhere
  else, so it is written first, with the resourceVersion it was read at), then `status.oauth2` and
  `OAuth2Ready` merged into the Credential's conditions with the resourceVersion (a 409 plans
  again), then an Event when the reason changed. The Credential's own reconcile then encrypts the
  new tokens, and bindings, workload reads and FlowiseTargets get them from there.

One writer per Credential. Within a process the work queue never runs a key twice at once. Across
replicas (`--peering`), kopf pauses the watches of every replica but the active one, but a replica
that was active keeps its timers: so before sending, a replica claims the request in
`status.oauth2.claim` with the Credential's resourceVersion, and the one that loses the race (409)
reads the claim and waits until it runs out (the winner's new tokens then move the schedule). A
standalone operator is the only writer by the chart's contract and claims nothing.

What a request returned is kept in memory until its status is written: a Secret write or a status
patch that failed is retried with it, never with a second request (a rotated refresh token would
be lost, and a rotating provider that saw the old one twice revokes the grant).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import logging
import os
import pathlib
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from credbridge.core import names, planning, redaction, registry, release, views
from credbridge.core.oauth2 import outcomes, provider, store, tokens
from credbridge.core.oauth2 import planning as oauth2_planning
from credbridge.oauth2client import client as token_client
from credbridge.oauth2client import egress as oauth2_egress
from credbridge.operator import consumer, metrics, reading
from credbridge.operator import settings as settings_module
from credbridge.probing import network as probing_network

logger = logging.getLogger(__name__)

Key = views.Key
Result = consumer.Result
Clock = Callable[[], datetime.datetime]

OUTPUT = "an OAuth2 token endpoint"
"""What receives the Credential's values, for the release rule and its messages."""
UNSETTLED_RECHECK = 5.0
"""Seconds before looking again at a Credential whose status does not describe its spec yet."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def replica_identity() -> str:
    """Who this operator process is in a claim: host name (the Pod's name), process id and a random part."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


@dataclasses.dataclass(frozen=True)
class _Pending:
    """A token request's outcome whose status is not written yet."""

    outcome: outcomes.Outcome
    used_refresh_token: redaction.Redacted | None = dataclasses.field(repr=False)
    """The refresh token the request was sent with."""

    def outdated_by(self, stored: tokens.StoredTokens) -> bool:
        """The token Secret now holds a refresh token that is neither the one used nor the one received: someone
        authorized again meanwhile, and those tokens win."""
        if not isinstance(self.outcome, outcomes.Refreshed) or stored.refresh_token is None:
            return False
        return stored.refresh_token not in (self.used_refresh_token, self.outcome.tokens.refresh_token)


@dataclasses.dataclass(frozen=True)
class _Gathered:
    """What one look at an OAuth2 Credential found."""

    situation: oauth2_planning.Situation
    token_store: store.TokenStore | None = None
    secret: views.SecretView | None = None
    config: provider.ProviderConfig | None = None


def _fingerprint(view: views.CredentialView) -> tuple[Any, ...]:
    """What of a Credential the refresh depends on besides its token Secret: not its status.oauth2 (its own)."""
    ready = view.ready_condition or {}
    return (
        view.generation,
        view.status.get("observedGeneration"),
        view.status.get("updatedDate"),
        ready.get("status"),
        ready.get("reason"),
    )


def _timestamp(moment: datetime.datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


class OAuth2Refresher(consumer.CredentialConsumer):
    """Refreshes the access tokens of OAuth2 Credentials. Thread-safe: events queue, workers reconcile."""

    name = "oauth2"

    def __init__(
        self,
        context: consumer.Context,
        settings: settings_module.OAuth2Settings,
        *,
        clock: Clock = _utcnow,
        holder: str | None = None,
        network: probing_network.Network = probing_network.SYSTEM_NETWORK,
    ) -> None:
        super().__init__(
            context,
            workers=max(1, settings.workers),
            resync_seconds=settings.resync_seconds,
            resync_per_second=settings.resync_per_second,
        )
        self.settings = settings
        self.policy = settings.refresh
        self._clock = clock
        ca_pem = pathlib.Path(settings.ca_file).read_text() if settings.ca_file else None
        self.client = token_client.TokenClient(
            settings.client,
            ca_pem=ca_pem,
            clock=clock,
            egress=oauth2_egress.Egress(settings.egress_policy(), network.resolve, network.connect),
        )
        self.claims = context.settings.peering is not None
        """Claim each request in status first: several replicas may plan it (`--peering`)."""
        self.holder = holder or replica_identity()
        self._lock = threading.Lock()
        self._pending: dict[Key, _Pending] = {}

    def start(self) -> None:
        super().start()
        # The cache was primed before the consumers started: look at every OAuth2 Credential once,
        # spread out; from then on events, planned refreshes and the resync bring them back.
        spacing = 1.0 / max(self.settings.resync_per_second, 0.001)
        for index, key in enumerate(self.resync_keys()):
            self.queue.add_after(key, index * spacing)

    # ---- inputs (no I/O) ------------------------------------------------------------------------

    def _oauth2_type(self, type_name: str) -> registry.CredentialTypeSpec | None:
        spec = self.context.types_now().get(type_name)
        return spec if spec is not None and spec.oauth2 is not None else None

    def resync_keys(self) -> list[Key]:
        types = self.context.types_now()
        keys: list[Key] = []
        for name in {*types.builtins, *types.custom}:
            if self._oauth2_type(name) is not None:
                keys.extend(self.context.cache.of_type(name))
        return sorted(keys)

    def wants(self, view: views.CredentialView, previous: views.CredentialView | None) -> bool:
        if self._oauth2_type(view.type_name) is None or view.shared_from is not None:
            return False
        return previous is None or _fingerprint(view) != _fingerprint(previous)

    def secret_changed(self, event_type: str | None, key: Key, labels: Mapping[str, str]) -> None:
        """A token Secret changed (a new authorization, an edit, the refresh's own write): look again."""
        for credential in self.context.cache.reading_secret(*key):
            view = self.context.cache.credential(credential)
            if view is not None and self._oauth2_type(view.type_name) is not None:
                self.queue.add(credential)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._pending.pop(key, None)
        metrics.OAUTH2.forget_credential(key)

    # ---- one look ---------------------------------------------------------------------------------

    def reconcile_credential(self, view: views.CredentialView) -> Result:
        cred_type = self._oauth2_type(view.type_name)
        if cred_type is None or cred_type.oauth2 is None:
            metrics.OAUTH2.forget_credential(view.key)
            return Result.done("skipped")
        if view.shared_from is not None:
            return Result.done("mirror")  # its tokens come from its source, through the share
        gathered = self._gather(view, cred_type)
        if gathered is None:
            return Result.after("waiting", UNSETTLED_RECHECK)
        situation = gathered.situation
        now = self._clock()
        outcome = self._pending_outcome(view.key, situation)
        if outcome is None:
            claimed = oauth2_planning.Memory.from_status(view.status).foreign_claim(self.holder, now)
            if claimed is not None:
                return Result.after("claimed", (claimed - now).total_seconds())
            due = oauth2_planning.next_attempt(situation, now, self.policy)
            if due is not None and due <= now:
                assert gathered.config is not None  # no problem, so the configuration was read
                if self.claims:
                    seconds = self.settings.client.connect_timeout + self.settings.client.request_timeout
                    claimed_view = self.write_status(
                        view,
                        oauth2_planning.claim_patch(situation, now, seconds + self.settings.claim_margin),
                    )
                    situation = dataclasses.replace(situation, credential=claimed_view)
                outcome = self._send(situation, gathered.config)
                with self._lock:
                    self._pending[view.key] = _Pending(outcome, situation.stored.refresh_token)
        return self._apply(situation, gathered, outcome, now)

    def _gather(self, view: views.CredentialView, cred_type: registry.CredentialTypeSpec) -> _Gathered | None:
        """The Situation and what applying needs, or None while the Credential's status does not describe its spec."""
        assert cred_type.oauth2 is not None
        where = f"Credential {view.namespace}/{view.name}"
        situation = oauth2_planning.Situation(
            view, cred_type.oauth2.grant, tokens.StoredTokens.from_fields({}), holder=self.holder
        )

        def problem(message: str, reason: str = oauth2_planning.NOT_CONFIGURED) -> _Gathered:
            return _Gathered(dataclasses.replace(situation, problem=message, problem_reason=reason))

        try:
            token_store = store.token_store(view, cred_type)
        except store.TokenStoreError as error:
            return problem(str(error))
        secret = self.context.reader.secret(view.namespace, token_store.secret_name)
        situation = dataclasses.replace(
            situation,
            stored=tokens.StoredTokens.from_fields(token_store.fields_from(secret.data) if secret else {}),
            store_version=secret.resource_version if secret is not None else "",
        )
        found = _Gathered(situation, token_store, secret)
        denial = self.context.reader.denial(view, release.external(OUTPUT, view.namespace), self.context.release_policy)
        if denial is not None:
            return dataclasses.replace(
                found,
                situation=dataclasses.replace(
                    situation,
                    problem=f"{where}: {denial.message}",
                    problem_reason=oauth2_planning.NOT_RELEASED,
                ),
            )
        settled = self.context.reader.settled(view.key)
        if settled is reading.UNSETTLED:
            return None
        if not isinstance(settled, reading.Settled):
            return dataclasses.replace(
                found, situation=dataclasses.replace(situation, problem=f"{where} does not exist any more")
            )
        if isinstance(settled.content, planning.Failure):
            message = f"{where} is not usable, so its client configuration cannot be read: {settled.content.message}"
            return dataclasses.replace(found, situation=dataclasses.replace(situation, problem=message))
        try:
            config = provider.config_from_fields(
                cred_type, settled.content, where=where, allow_http=self.settings.client.allow_http
            )
        except provider.ConfigurationError as error:
            return dataclasses.replace(found, situation=dataclasses.replace(situation, problem=str(error)))
        return dataclasses.replace(found, config=config)

    def _pending_outcome(self, key: Key, situation: oauth2_planning.Situation) -> outcomes.Outcome | None:
        with self._lock:
            pending = self._pending.get(key)
            if pending is not None and pending.outdated_by(situation.stored):
                logger.info(
                    "Credential %s/%s was authorized again while its refresh was being stored: the new tokens win",
                    *key,
                )
                del self._pending[key]
                pending = None
        return pending.outcome if pending is not None else None

    def _send(self, situation: oauth2_planning.Situation, config: provider.ProviderConfig) -> outcomes.Outcome:
        """One token request: a refresh, or the client-credentials grant."""
        view = situation.credential
        refresh_token = situation.stored.refresh_token
        if config.grant == "client_credentials":
            outcome = self.client.client_credentials(config)
        elif refresh_token is not None:
            outcome = self.client.refresh(config, refresh_token)
        else:  # next_attempt plans nothing without a refresh token for this grant
            raise AssertionError("a refresh was planned without a refresh token")
        if isinstance(outcome, outcomes.Refreshed):
            label = "refreshed"
            logger.info(
                "Credential %s/%s: new access token from %s%s",
                view.namespace,
                view.name,
                config.token_host,
                " (and a rotated refresh token)" if outcome.tokens.refresh_token_rotated else "",
            )
        elif isinstance(outcome, outcomes.ReauthorizationRequired):
            label = "reauthorization_required"
            logger.warning("Credential %s/%s: %s", view.namespace, view.name, outcome.detail)
        else:
            label = "failed"
            logger.warning("Credential %s/%s: token request failed: %s", view.namespace, view.name, outcome.detail)
        metrics.OAUTH2_TOKEN_REQUESTS.labels(label).inc()
        return outcome

    # ---- apply ------------------------------------------------------------------------------------

    def _apply(
        self,
        situation: oauth2_planning.Situation,
        gathered: _Gathered,
        outcome: outcomes.Outcome | None,
        now: datetime.datetime,
    ) -> Result:
        view = situation.credential
        plan = oauth2_planning.plan(situation, outcome, now, self.policy)
        wrote_tokens = False
        if plan.token_fields:
            assert gathered.token_store is not None
            wrote_tokens = self._write_tokens(view, gathered.token_store, gathered.secret, plan.token_fields)
        patch = plan.status_patch(view.status)
        if patch is not None:
            view = self.write_status(view, patch)
        with self._lock:
            self._pending.pop(view.key, None)
        if plan.event is not None:
            self.event(view, plan.event)
        reason = str(plan.condition.get("reason"))
        expires = situation.stored.expires_at
        if isinstance(outcome, outcomes.Refreshed):
            expires = outcome.tokens.expires_at
        metrics.OAUTH2.set_credential(view.key, view.type_name, reason=reason, expires_at=_timestamp(expires))
        if isinstance(outcome, outcomes.Refreshed):
            label = "refreshed"
        elif outcome is not None:
            label = f"failed:{reason}"
        else:
            label = "written" if patch is not None or wrote_tokens else "unchanged"
        if plan.requeue_after is None:
            return Result.done(label)
        return Result.after(label, plan.requeue_after)

    def _write_tokens(
        self,
        view: views.CredentialView,
        token_store: store.TokenStore,
        secret: views.SecretView | None,
        fields: Mapping[str, redaction.Redacted],
    ) -> bool:
        """Writes the token keys the Credential names into its token Secret; False when it holds them already."""
        wanted = token_store.secret_data(fields)
        current = secret.data if secret is not None else {}
        if all(current.get(key) == value.reveal() for key, value in wanted.items()):
            return False
        data = {key: base64.b64encode(value.reveal().encode("utf-8")).decode("ascii") for key, value in wanted.items()}
        applier = self.context.applier
        if secret is None:
            applier.write_secret(_token_secret(view, token_store.secret_name, data), None)
            logger.info("Credential %s/%s: created token Secret %s", view.namespace, view.name, token_store.secret_name)
        else:
            applier.patch_secret_data(
                view.namespace, token_store.secret_name, data, resource_version=secret.resource_version
            )
            logger.info(
                "Credential %s/%s: token Secret %s updated (%s)",
                view.namespace,
                view.name,
                token_store.secret_name,
                ", ".join(sorted(wanted)),
            )
        return True


def _token_secret(view: views.CredentialView, name: str, data: dict[str, str]) -> dict[str, Any]:
    """A token Secret the refresh creates (client credentials: nobody authorized first). Owned, not controlled,
    by the Credential: deleting the Credential removes the tokens with it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": view.namespace,
            "annotations": {store.TOKENS_ANNOTATION: view.name},
            "ownerReferences": [
                {"apiVersion": names.API_VERSION, "kind": names.CREDENTIAL_KIND, "name": view.name, "uid": view.uid}
            ],
        },
        "data": data,
    }
