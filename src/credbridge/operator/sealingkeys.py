"""The operator's side of the sealing keys: publish the public keys, rotate on a schedule, react to changes.

The keyring (with its sealing key pairs) is loaded and guarded like any keyring change
(keyring_guard); this module does what is particular to sealing once a keyring is accepted:

- publish the public keys in the ConfigMap (kube.sealingkeys) at start and after every change,
  so `credbridge seal --fetch-cert` always finds the active key;
- queue every Credential with spec.sealedData when the sealing keys change: a rotation makes
  their `SealedWithOldKey` hint and re-sealed values appear, an imported key makes values that
  failed with SealKeyUnknown open;
- rotate the sealing key pair when `--sealing-key-rotation` says it is due, checking once a
  minute. The rotation writes the keyring Secret with the resourceVersion it read, so replicas
  never rotate twice; the change then comes back through the keyring watch like any other.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import threading
from collections.abc import Callable

from credbridge.core import keyring
from credbridge.kube import connecting, errors, keyrings, sealingkeys
from credbridge.operator import controller as controller_module
from credbridge.operator import settings as settings_module

logger = logging.getLogger(__name__)

CHECK_EVERY = 60.0
"""Seconds between looks at whether a scheduled sealing key rotation is due (capped to a quarter of the interval)."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class SealingKeys:
    """Publishes the sealing public keys, requeues sealed Credentials on change, and rotates on schedule."""

    def __init__(
        self,
        api: connecting.ApiClient,
        settings: settings_module.OperatorSettings,
        controller: controller_module.Controller,
        now: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._api = api
        self._namespace = settings.watch.operator_namespace
        self._keyring_secret = settings.keyring.secret_name
        self._configmap = settings.keyring.sealing_configmap
        self._interval = settings.keyring.sealing_rotation
        self._controller = controller
        self._now = now
        self._started = _rfc3339(now())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._schedule, name="sealing-rotation", daemon=True)

    def start(self, ring: keyring.Keyring) -> None:
        """Publish the public keys of the keyring loaded at start; start the schedule when one is set."""
        self.publish(ring)
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def keyring_accepted(self, ring: keyring.Keyring) -> None:
        """A keyring change the guard accepted: hand it to the controller, then do what sealing needs."""
        previous = self._controller.current_keyring()
        self._controller.keyring_changed(ring)
        if previous is not None and (previous.active_sealing_id, dict(previous.sealing_keys)) == (
            ring.active_sealing_id,
            dict(ring.sealing_keys),
        ):
            return
        self.publish(ring)
        queued = 0
        cache = self._controller.cache
        for key in cache.credential_keys():
            view = cache.credential(key)
            if view is not None and view.sealed_data:
                self._controller.queue.add(key)
                queued += 1
        logger.info(
            "sealing keys changed (active %s, keys %s): re-planning %d Credentials with sealed values",
            ring.active_sealing_id,
            ", ".join(ring.sealing_ids()) or "none",
            queued,
        )

    def publish(self, ring: keyring.Keyring) -> None:
        """Write the public keys to the ConfigMap when it differs; a failure is logged, never fatal."""
        try:
            sealingkeys.publish(self._api, self._namespace, self._configmap, ring)
        except errors.ApiError as error:
            logger.warning(
                "%s; `credbridge seal --fetch-cert` can still read the keys from the read endpoint "
                "(/v1/sealing-keys) — allow the operator to write that ConfigMap",
                error,
            )

    def _schedule(self) -> None:
        interval = min(CHECK_EVERY, max(self._interval / 4, 1.0))
        while not self._stop.wait(interval):
            try:
                self.rotate_if_due()
            except (errors.ApiError, keyring.KeyringError) as error:
                logger.warning("scheduled sealing key rotation failed, retrying later: %s", error)

    def rotate_if_due(self) -> keyring.Keyring | None:
        """Rotate the sealing key pair when the schedule says so; returns the new keyring, or None."""
        ring = self._controller.current_keyring()
        if ring is None or ring.active_sealing_id is None:
            return None
        now = self._now()
        if not keyring.sealing_rotation_due(ring.sealing_since or self._started, _rfc3339(now), self._interval):
            return None
        threshold = _rfc3339(now - datetime.timedelta(seconds=self._interval))
        try:
            with errors.translated(
                f"rotate the sealing key in keyring Secret {self._namespace}/{self._keyring_secret}"
            ):
                rotated = keyrings.rotate_sealing(
                    self._api, self._namespace, self._keyring_secret, secrets.token_bytes, unless_newer_than=threshold
                )
        except errors.ApiError as error:
            if error.conflict:
                return None  # another replica changed the keyring first; the watch brings its version
            raise
        if rotated is not None:
            logger.info(
                "rotated the sealing key on schedule (every %gs): active sealing key %s, previous %s kept to open "
                "what was sealed with it",
                self._interval,
                rotated.active_sealing_id,
                ring.active_sealing_id,
            )
        return rotated
