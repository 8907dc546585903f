"""The watch cache (operator.cache): views in, index lookups out, late events never undo newer state."""

from __future__ import annotations

import typing

from hypothesis import given, settings
from hypothesis import strategies as st

from credbridge.core import binding, names, views
from credbridge.core.flowise import target
from credbridge.operator import bindings, consumer
from credbridge.operator import cache as cache_module


def credential(
    name: str,
    *,
    namespace: str = "team-a",
    version: str = "1",
    uid: str | None = None,
    spec_id: str | None = None,
    type_name: str = "openAIApi",
    reads: tuple[str, ...] = (),
    secret_name: str | None = None,
    shared_from: tuple[str, str] | None = None,
) -> views.CredentialView:
    spec: dict[str, typing.Any] = {"type": type_name}
    if spec_id:
        spec["id"] = spec_id
    if reads:
        spec["valueFrom"] = {f"f{i}": {"secretKeyRef": {"name": secret, "key": "k"}} for i, secret in enumerate(reads)}
    if secret_name:
        spec["target"] = {"secretName": secret_name}
    if shared_from:
        spec["sharedFrom"] = {"namespace": shared_from[0], "name": shared_from[1]}
    return views.CredentialView.from_object(
        {
            "metadata": {"namespace": namespace, "name": name, "uid": uid or f"uid-{name}", "resourceVersion": version},
            "spec": spec,
        }
    )


def test_a_credential_is_found_by_its_id_its_references_its_target_and_its_type() -> None:
    cache = cache_module.Cache()
    cache.put_credential(credential("a", spec_id="id-1", reads=("db",), secret_name="out", type_name="PostgresApi"))

    assert [view.name for view in cache.with_id("team-a", "id-1")] == ["a"]
    assert cache.reading_secret("team-a", "db") == [("team-a", "a")]
    assert cache.targeting_secret("team-a", "out") == [("team-a", "a")]
    assert cache.of_type("PostgresApi") == [("team-a", "a")]
    assert cache.with_id("team-b", "id-1") == []
    assert cache.reading_secret("team-b", "db") == []


def test_replacing_a_credential_moves_its_index_entries() -> None:
    cache = cache_module.Cache()
    cache.put_credential(credential("a", version="1", reads=("old",)))
    cache.put_credential(credential("a", version="2", reads=("new",)))

    assert cache.reading_secret("team-a", "old") == []
    assert cache.reading_secret("team-a", "new") == [("team-a", "a")]
    assert cache.referenced_secret(("team-a", "old")) is None


def test_an_older_or_equal_version_of_the_same_object_is_not_stored() -> None:
    cache = cache_module.Cache()
    newer = credential("a", version="10", spec_id="new")
    assert cache.put_credential(newer) == (True, None)

    stored, previous = cache.put_credential(credential("a", version="9", spec_id="old"))
    assert (stored, previous) == (False, newer)
    assert cache.put_credential(credential("a", version="10", spec_id="new"))[0] is False
    assert cache.credential(("team-a", "a")) == newer
    assert cache.with_id("team-a", "old") == []


def test_a_recreated_object_replaces_the_old_one_whatever_its_version() -> None:
    cache = cache_module.Cache()
    cache.put_credential(credential("a", version="10", uid="first"))
    stored, _ = cache.put_credential(credential("a", version="3", uid="second"))

    assert stored
    current = cache.credential(("team-a", "a"))
    assert current is not None and current.uid == "second"


def test_removing_a_credential_clears_every_index() -> None:
    cache = cache_module.Cache()
    cache.put_credential(credential("m", reads=("db",), shared_from=("team-x", "src")))
    cache.remove_credential(("team-a", "m"))

    assert cache.credential(("team-a", "m")) is None
    assert cache.reading_secret("team-a", "db") == []
    assert cache.mirrors_of(("team-x", "src")) == []
    assert cache.of_type("openAIApi") == []
    assert cache.credential_keys() == []


def test_mirrors_are_found_by_their_source() -> None:
    cache = cache_module.Cache()
    cache.put_credential(credential("team-x.src", namespace="team-b", shared_from=("team-x", "src")))
    cache.put_credential(credential("team-x.src", namespace="team-c", shared_from=("team-x", "src")))
    cache.put_credential(credential("other", namespace="team-b"))

    assert [view.namespace for view in cache.mirrors_of(("team-x", "src"))] == ["team-b", "team-c"]


def test_referenced_secret_data_is_fresh_only_at_the_newest_version_the_watch_saw() -> None:
    cache = cache_module.Cache()
    key = ("team-a", "db")
    assert cache.note_secret_version(key, "5") is False  # nobody reads it: not kept
    cache.put_credential(credential("a", reads=("db",)))
    known = cache.referenced_secret(key)
    assert known is not None and not known.fresh  # never read

    cache.store_referenced_data(key, "5", {"k": "v1"})
    known = cache.referenced_secret(key)
    assert known is not None and known.fresh and known.data == {"k": "v1"}

    assert cache.note_secret_version(key, "6") is True
    known = cache.referenced_secret(key)
    assert known is not None and not known.fresh

    cache.note_secret_version(key, None)
    known = cache.referenced_secret(key)
    assert known is not None and known.resource_version == ""


def test_a_relist_marks_referenced_secrets_it_did_not_see_as_deleted() -> None:
    cache = cache_module.Cache()
    cache.put_credential(credential("a", reads=("kept", "gone")))
    cache.put_credential(credential("b", namespace="team-b", reads=("elsewhere",)))
    cache.note_secret_version(("team-a", "kept"), "1")
    cache.note_secret_version(("team-a", "gone"), "1")

    gone = cache.note_secrets_listed("team-a", {("team-a", "kept")})

    assert gone == [("team-a", "gone")]
    assert cache.note_secrets_listed("team-a", {("team-a", "kept")}) == []  # reported once


def test_managed_secrets_ignore_late_events() -> None:
    cache = cache_module.Cache()

    def secret(version: str) -> views.SecretView:
        return views.SecretView.from_object(
            {
                "metadata": {
                    "namespace": "team-a",
                    "name": "s",
                    "uid": "u",
                    "resourceVersion": version,
                    "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE, names.CREDENTIAL_LABEL: "a"},
                },
                "data": {},
            }
        )

    assert cache.put_secret(secret("7"))
    assert not cache.put_secret(secret("6"))
    assert not cache.put_secret(secret("7"))
    stored = cache.secret(("team-a", "s"))
    assert stored is not None and stored.resource_version == "7" and stored.credential_name == "a"


def test_shares_are_found_by_the_credential_they_name() -> None:
    cache = cache_module.Cache()

    def share(name: str, credential_name: str, version: str = "1") -> views.ShareView:
        return views.ShareView.from_object(
            {
                "metadata": {"namespace": "team-a", "name": name, "uid": f"u-{name}", "resourceVersion": version},
                "spec": {"credential": credential_name, "namespaces": ["team-b"]},
            }
        )

    cache.put_share(share("s1", "openai"))
    cache.put_share(share("s2", "openai"))
    cache.put_share(share("s3", "db"))
    assert [s.name for s in cache.shares_of(("team-a", "openai"))] == ["s1", "s2"]

    cache.put_share(share("s2", "db", version="2"))
    assert [s.name for s in cache.shares_of(("team-a", "openai"))] == ["s1"]
    assert cache.shared_sources() == [("team-a", "db"), ("team-a", "openai")]
    cache.remove_share(("team-a", "s1"))
    assert cache.shares_of(("team-a", "openai")) == []


@settings(max_examples=60, deadline=None)
@given(
    operations=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from(["id-1", "id-2", ""]),
            st.sampled_from(["db", "api", "cache"]),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_indexes_always_equal_a_scan_of_the_cached_views(operations: list[tuple[str, str, str, bool]]) -> None:
    cache = cache_module.Cache()
    for version, (name, spec_id, secret, delete) in enumerate(operations, start=1):
        if delete:
            cache.remove_credential(("team-a", name))
        else:
            cache.put_credential(credential(name, version=str(version), spec_id=spec_id or None, reads=(secret,)))

    cached = [view for key in cache.credential_keys() if (view := cache.credential(key)) is not None]
    for spec_id in ("id-1", "id-2", *(f"uid-{n}" for n in "abcd")):
        assert sorted(v.name for v in cache.with_id("team-a", spec_id)) == sorted(
            v.name for v in cached if v.credential_id == spec_id
        )
    for secret in ("db", "api", "cache"):
        assert cache.reading_secret("team-a", secret) == sorted(v.key for v in cached if secret in v.referenced_secrets)


# ---- stores of the kinds consumers own (CredentialBindings, FlowiseTargets) --------------------


def binding_view(name: str, version: int, credential: str, secret: str | None, written: str | None) -> typing.Any:
    spec: dict[str, typing.Any] = {"credential": credential}
    if secret:
        spec["secret"] = {"name": secret}
    return binding.BindingView.from_object(
        {
            "metadata": {"namespace": "team-a", "name": name, "uid": f"uid-{name}", "resourceVersion": str(version)},
            "spec": spec,
            "status": {"secretName": written} if written else {},
        }
    )


def target_view(name: str, version: int, namespace: str, key_secret: str, ca_secret: str | None) -> typing.Any:
    spec: dict[str, typing.Any] = {"url": "https://flowise.example", "apiKeySecretRef": {"name": key_secret}}
    if ca_secret:
        spec["tls"] = {"caSecretRef": {"name": ca_secret}}
    return target.TargetView.from_object(
        {
            "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "resourceVersion": str(version)},
            "spec": spec,
        }
    )


def assert_indexes_equal_a_scan(
    store: cache_module.Store[typing.Any], indexes: typing.Mapping[str, typing.Any]
) -> None:
    cached = [view for key in store.key_list() if (view := store.get(key)) is not None]
    for name, function in indexes.items():
        scanned: dict[typing.Any, set[views.Key]] = {}
        for view in cached:
            for value in set(function(view)):
                scanned.setdefault(value, set()).add(view.key)
        assert store.index_snapshot(name) == scanned, name
        for value, keys in scanned.items():
            assert store.lookup_keys(name, value) == sorted(keys)


@settings(max_examples=60, deadline=None)
@given(
    operations=st.lists(
        st.tuples(
            st.sampled_from(["b1", "b2", "b3"]),
            st.sampled_from(["openai", "team-x.openai", "db"]),
            st.sampled_from([None, "out-1", "out-2"]),
            st.sampled_from([None, "out-1", "old"]),
            st.sampled_from(["put", "late", "delete"]),
        ),
        max_size=40,
    )
)
def test_binding_indexes_always_equal_a_scan(
    operations: list[tuple[str, str, str | None, str | None, str]],
) -> None:
    store = cache_module.Cache().store(names.CREDENTIAL_BINDING_PLURAL, bindings.BindingController.INDEXES)
    for version, (name, credential_name, secret, written, action) in enumerate(operations, start=2):
        if action == "delete":
            store.remove(("team-a", name))
        else:
            # A late event carries an older version than what may be stored: it must change nothing.
            store.put(binding_view(name, 1 if action == "late" else version, credential_name, secret, written))
        assert_indexes_equal_a_scan(store, bindings.BindingController.INDEXES)


@settings(max_examples=60, deadline=None)
@given(
    operations=st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2"]),
            st.sampled_from(["team-a", "team-b"]),
            st.sampled_from(["key", "other-key"]),
            st.sampled_from([None, "ca", "key"]),
            st.sampled_from(["put", "late", "delete"]),
        ),
        max_size=40,
    )
)
def test_external_sync_indexes_always_equal_a_scan(
    operations: list[tuple[str, str, str, str | None, str]],
) -> None:
    store = cache_module.Cache().store("flowisetargets", consumer.ExternalSync.INDEXES)
    for version, (name, namespace, key_secret, ca_secret, action) in enumerate(operations, start=2):
        if action == "delete":
            store.remove((namespace, name))
        else:
            store.put(target_view(name, 1 if action == "late" else version, namespace, key_secret, ca_secret))
        assert_indexes_equal_a_scan(store, consumer.ExternalSync.INDEXES)


def test_a_store_keeps_the_newest_version_and_tells_what_it_replaced() -> None:
    store = cache_module.Cache().store(names.CREDENTIAL_BINDING_PLURAL, bindings.BindingController.INDEXES)
    first = binding_view("b", 5, "openai", "out", None)
    assert store.put(first) == (True, None)
    assert store.put(binding_view("b", 4, "db", "other", None)) == (False, first)
    newer = binding_view("b", 6, "db", "out", "out")
    assert store.put(newer) == (True, first)
    assert store.lookup_keys("credential", ("team-a", "openai")) == []
    assert store.lookup("credential", ("team-a", "db")) == [newer]
    assert store.remove(("team-a", "b")) == newer and len(store) == 0
