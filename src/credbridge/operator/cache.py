"""The watch cache: every object the operator reconciles, as views, with the indexes that keep each
lookup independent of how many objects there are.

Watch events (and the operator's own writes, written through) put views here; reconciles read
from here instead of asking the API server. Nothing in this module talks to the cluster, so it is
unit-tested on its own.

Invariants, kept under one lock by every method:
- `_credentials` holds the newest view of each Credential seen, by (namespace, name). A view
  older than the cached one (by resourceVersion) is ignored, so a late watch event never undoes a
  write the operator already put here.
- Each index holds exactly the entries derived from the views in `_credentials`: replacing or
  removing a view first removes the entries of the old one. So an index lookup costs O(answer),
  never O(all Credentials).
- `_secrets` holds the Secrets credbridge manages (label `app.kubernetes.io/managed-by`), with
  their data: the managed Secret of a Credential is verified from here.
- `_references` holds, for Secrets some Credential reads with `valueFrom`, the newest
  resourceVersion the metadata watch reported and the data last read at some resourceVersion;
  Secrets nobody references are not kept at all.
- `stores` holds, per kind a consumer owns (CredentialBindings, FlowiseTargets...), a `Store`: the
  same newest-version rule and the indexes that consumer declares, kept equal to its views.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import threading
import typing
from typing import Generic, Protocol, TypeVar

from credbridge.core import views

Key = views.Key

_DELETED = ""
"""resourceVersion recorded for a referenced Secret that does not exist."""


@dataclasses.dataclass(frozen=True)
class ReferencedSecret:
    """What the cache knows of a Secret a Credential reads: its newest version, and data read at some version."""

    resource_version: str | None
    """Newest resourceVersion reported by the watch; "" when it does not exist; None when unknown."""
    data_version: str | None = None
    """resourceVersion `data` was read at; None when it was never read."""
    data: collections.abc.Mapping[str, str] | None = dataclasses.field(default=None, repr=False)
    """Decoded data as last read (None: the Secret did not exist then)."""

    @property
    def fresh(self) -> bool:
        """True when `data` reflects the newest version the watch has seen."""
        return self.data_version is not None and self.data_version == self.resource_version


def _newer(uid: str, resource_version: str, cached_uid: str, cached_version: str) -> bool:
    """True when (uid, resource_version) is a different object or a later version than what is cached."""
    if uid != cached_uid or not resource_version:
        return True
    return resource_version != cached_version and views.resource_version_newer(resource_version, cached_version)


def _add(index: dict[typing.Any, set[typing.Any]], key: typing.Any, value: typing.Any) -> None:
    index.setdefault(key, set()).add(value)


def _discard(index: dict[typing.Any, set[typing.Any]], key: typing.Any, value: typing.Any) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(value)
        if not members:
            del index[key]


class Versioned(Protocol):
    """A view a Store can keep: an object's key, uid and resourceVersion."""

    @property
    def key(self) -> Key: ...

    @property
    def uid(self) -> str: ...

    @property
    def resource_version(self) -> str: ...


V = TypeVar("V", bound=Versioned)

IndexFunction = collections.abc.Callable[[V], collections.abc.Iterable[collections.abc.Hashable]]
"""The index values a view is filed under (none, one or several)."""

CredentialListener = collections.abc.Callable[[str, views.CredentialView, "views.CredentialView | None"], None]


class Store(Generic[V]):
    """The views of one kind, by key, with the indexes its controller declares.

    Invariants, under the store's lock: `_views` holds the newest version seen of each object (an
    older one is ignored, so a late watch event never undoes a write put here); each index maps a
    value to exactly the keys whose current view files under it, and holds no empty sets. A lookup
    costs O(answer).
    """

    def __init__(self, kind: str, indexes: collections.abc.Mapping[str, IndexFunction[V]]) -> None:
        self.kind = kind
        self._lock = threading.RLock()
        self._views: dict[Key, V] = {}
        self._functions = dict(indexes)
        self._indexes: dict[str, dict[collections.abc.Hashable, set[Key]]] = {name: {} for name in indexes}

    def put(self, view: V) -> tuple[bool, V | None]:
        """Stores `view` unless this version or a newer one of the same object is held; returns whether it
        was stored, and the view held before."""
        with self._lock:
            previous = self._views.get(view.key)
            if previous is not None and not _newer(
                view.uid, view.resource_version, previous.uid, previous.resource_version
            ):
                return False, previous
            if previous is not None:
                self._file(previous, remove=True)
            self._views[view.key] = view
            self._file(view, remove=False)
            return True, previous

    def remove(self, key: Key) -> V | None:
        """Forgets a deleted object; returns its last view."""
        with self._lock:
            previous = self._views.pop(key, None)
            if previous is not None:
                self._file(previous, remove=True)
            return previous

    def get(self, key: Key) -> V | None:
        with self._lock:
            return self._views.get(key)

    def key_list(self) -> list[Key]:
        """Every key, sorted (a snapshot, for periodic work that visits all)."""
        with self._lock:
            return sorted(self._views)

    def __len__(self) -> int:
        with self._lock:
            return len(self._views)

    def lookup(self, index: str, value: collections.abc.Hashable) -> list[V]:
        """The views filed under `value` in `index`, sorted by key."""
        with self._lock:
            return [self._views[key] for key in sorted(self._indexes[index].get(value, ()))]

    def lookup_keys(self, index: str, value: collections.abc.Hashable) -> list[Key]:
        with self._lock:
            return sorted(self._indexes[index].get(value, ()))

    def index_snapshot(self, index: str) -> dict[collections.abc.Hashable, set[Key]]:
        """A copy of one index (for tests that compare it with a scan)."""
        with self._lock:
            return {value: set(keys) for value, keys in self._indexes[index].items()}

    def _file(self, view: V, *, remove: bool) -> None:
        for name, function in self._functions.items():
            index = self._indexes[name]
            for value in set(function(view)):
                if remove:
                    _discard(index, value, view.key)
                else:
                    _add(index, value, view.key)


class Cache:
    """Views of Credentials, CredentialShares, managed Secrets and namespaces, with their indexes."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._credentials: dict[Key, views.CredentialView] = {}
        self._by_id: dict[Key, set[str]] = {}
        """(namespace, credential id) → names of the Credentials with that id."""
        self._by_reference: dict[Key, set[str]] = {}
        """(namespace, Secret name) → names of the Credentials whose spec.valueFrom reads it."""
        self._by_target: dict[Key, set[str]] = {}
        """(namespace, Secret name) → names of the Credentials whose managed Secret has that name."""
        self._by_type: dict[str, set[Key]] = {}
        """type name → keys of the Credentials of that type."""
        self._by_namespace: dict[str, set[str]] = {}
        """namespace → names of its Credentials (for consumers that select within a namespace)."""
        self._mirrors: dict[Key, set[Key]] = {}
        """source (namespace, name) → keys of its mirrors."""
        self._shares: dict[Key, views.ShareView] = {}
        self._shares_by_source: dict[Key, set[str]] = {}
        """(namespace, credential name) → names of the shares naming it."""
        self._secrets: dict[Key, views.SecretView] = {}
        self._references: dict[Key, ReferencedSecret] = {}
        self._namespaces: dict[str, views.NamespaceView] = {}
        self.stores: dict[str, Store[typing.Any]] = {}
        """Kinds consumers own, by kind name (see `store`)."""
        self.credential_listeners: list[CredentialListener] = []
        """Told of every Credential change the cache stores — from a watch event or written through by
        the operator itself — and of every removal: (ADDED|MODIFIED|DELETED, view, previous view).
        Called outside the lock, in the thread that stored it; listeners only look up and queue."""

    def store(self, kind: str, indexes: collections.abc.Mapping[str, IndexFunction[V]]) -> Store[V]:
        """A new Store for `kind` with the indexes its consumer declares, kept with the cache."""
        made: Store[V] = Store(kind, indexes)
        with self._lock:
            self.stores[kind] = made
        return made

    # ---- Credentials -------------------------------------------------------------------------

    def put_credential(self, view: views.CredentialView) -> tuple[bool, views.CredentialView | None]:
        """Stores `view` unless the cache holds this version or a newer one of the same object.

        Returns whether it was stored, and the view cached before.
        """
        with self._lock:
            previous = self._credentials.get(view.key)
            if previous is not None and not _newer(
                view.uid, view.resource_version, previous.uid, previous.resource_version
            ):
                return False, previous
            if previous is not None:
                self._unindex(previous)
            self._credentials[view.key] = view
            self._index(view)
        for listener in self.credential_listeners:
            listener("MODIFIED" if previous is not None else "ADDED", view, previous)
        return True, previous

    def remove_credential(self, key: Key) -> views.CredentialView | None:
        """Forgets a deleted Credential; returns its last view."""
        with self._lock:
            previous = self._credentials.pop(key, None)
            if previous is not None:
                self._unindex(previous)
        if previous is not None:
            for listener in self.credential_listeners:
                listener("DELETED", previous, previous)
        return previous

    def _index(self, view: views.CredentialView) -> None:
        namespace = view.namespace
        self._by_namespace.setdefault(namespace, set()).add(view.name)
        _add(self._by_id, (namespace, view.credential_id), view.name)
        for secret in view.referenced_secrets:
            _add(self._by_reference, (namespace, secret), view.name)
            self._references.setdefault((namespace, secret), ReferencedSecret(resource_version=None))
        _add(self._by_target, (namespace, view.secret_name), view.name)
        self._by_type.setdefault(view.type_name, set()).add(view.key)
        if view.shared_from is not None:
            self._mirrors.setdefault(view.shared_from, set()).add(view.key)

    def _unindex(self, view: views.CredentialView) -> None:
        namespace = view.namespace
        in_namespace = self._by_namespace.get(namespace)
        if in_namespace is not None:
            in_namespace.discard(view.name)
            if not in_namespace:
                del self._by_namespace[namespace]
        _discard(self._by_id, (namespace, view.credential_id), view.name)
        for secret in view.referenced_secrets:
            _discard(self._by_reference, (namespace, secret), view.name)
            if (namespace, secret) not in self._by_reference:
                self._references.pop((namespace, secret), None)
        _discard(self._by_target, (namespace, view.secret_name), view.name)
        keys = self._by_type.get(view.type_name)
        if keys is not None:
            keys.discard(view.key)
            if not keys:
                del self._by_type[view.type_name]
        if view.shared_from is not None:
            mirrors = self._mirrors.get(view.shared_from)
            if mirrors is not None:
                mirrors.discard(view.key)
                if not mirrors:
                    del self._mirrors[view.shared_from]

    def credential(self, key: Key) -> views.CredentialView | None:
        with self._lock:
            return self._credentials.get(key)

    def credential_keys(self) -> list[Key]:
        """Every Credential's key (a snapshot, for work that must visit all: key rotation, resync)."""
        with self._lock:
            return list(self._credentials)

    def credential_count(self) -> int:
        with self._lock:
            return len(self._credentials)

    def in_namespace(self, namespace: str) -> list[views.CredentialView]:
        """Every Credential (and mirror) of `namespace`."""
        with self._lock:
            return [self._credentials[(namespace, name)] for name in sorted(self._by_namespace.get(namespace, ()))]

    def with_id(self, namespace: str, credential_id: str) -> list[views.CredentialView]:
        """The Credentials of `namespace` whose id is `credential_id`."""
        with self._lock:
            return [self._credentials[(namespace, name)] for name in self._by_id.get((namespace, credential_id), ())]

    def reading_secret(self, namespace: str, secret_name: str) -> list[Key]:
        """Credentials whose spec.valueFrom reads Secret `namespace/secret_name`."""
        with self._lock:
            return [(namespace, name) for name in sorted(self._by_reference.get((namespace, secret_name), ()))]

    def targeting_secret(self, namespace: str, secret_name: str) -> list[Key]:
        """Credentials whose managed Secret is `namespace/secret_name`."""
        with self._lock:
            return [(namespace, name) for name in sorted(self._by_target.get((namespace, secret_name), ()))]

    def of_type(self, type_name: str) -> list[Key]:
        with self._lock:
            return sorted(self._by_type.get(type_name, ()))

    def mirrors_of(self, source: Key) -> list[views.CredentialView]:
        """The mirrors of a source Credential, wherever they are."""
        with self._lock:
            return [self._credentials[key] for key in sorted(self._mirrors.get(source, ()))]

    # ---- Secrets -----------------------------------------------------------------------------

    def put_secret(self, view: views.SecretView) -> bool:
        """Stores a managed Secret unless this version or a newer one is cached; True when stored."""
        with self._lock:
            previous = self._secrets.get(view.key)
            if previous is not None and not _newer(
                view.uid, view.resource_version, previous.uid, previous.resource_version
            ):
                return False
            self._secrets[view.key] = view
            return True

    def remove_secret(self, key: Key) -> None:
        with self._lock:
            self._secrets.pop(key, None)

    def secret(self, key: Key) -> views.SecretView | None:
        """A managed Secret as last seen, or None."""
        with self._lock:
            return self._secrets.get(key)

    def note_secret_version(self, key: Key, resource_version: str | None) -> bool:
        """Records the newest version of a Secret ("" or None: deleted); True when a Credential reads it."""
        with self._lock:
            current = self._references.get(key)
            if current is None:
                return False
            self._references[key] = dataclasses.replace(current, resource_version=resource_version or _DELETED)
            return True

    def note_secrets_listed(self, namespace: str | None, present: collections.abc.Set[Key]) -> list[Key]:
        """After a full list: referenced Secrets the list did not hold are gone; returns them."""
        with self._lock:
            gone = [
                key
                for key, reference in self._references.items()
                if (namespace is None or key[0] == namespace)
                and key not in present
                and reference.resource_version != _DELETED
            ]
            for key in gone:
                self._references[key] = dataclasses.replace(self._references[key], resource_version=_DELETED)
            return gone

    def referenced_secret(self, key: Key) -> ReferencedSecret | None:
        """What is known of a Secret some Credential reads, or None when none reads it."""
        with self._lock:
            return self._references.get(key)

    def store_referenced_data(
        self, key: Key, resource_version: str, data: collections.abc.Mapping[str, str] | None
    ) -> None:
        """Keeps data just read from the API server (None: not found) for Secrets some Credential reads."""
        with self._lock:
            current = self._references.get(key)
            if current is None:
                return
            newest = current.resource_version
            if newest is None or (resource_version and views.resource_version_newer(resource_version, newest)):
                newest = resource_version
            self._references[key] = ReferencedSecret(resource_version=newest, data_version=resource_version, data=data)

    # ---- CredentialShares --------------------------------------------------------------------

    def put_share(self, view: views.ShareView) -> tuple[bool, views.ShareView | None]:
        """Stores a share unless this version or a newer one is cached; returns whether, and the previous view."""
        with self._lock:
            previous = self._shares.get(view.key)
            if previous is not None and not _newer(
                view.uid, view.resource_version, previous.uid, previous.resource_version
            ):
                return False, previous
            if previous is not None:
                _discard(self._shares_by_source, previous.source, previous.name)
            self._shares[view.key] = view
            _add(self._shares_by_source, view.source, view.name)
            return True, previous

    def remove_share(self, key: Key) -> views.ShareView | None:
        with self._lock:
            previous = self._shares.pop(key, None)
            if previous is not None:
                _discard(self._shares_by_source, previous.source, previous.name)
            return previous

    def shares_of(self, source: Key) -> list[views.ShareView]:
        """The shares naming a source Credential (all in its namespace)."""
        with self._lock:
            return [self._shares[(source[0], name)] for name in sorted(self._shares_by_source.get(source, ()))]

    def shared_sources(self) -> list[Key]:
        """Every Credential some share names (existing or not)."""
        with self._lock:
            return sorted(self._shares_by_source)

    # ---- Namespaces --------------------------------------------------------------------------

    def put_namespace(self, view: views.NamespaceView) -> views.NamespaceView | None:
        with self._lock:
            previous = self._namespaces.get(view.name)
            self._namespaces[view.name] = view
            return previous

    def remove_namespace(self, name: str) -> None:
        with self._lock:
            self._namespaces.pop(name, None)

    def namespace(self, name: str) -> views.NamespaceView | None:
        with self._lock:
            return self._namespaces.get(name)

    def namespaces(self) -> list[views.NamespaceView]:
        with self._lock:
            return list(self._namespaces.values())
