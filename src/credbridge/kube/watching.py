"""A metadata-only watch of Secrets: which Secret changed, without its data.

Credentials read values from Secrets they name (`spec.valueFrom`), so the operator must notice when
such a Secret changes. But clusters hold thousands of Secrets credbridge has nothing to do with —
Helm release Secrets of 50 to 500 KiB each — and a full watch would carry every byte of them through
the operator. This watch asks the API server for `PartialObjectMetadata` only (name, namespace,
resourceVersion, labels), in pages when listing, and hands each event to a callback that drops
what no Credential refers to. The data of a referenced Secret is read when a reconcile needs it
and its resourceVersion shows the cached copy is stale.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client
from kubernetes.watch import watch as watch_module

from credbridge.kube import errors

logger = logging.getLogger(__name__)

_LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
PAGE_SIZE = 500
"""Objects per list request: bounds the memory of a (re)list in a cluster with many Secrets."""
WATCH_SECONDS = 300
"""How long one watch request lasts before it is renewed from the last resourceVersion."""


@dataclasses.dataclass(frozen=True)
class SecretMetadata:
    """What a metadata-only watch event says about one Secret."""

    namespace: str
    name: str
    resource_version: str
    labels: dict[str, str]

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> SecretMetadata:
        metadata = obj.get("metadata") or {}
        return cls(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            resource_version=str(metadata.get("resourceVersion", "")),
            labels=dict(metadata.get("labels") or {}),
        )


OnEvent = Callable[[str, SecretMetadata], None]
"""Called with the event type (ADDED, MODIFIED, DELETED) and the Secret's metadata."""
OnListed = Callable[[str | None, set[tuple[str, str]]], None]
"""Called after each (re)list with the namespace (None: all) and the (namespace, name) of every Secret it holds."""


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class SecretMetadataWatch:
    """Lists then watches Secret metadata in one namespace (or all), in a daemon thread, until stopped."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str | None,
        on_event: OnEvent,
        on_listed: OnListed,
        *,
        label_selector: str | None = None,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._on_event = on_event
        self._on_listed = on_listed
        self._label_selector = label_selector
        self._stop = threading.Event()
        where = namespace or "all-namespaces"
        self._thread = threading.Thread(target=self._run, name=f"secret-metadata-watch-{where}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _call(self, **kwargs: Any) -> Any:
        if self._label_selector:
            kwargs["label_selector"] = self._label_selector
        if self._namespace is None:
            return self._core.list_secret_for_all_namespaces(_preload_content=False, **kwargs)
        return self._core.list_namespaced_secret(self._namespace, _preload_content=False, **kwargs)

    def _list(self) -> str:
        """Lists every Secret's metadata in pages; returns the resourceVersion to watch from."""
        present: set[tuple[str, str]] = set()
        token = ""
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE_SIZE, "_headers": {"Accept": _LIST_ACCEPT}}
            if token:
                kwargs["_continue"] = token
            with errors.translated(f"list Secrets in {self._namespace or 'all namespaces'}"):
                page = json.loads(self._call(**kwargs).data)
            for item in page.get("items") or []:
                secret = SecretMetadata.from_object(item)
                present.add((secret.namespace, secret.name))
                self._on_event("ADDED", secret)
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                self._on_listed(self._namespace, present)
                return str((page.get("metadata") or {}).get("resourceVersion", ""))

    def _events(self, resource_version: str) -> Iterator[dict[str, Any]]:
        response = self._call(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=(10, WATCH_SECONDS + 30),
            _headers={"Accept": _WATCH_ACCEPT},
        )
        try:
            for line in watch_module.iter_resp_lines(response):
                if self._stop.is_set():
                    return
                yield json.loads(line)
        finally:
            response.release_conn()

    def _run(self) -> None:
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    resource_version = self._list()
                for event in self._events(resource_version):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise _Expired
                        raise errors.ApiError("watch Secrets", obj.get("code"), str(obj.get("reason", "")))
                    secret = SecretMetadata.from_object(obj)
                    if secret.resource_version:
                        resource_version = secret.resource_version
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._on_event(str(kind), secret)
            except _Expired:
                logger.debug("Secret metadata watch expired; listing again")
                resource_version = ""
            except Exception as error:  # a dropped connection or an API error: back off, then resume
                logger.debug("Secret metadata watch restarting after %s", type(error).__name__)
                if isinstance(error, client.ApiException) and error.status == 410:
                    resource_version = ""
                self._stop.wait(1.0)
        logger.debug("Secret metadata watch stopped")
