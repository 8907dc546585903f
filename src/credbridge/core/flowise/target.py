"""A typed view of a FlowiseTarget object, with its defaults written once.

The operator, the status planning and the tests read targets through this view instead of
digging into `spec` dictionaries, so a default (the API key's Secret key, prune, the selector
that selects everything) lives in one place.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing

from credbridge.core import names, views

KIND = "FlowiseTarget"
PLURAL = "flowisetargets"
FINALIZER = f"{names.GROUP}/flowise-cleanup"
"""Held on every FlowiseTarget until what it pushed into Flowise is removed (or released, with prune off)."""
DEFAULT_API_KEY_KEY = "apiKey"
"""Key of the API key in the Secret `spec.apiKeySecretRef` names, when `key` is left out."""
DEFAULT_CA_KEY = "ca.crt"
"""Key of the CA bundle in the Secret `spec.tls.caSecretRef` names, when `key` is left out."""


@dataclasses.dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the target's namespace."""

    name: str
    key: str


@dataclasses.dataclass(frozen=True)
class TargetView:
    """The parts of a FlowiseTarget that syncing reads."""

    namespace: str
    name: str
    uid: str
    generation: int
    url: str
    """Base URL of the Flowise server (`https://flowise.example.com`), without `/api/v1`."""
    api_key: SecretKeyRef
    ca: SecretKeyRef | None
    """CA bundle that signs the server's certificate; None means the system's trust store."""
    selector: collections.abc.Mapping[str, typing.Any]
    """Label selector over the namespace's Credentials (own and mirrors); empty selects all."""
    prune: bool
    """Remove from Flowise what this target pushed and no longer selects (and everything on delete)."""
    deleting: bool
    finalizers: tuple[str, ...]
    status: collections.abc.Mapping[str, typing.Any]
    resource_version: str = ""
    deletion_timestamp: str = ""

    @classmethod
    def from_object(cls, obj: collections.abc.Mapping[str, typing.Any]) -> TargetView:
        """Reads a FlowiseTarget in its JSON form."""
        metadata = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        api_key = spec.get("apiKeySecretRef") or {}
        ca = (spec.get("tls") or {}).get("caSecretRef")
        return cls(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            uid=str(metadata.get("uid", "")),
            generation=int(metadata.get("generation") or 0),
            url=str(spec.get("url", "")).rstrip("/"),
            api_key=SecretKeyRef(str(api_key.get("name", "")), str(api_key.get("key") or DEFAULT_API_KEY_KEY)),
            ca=SecretKeyRef(str(ca.get("name", "")), str(ca.get("key") or DEFAULT_CA_KEY)) if ca else None,
            selector=views.kept(dict(spec.get("selector") or {})),
            prune=bool(spec.get("prune", True)),
            deleting=bool(metadata.get("deletionTimestamp")),
            finalizers=tuple(metadata.get("finalizers") or ()),
            status=views.kept(dict(obj.get("status") or {})),
            resource_version=str(metadata.get("resourceVersion", "")),
            deletion_timestamp=str(metadata.get("deletionTimestamp") or ""),
        )

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name): the target's key in work queues and indexes."""
        return self.namespace, self.name

    @property
    def has_finalizer(self) -> bool:
        """True while the target holds credbridge's clean-up finalizer."""
        return FINALIZER in self.finalizers

    @property
    def referenced_secrets(self) -> frozenset[str]:
        """Names of the Secrets this target reads (API key and CA)."""
        found = {self.api_key.name}
        if self.ca is not None:
            found.add(self.ca.name)
        return frozenset(name for name in found if name)
