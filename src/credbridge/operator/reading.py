"""The one reader of Credentials' plaintext, and the gatherer of what the release rule judges.

Every consumer — binding Secrets, workload reads, each external sync, mirrors — reads a
Credential's values here and nowhere else, with one policy:
- Credentials and managed Secrets come from the watch cache first. The API server is asked when
  the cache lacks them (a moment after a start; a standby replica whose watches are paused) and,
  for a managed Secret, when the cached copy does not open (the watch may not have delivered the
  newest one yet). What is read is put back into the cache when it is newer.
- `settled` releases content only when it is the content of the spec the release rule judges:
  the Credential is Ready for its current generation, and it did not change while its Secret was
  read. A Credential in the middle of a change is `UNSETTLED`; its next status event brings the
  consumer back.
- `denial` gathers the facts of `core.release` (a mirror's source, the shares of that source, the
  consumer's namespace) and asks the rule. A source that cannot be found is passed as missing,
  and the rule refuses.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

from credbridge.core import envelope, keyring, planning, redaction, release, views
from credbridge.kube import connecting, fetching
from credbridge.operator import cache as cache_module

Key = views.Key


class Unsettled(enum.Enum):
    """The Credential is changing: its status does not describe its spec yet."""

    UNSETTLED = "unsettled"


UNSETTLED = Unsettled.UNSETTLED


@dataclasses.dataclass(frozen=True)
class Settled:
    """A Credential whose status describes its spec, and its plaintext or why there is none."""

    view: views.CredentialView
    content: redaction.SecretFields | planning.Failure = dataclasses.field(repr=False)


class Reader:
    """Reads Credentials and opens their managed Secrets: the cache first, the API server when needed."""

    def __init__(
        self,
        api: connecting.ApiClient,
        cache: cache_module.Cache,
        keyring_now: Callable[[], keyring.Keyring | None],
    ) -> None:
        """`api` may be a client of its own (the read endpoint keeps its connection pool apart)."""
        self.api = api
        self.cache = cache
        self._keyring_now = keyring_now

    # ---- objects -----------------------------------------------------------------------------

    def credential(self, key: Key, *, from_api: bool = False) -> views.CredentialView | None:
        """The Credential: from the cache, or as stored when the cache lacks it (or `from_api`)."""
        cached = None if from_api else self.cache.credential(key)
        if cached is not None:
            return cached
        stored = fetching.read_credential(self.api, *key)
        return views.CredentialView.from_object(stored) if stored is not None else None

    def secret(self, namespace: str, name: str) -> views.SecretView | None:
        """A Secret as stored (for Secrets outside the cache: those a Credential reads with valueFrom)."""
        stored = fetching.read_secret(self.api, namespace, name)
        return views.SecretView.from_object(stored) if stored is not None else None

    def managed_secret(self, view: views.CredentialView, *, from_api: bool = False) -> views.SecretView | None:
        """The Credential's managed Secret: from the cache, or as stored (cached when it is ours)."""
        key = (view.namespace, view.secret_name)
        cached = None if from_api else self.cache.secret(key)
        if cached is not None:
            return cached
        stored = fetching.read_secret(self.api, *key)
        if stored is None:
            return None
        secret = views.SecretView.from_object(stored)
        if secret.managed:
            self.cache.put_secret(secret)
        return secret

    # ---- plaintext ---------------------------------------------------------------------------

    def open(self, view: views.CredentialView) -> redaction.SecretFields | planning.Failure:
        """The plaintext of a Credential's managed Secret, or why it cannot be had (never a value)."""
        where = f"the Secret {view.secret_name} of Credential {view.namespace}/{view.name}"
        ring = self._keyring_now()
        if ring is None:
            return planning.Failure("KeyUnavailable", "the operator has no usable keyring; see the operator log")
        cached = self.cache.secret((view.namespace, view.secret_name))
        if cached is not None:
            try:
                return planning.open_managed_secret(view, cached, ring)
            except envelope.EnvelopeError:
                pass  # the watch may not have delivered the newest version yet: read it
        stored = self.managed_secret(view, from_api=True)
        if stored is None:
            return planning.Failure("SecretUnavailable", f"{where} does not exist (yet)")
        try:
            return planning.open_managed_secret(view, stored, ring)
        except envelope.EnvelopeError:
            return planning.Failure(
                "SecretUnreadable", f"{where} could not be opened; the operator rewrites it on its next reconcile"
            )

    def settled(self, key: Key) -> Settled | Unsettled | None:
        """The Credential with its plaintext once its status describes its spec; None when it does not exist.

        The Credential is read from the cache before and after its Secret: only when both reads
        see the same version, and its status says it reconciled that generation, does the Secret
        hold the content of the spec the release rule judges.
        """
        first = self.cache.credential(key)
        if first is None:
            if self.credential(key, from_api=True) is None:
                return None
            return UNSETTLED  # its watch event is on the way
        where = f"Credential {key[0]}/{key[1]}"
        if first.deleting:
            return None
        if not first.status:
            return Settled(first, planning.Failure("NotReconciled", f"{where} has not been reconciled yet"))
        if int(first.status.get("observedGeneration") or 0) != first.generation:
            return UNSETTLED
        if not first.ready:
            reason = str((first.ready_condition or {}).get("reason") or "Unknown")
            return Settled(first, planning.Failure(reason, f"{where} is not Ready ({reason})"))
        content = self.open(first)
        second = self.cache.credential(key)
        if second is None or second.resource_version != first.resource_version:
            return UNSETTLED
        return Settled(first, content)

    # ---- the release rule --------------------------------------------------------------------

    def denial(
        self,
        view: views.CredentialView,
        output: release.Output,
        policy: release.Policy,
        *,
        from_api: bool = False,
    ) -> planning.Failure | None:
        """Whether `view`'s plaintext may go to `output` (core.release), with the facts gathered here."""
        facts = release.Facts(credential=view)
        if view.shared_from is not None:
            source = self.credential(view.shared_from, from_api=from_api)
            shares: list[views.ShareView] = []
            namespace: views.NamespaceView | None = None
            if output.plain_secret and source is not None:
                shares, namespace = self._shares_and_namespace(view.shared_from, output.namespace, from_api)
            facts = release.Facts(credential=view, source=source, shares=shares, consumer_namespace=namespace)
        return release.denial(facts, output, policy)

    def _shares_and_namespace(
        self, source: Key, output_namespace: str, from_api: bool
    ) -> tuple[list[views.ShareView], views.NamespaceView | None]:
        """The shares of `source` and the output's Namespace: from the cache, or as stored.

        Withdrawing an output is decided on what the API server says (`from_api`), not on a cache
        that may not hold every share or namespace yet, right after a start.
        """
        if not from_api:
            return self.cache.shares_of(source), self.cache.namespace(output_namespace)
        listed = fetching.list_credential_shares(self.api, source[0])
        stored = fetching.read_namespace(self.api, output_namespace)
        return (
            [views.ShareView.from_object(share) for share in listed],
            views.NamespaceView.from_object(stored) if stored is not None else None,
        )
