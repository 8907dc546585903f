"""Whether this replica is the one that works, when several run with kopf peering (`--peering`).

kopf pauses the watch streams of every replica but the one with the highest priority. It does not
pause what the operator runs besides them: work queues, periodic resyncs and timers keep running
on a cache that stopped changing. A paused replica that resyncs would then push stale content into
Flowise, re-verify Secrets against an old spec, or refresh tokens another replica already
refreshed. So every work queue asks `Activity.active` before it hands a key to a worker.

The judgement is kopf's own rule, read from the same peering object kopf keeps (ClusterKopfPeering
when the operator serves every namespace, KopfPeering in each served namespace otherwise): among
the peers whose last keep-alive is younger than their lifetime, this replica works when its
priority is the highest and no other live peer has the same one. A standalone operator always works.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Mapping
from typing import Any

from credbridge.kube import connecting, errors, fetching
from credbridge.operator import settings as settings_module

logger = logging.getLogger(__name__)


def judge(peers: Mapping[str, Any], priority: int, now: datetime.datetime) -> bool:
    """Whether the replica of `priority` works, by kopf's rule, given a peering object's status."""
    live: list[int] = []
    for info in peers.values():
        if not isinstance(info, Mapping):
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info.get("lastseen")))
            lifetime = datetime.timedelta(seconds=int(info.get("lifetime", 60)))
            peer_priority = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=datetime.UTC)
        if seen + lifetime > now:
            live.append(peer_priority)
    # Our own entry is among them (kopf touches it at start); a second live entry with our priority is a
    # conflict, which kopf answers by pausing both.
    return live.count(priority) == 1 and max(live) == priority


class Activity:
    """Tells whether this replica works now; with peering, read from the peering object every few seconds."""

    def __init__(self, api: connecting.ApiClient, settings: settings_module.OperatorSettings) -> None:
        self._api = api
        self._settings = settings
        self._active = settings.peering is None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="peering-activity", daemon=True)
        self.interval = max(1.0, min(5.0, settings.peering_lifetime / 4))
        """Seconds between looks at the peering object: well inside a peer's lifetime."""

    def active(self) -> bool:
        return self._active

    def start(self) -> None:
        if self._settings.peering is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                now_active = self._judge()
            except errors.ApiError as error:
                logger.warning("cannot read the peering object %s: %s", self._settings.peering, error)
                now_active = False  # unsure: do nothing rather than twice
            if now_active != self._active:
                logger.info(
                    "this replica %s its work queues (peering %s)",
                    "resumes" if now_active else "pauses",
                    self._settings.peering,
                )
                self._active = now_active
            self._stopping.wait(self.interval)

    def _judge(self) -> bool:
        name = str(self._settings.peering)
        now = datetime.datetime.now(datetime.UTC)
        namespaces = self._settings.watch.namespaces
        for namespace in namespaces or (None,):
            peering = fetching.read_peering(self._api, name, namespace)
            if peering is None or not judge(peering.get("status") or {}, self._settings.peering_priority, now):
                return False
        return True
