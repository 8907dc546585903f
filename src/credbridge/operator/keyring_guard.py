"""Accepting or refusing a change of the keyring Secret while the operator runs.

The operator seals with the keyring it holds; a change of the Secret reaches it through a watch.
Deleted, malformed, or with new bytes under a known key id (key material is immutable per id):
the change is refused, the last good keyring stays in use, and the refusal is said once per
change — one ERROR line, a Warning Event on the keyring Secret, and the gauge
`credbridge_keyring_rejected` at 1 until a good keyring is back. Keys without a recorded
fingerprint (a keyring from before them, or a key added by another tool) get one, in one write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from credbridge.core import keyring
from credbridge.kube import connecting, errors, keyrings, writing
from credbridge.operator import metrics

logger = logging.getLogger(__name__)

REJECTED_REASON = "KeyringRejected"
ACCEPTED_REASON = "KeyringAccepted"


def post_refusal(api: connecting.ApiClient, reference: Mapping[str, Any], message: str) -> None:
    """A Warning Event on the keyring Secret saying why it is refused (never fails the caller)."""
    _post(api, reference, "Warning", REJECTED_REASON, message)


def _post(api: connecting.ApiClient, reference: Mapping[str, Any], type: str, reason: str, message: str) -> None:
    try:
        writing.post_event(api, dict(reference), type=type, reason=reason, message=message)
        metrics.API_WRITES.labels("events", "create").inc()
    except errors.ApiError as error:
        logger.warning(
            "could not post a %s event on the keyring Secret: HTTP %s %s", reason, error.status, error.reason
        )


class KeyringGuard:
    """Decides on each observed keyring change; hands accepted keyrings to `accept`."""

    def __init__(
        self,
        api: connecting.ApiClient,
        in_use: keyring.Keyring,
        accept: Callable[[keyring.Keyring], None],
    ) -> None:
        self._api = api
        self._lock = threading.Lock()
        self._in_use = in_use
        self._rejected = False
        self._accept = accept
        metrics.KEYRING_REJECTED.set(0)

    def observe(self, observed: keyrings.Observed) -> None:
        """One change of the keyring Secret (called from the keyring watch thread)."""
        metadata = observed.reference["metadata"]
        where = f"{metadata['namespace']}/{metadata['name']}"
        with self._lock:
            stored, problem = observed.stored, observed.problem
            if stored is not None:
                check = keyring.check_key_material(stored.ring, stored.recorded, self._in_use)
                if check.changed:
                    problem = str(keyring.refuse_changed_keys(where, check.changed))
            if stored is None or problem is not None:
                self._reject(observed.reference, problem or f"keyring Secret {where} is unusable")
                return
            ring = stored.ring
            if self._rejected:
                logger.info("keyring Secret %s is usable again; active key %s", where, ring.active_id)
                _post(
                    self._api,
                    observed.reference,
                    "Normal",
                    ACCEPTED_REASON,
                    f"keyring in use again, active key {ring.active_id}",
                )
            self._rejected = False
            metrics.KEYRING_REJECTED.set(0)
            self._in_use = ring
            if check.unrecorded:
                self._record(stored, where)
        self._accept(ring)

    def _reject(self, reference: Mapping[str, Any], problem: str) -> None:
        logger.error(
            "refused a change of the keyring, still using the last good one (active key %s): %s",
            self._in_use.active_id,
            problem,
        )
        self._rejected = True
        metrics.KEYRING_REJECTED.set(1)
        post_refusal(self._api, reference, problem)

    def _record(self, stored: keyrings.Stored, where: str) -> None:
        metadata = stored.reference["metadata"]
        try:
            keyrings.record_fingerprints(self._api, metadata["namespace"], metadata["name"], stored)
            metrics.API_WRITES.labels("secrets", "patch").inc()
        except errors.ApiError as error:
            # 409: changed meanwhile; the watch brings the newer version, which is checked again.
            log = logger.debug if error.conflict else logger.warning
            log("could not record key fingerprints in keyring Secret %s: HTTP %s %s", where, error.status, error.reason)
