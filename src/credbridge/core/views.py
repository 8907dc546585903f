"""Typed views of the Kubernetes objects credbridge reads: one per kind, parsed once.

Every part of credbridge — the controller's cache, planning, admission, the CLI — reads objects
through these views instead of digging in dicts with `(body.get("spec") or {})`. A view holds
only what credbridge needs of an object (never managedFields or unrelated annotations), and the
defaults (the Secret name, the display name, the id) are written here once.

Views are immutable: a watch event makes a new view, it never edits the cached one.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import sys
import types
import typing

from credbridge.core import names

Json = dict[str, typing.Any]
Key = tuple[str, str]
"""(namespace, name) of a namespaced object."""

_EMPTY: collections.abc.Mapping[str, typing.Any] = types.MappingProxyType({})


def kept(value: typing.Any) -> typing.Any:
    """A private copy of a JSON value for a long-lived view, with its short strings interned.

    A view must not share dicts with the watch event it came from (the event's owner may reuse
    them). And ten thousand Credentials repeat the same keys ("conditions", "lastTransitionTime")
    and short values ("True", "Encrypted", a key id) ten thousand times: interning them keeps one
    copy of each, about a third of what the cache would otherwise hold.
    """
    if isinstance(value, dict):
        return {sys.intern(key) if isinstance(key, str) else key: kept(item) for key, item in value.items()}
    if isinstance(value, list):
        return [kept(item) for item in value]
    if isinstance(value, str) and len(value) <= _INTERNED_LENGTH:
        return sys.intern(value)
    return value


_INTERNED_LENGTH = 64
"""Strings up to this length are interned by `kept` (names, reasons, ids, timestamps; not messages or data)."""


def _metadata(obj: collections.abc.Mapping[str, typing.Any]) -> collections.abc.Mapping[str, typing.Any]:
    return obj.get("metadata") or _EMPTY


def _ours(annotations: collections.abc.Mapping[str, str] | None) -> collections.abc.Mapping[str, str]:
    """The annotations credbridge reads (its own group's), not the rest (last-applied etc.)."""
    if not annotations:
        return _EMPTY
    return kept({key: value for key, value in annotations.items() if key.startswith(names.GROUP + "/")}) or _EMPTY


def _kept_mapping(value: typing.Any) -> collections.abc.Mapping[str, typing.Any]:
    return kept(dict(value)) if value else _EMPTY


def resource_version_newer(candidate: str, current: str) -> bool:
    """Tells whether `candidate` is at least as new as `current` (both resourceVersions).

    The API treats resourceVersions as opaque, but etcd's are increasing integers; where both
    are numbers they are compared, so a late watch event never replaces what a write already
    returned. Anything else counts as newer (the last seen wins).
    """
    if candidate.isdigit() and current.isdigit():
        return int(candidate) >= int(current)
    return True


@dataclasses.dataclass(frozen=True)
class CredentialView:
    """A Credential (source or mirror): what planning, the cache and admission read of it."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: collections.abc.Mapping[str, typing.Any]
    status: collections.abc.Mapping[str, typing.Any]
    annotations: collections.abc.Mapping[str, str] = dataclasses.field(default_factory=dict)
    """credbridge's own annotations only (`credbridge.io/...`)."""
    labels: collections.abc.Mapping[str, str] = dataclasses.field(default_factory=dict)
    resource_version: str = ""
    creation_timestamp: str = ""
    deleting: bool = False
    """The object has a deletionTimestamp: it is on its way out."""

    @classmethod
    def from_object(cls, obj: collections.abc.Mapping[str, typing.Any]) -> CredentialView:
        metadata = _metadata(obj)
        return cls(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            uid=str(metadata.get("uid", "")),
            generation=int(metadata.get("generation") or 0),
            spec=_kept_mapping(obj.get("spec")),
            status=_kept_mapping(obj.get("status")),
            annotations=_ours(metadata.get("annotations")),
            labels=_kept_mapping(metadata.get("labels")),
            resource_version=str(metadata.get("resourceVersion", "")),
            creation_timestamp=sys.intern(str(metadata.get("creationTimestamp", ""))),
            deleting=bool(metadata.get("deletionTimestamp")),
        )

    @property
    def key(self) -> Key:
        return self.namespace, self.name

    @property
    def credential_id(self) -> str:
        """`spec.id` when given (stable across re-creation), else the object's uid."""
        return str(self.spec.get("id") or self.uid)

    @property
    def secret_name(self) -> str:
        return str((self.spec.get("target") or _EMPTY).get("secretName") or self.name)

    @property
    def display_name(self) -> str:
        return str(self.spec.get("displayName") or self.name)

    @property
    def type_name(self) -> str:
        return str(self.spec.get("type", ""))

    @property
    def shared_from(self) -> Key | None:
        source = self.spec.get("sharedFrom")
        if not source:
            return None
        return str(source.get("namespace", "")), str(source.get("name", ""))

    @property
    def data(self) -> dict[str, str]:
        """`spec.data` with every value as a string."""
        return {str(field): str(value) for field, value in (self.spec.get("data") or _EMPTY).items()}

    @property
    def sealed_data(self) -> dict[str, str]:
        """`spec.sealedData`: field → sealed value (`cbs1...`), opened only by the reconciler."""
        return {str(field): str(value) for field, value in (self.spec.get("sealedData") or _EMPTY).items()}

    @property
    def value_from(self) -> collections.abc.Mapping[str, typing.Any]:
        return self.spec.get("valueFrom") or _EMPTY

    @property
    def referenced_secrets(self) -> frozenset[str]:
        """Names of the Secrets `spec.valueFrom` reads, in the Credential's namespace."""
        return frozenset(
            str((source.get("secretKeyRef") or _EMPTY).get("name", ""))
            for source in self.value_from.values()
            if (source.get("secretKeyRef") or _EMPTY).get("name")
        )

    @property
    def ready_condition(self) -> collections.abc.Mapping[str, typing.Any] | None:
        for condition in self.status.get("conditions") or ():
            if condition.get("type") == names.READY_CONDITION:
                return typing.cast(collections.abc.Mapping[str, typing.Any], condition)
        return None

    @property
    def ready(self) -> bool:
        condition = self.ready_condition
        return condition is not None and condition.get("status") == "True"

    @property
    def established_id(self) -> bool:
        """The status already shows this id with a key: it had a good Secret under this id."""
        return self.status.get("id") == self.credential_id and bool(self.status.get("keyId"))


@dataclasses.dataclass(frozen=True)
class SecretView:
    """The parts of a Secret that planning compares with what it should be."""

    name: str
    type: str
    controller_uid: str | None
    labels: collections.abc.Mapping[str, str]
    annotations: collections.abc.Mapping[str, str]
    data: collections.abc.Mapping[str, str] = dataclasses.field(repr=False)
    resource_version: str = ""
    namespace: str = ""
    uid: str = ""

    @classmethod
    def from_object(cls, obj: collections.abc.Mapping[str, typing.Any]) -> SecretView:
        """Read a Secret in its API (JSON) form; `data` values are base64 there and decoded here."""
        metadata = _metadata(obj)
        controller = next(
            (ref.get("uid") for ref in metadata.get("ownerReferences") or () if ref.get("controller")), None
        )
        data: dict[str, str] = {}
        for key, value in (obj.get("data") or _EMPTY).items():
            try:
                data[sys.intern(key)] = base64.b64decode(value or "").decode()
            except (ValueError, UnicodeDecodeError):
                data[sys.intern(key)] = ""
        return cls(
            name=str(metadata.get("name", "")),
            type=sys.intern(str(obj.get("type", ""))),
            controller_uid=controller,
            labels=_kept_mapping(metadata.get("labels")),
            annotations=_ours(metadata.get("annotations")),
            data=data,
            resource_version=str(metadata.get("resourceVersion", "")),
            namespace=str(metadata.get("namespace", "")),
            uid=str(metadata.get("uid", "")),
        )

    @property
    def key(self) -> Key:
        return self.namespace, self.name

    @property
    def managed(self) -> bool:
        return self.labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY_VALUE

    @property
    def credential_name(self) -> str | None:
        """The Credential this Secret belongs to, by its label (managed Secrets only)."""
        return self.labels.get(names.CREDENTIAL_LABEL) if self.managed else None


@dataclasses.dataclass(frozen=True)
class ShareView:
    """A CredentialShare: which Credential it shares, where to, and what its status says."""

    namespace: str
    name: str
    credential: str
    namespaces: tuple[str, ...]
    namespace_selector: collections.abc.Mapping[str, typing.Any] | None
    status: collections.abc.Mapping[str, typing.Any]
    spec: collections.abc.Mapping[str, typing.Any] = dataclasses.field(default_factory=dict)
    resource_version: str = ""
    uid: str = ""

    @classmethod
    def from_object(cls, obj: collections.abc.Mapping[str, typing.Any]) -> ShareView:
        metadata = _metadata(obj)
        spec = obj.get("spec") or _EMPTY
        return cls(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            credential=str(spec.get("credential", "")),
            namespaces=tuple(str(name) for name in spec.get("namespaces") or ()),
            namespace_selector=kept(spec.get("namespaceSelector")),
            status=_kept_mapping(obj.get("status")),
            spec=_kept_mapping(spec),
            resource_version=str(metadata.get("resourceVersion", "")),
            uid=str(metadata.get("uid", "")),
        )

    @property
    def key(self) -> Key:
        return self.namespace, self.name

    @property
    def source(self) -> Key:
        """(namespace, name) of the Credential it shares."""
        return self.namespace, self.credential


@dataclasses.dataclass(frozen=True)
class NamespaceView:
    """A namespace: its labels (share selectors), its consent annotation, whether it is going away."""

    name: str
    labels: collections.abc.Mapping[str, str]
    annotations: collections.abc.Mapping[str, str]
    deleting: bool = False

    @classmethod
    def from_object(cls, obj: collections.abc.Mapping[str, typing.Any]) -> NamespaceView:
        metadata = _metadata(obj)
        return cls(
            name=str(metadata.get("name", "")),
            labels=_kept_mapping(metadata.get("labels")),
            annotations=_ours(metadata.get("annotations")),
            deleting=bool(metadata.get("deletionTimestamp"))
            or (obj.get("status") or _EMPTY).get("phase") == "Terminating",
        )
