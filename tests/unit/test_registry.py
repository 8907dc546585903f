"""The credential type schema: built-ins, CredentialType objects and the registry."""

from __future__ import annotations

import collections
import copy
import json
import pathlib
import typing

import pytest

from credbridge.core import names, registry

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGED_TYPES = REPO_ROOT / "src" / "credbridge" / "core" / "data" / "builtin-types.json"
REFERENCE_TYPES = REPO_ROOT.parent / "shared" / "reference" / "flowise-credential-types.json"


def custom_object(**spec_overrides: typing.Any) -> dict[str, typing.Any]:
    spec: dict[str, typing.Any] = {
        "name": "acmeApi",
        "label": "Acme API",
        "version": 2,
        "inputs": [
            {"name": "apiKey", "label": "API Key", "type": "password"},
            {
                "name": "region",
                "label": "Region",
                "type": "options",
                "options": ["eu", "us"],
                "default": "eu",
            },
        ],
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_TYPE_KIND,
        "metadata": {"name": "acmeapi"},
        "spec": spec,
    }


def with_input(**input_field: typing.Any) -> dict[str, typing.Any]:
    return custom_object(inputs=[{"name": "field", "label": "Field", **input_field}])


# Built-ins


def test_every_builtin_type_loads_all_113_of_them() -> None:
    types = registry.load_builtin_types()
    assert len(types) == 113
    assert all(spec.builtin for spec in types.values())
    assert all(spec.inputs for spec in types.values())


def test_builtin_types_match_the_flowise_field_inventory() -> None:
    document = json.loads(PACKAGED_TYPES.read_text(encoding="utf-8"))
    types = registry.load_builtin_types()
    assert [raw["name"] for raw in document["types"]] == list(types)
    for raw in document["types"]:
        spec = types[raw["name"]]
        assert spec.label == raw["label"]
        assert spec.version == raw["version"]
        assert [field.name for field in spec.inputs] == [field["name"] for field in raw["inputs"]]
        for field, raw_field in zip(spec.inputs, raw["inputs"], strict=True):
            assert field.type == raw_field["type"]
            assert field.optional == raw_field.get("optional", False)
            assert field.default == raw_field.get("default")
            assert field.hidden == raw_field.get("hidden", False)
            assert list(field.options) == raw_field.get("options", [])


@pytest.mark.skipif(not REFERENCE_TYPES.exists(), reason="the shared reference inventory is not checked out")
def test_packaged_builtin_types_equal_the_shared_reference() -> None:
    assert PACKAGED_TYPES.read_bytes() == REFERENCE_TYPES.read_bytes()


def test_builtin_type_names_do_not_collide_as_object_names() -> None:
    object_names = collections.Counter(registry.type_object_name(name) for name in registry.load_builtin_types())
    assert [name for name, count in object_names.items() if count > 1] == []


def test_builtin_object_names_are_valid_kubernetes_names() -> None:
    for name in registry.load_builtin_types():
        object_name = registry.type_object_name(name)
        assert object_name == object_name.lower()
        assert len(object_name) <= 253
        assert object_name.replace("-", "").replace(".", "").isalnum()


def test_builtin_fractional_versions_are_kept() -> None:
    types = registry.load_builtin_types()
    assert types["awsApi"].version == 1.1
    assert types["tavilyApi"].version == 1.1
    assert types["openAIApi"].version == 1


def test_type_level_optional_does_not_change_field_flags() -> None:
    aws = registry.load_builtin_types()["awsApi"]
    assert all(field.optional for field in aws.inputs)
    assert aws.description == ""


def test_load_builtin_types_returns_a_fresh_dict_each_call() -> None:
    first = registry.load_builtin_types()
    first.clear()
    assert len(registry.load_builtin_types()) == 113


def test_field_is_required_only_without_optional_flag_and_default() -> None:
    redis = registry.load_builtin_types()["redisCacheApi"]
    assert [field.name for field in redis.inputs if field.required] == [
        "redisCacheUser",
        "redisCachePwd",
        "redisCacheSslEnabled",
    ]
    assert redis.field("redisCachePort") is not None
    assert redis.field("nope") is None
    assert redis.field_names()[:2] == ("redisCacheHost", "redisCachePort")


# Field formats


@pytest.mark.parametrize(
    ("field_type", "value", "accepted"),
    [
        ("number", "6379", True),
        ("number", "-0.5", True),
        ("number", "1e3", True),
        ("number", ".5", True),
        ("number", "nan", False),
        ("number", "inf", False),
        ("number", "1e999", False),
        ("number", "1_000", False),
        ("number", " 1", False),
        ("number", "", False),
        ("number", "six", False),
        ("boolean", "true", True),
        ("boolean", "FALSE", True),
        ("boolean", "yes", False),
        ("boolean", "1", False),
        ("url", "https://api.example.com/v1", True),
        ("url", "redis://localhost:6379", True),
        ("url", "postgres://app:pw@db:5432/app", True),
        ("url", "mongodb+srv://user:pw@cluster0.example.net/?retryWrites=true", True),
        ("url", "example.com", False),
        ("url", "https://", False),
        ("url", "http://host:port", False),
        ("url", "https://exa mple.com", False),
        ("url", "/relative/path", False),
        ("json", '{"a": 1}', True),
        ("json", "[1, 2]", True),
        ("json", "{not json", False),
        ("string", "anything at all", True),
        ("password", "", True),
    ],
)
def test_field_accepts_values_of_its_type(field_type: str, value: str, accepted: bool) -> None:
    assert registry.InputField(name="f", label="F", type=field_type).accepts(value) is accepted


def test_options_field_accepts_only_its_options() -> None:
    field = registry.InputField(name="f", label="F", type="options", options=("iam", "bearertoken"))
    assert field.accepts("iam")
    assert not field.accepts("IAM")


# CredentialType objects


def test_custom_type_object_parses_into_a_spec() -> None:
    spec = registry.type_from_object(custom_object())
    assert spec.name == "acmeApi"
    assert spec.version == 2
    assert not spec.builtin
    region = spec.field("region")
    assert region is not None
    assert region.options == ("eu", "us")
    assert region.default == "eu"
    assert not region.required


def test_every_builtin_round_trips_through_its_object() -> None:
    for spec in registry.load_builtin_types().values():
        obj = spec_object = registry.type_to_object(spec)
        assert spec_object["metadata"]["name"] == spec.name.lower()
        assert spec_object["spec"]["name"] == spec.name
        assert registry.type_from_object(obj) == spec


def test_builtin_object_carries_builtin_and_managed_by_labels() -> None:
    obj = registry.type_to_object(registry.load_builtin_types()["openAIApi"])
    assert obj["apiVersion"] == names.API_VERSION
    assert obj["kind"] == names.CREDENTIAL_TYPE_KIND
    assert obj["metadata"] == {
        "name": "openaiapi",
        "labels": {names.BUILTIN_LABEL: "true", names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE},
    }


def test_type_object_leaves_out_defaults_and_empty_keys() -> None:
    obj = registry.type_to_object(registry.load_builtin_types()["redisCacheApi"])
    assert "description" not in obj["spec"]
    port = obj["spec"]["inputs"][1]
    assert port == {"name": "redisCachePort", "label": "Port", "type": "number", "default": "6379"}
    slack = registry.type_to_object(registry.load_builtin_types()["slackOAuth2"])
    additional = next(field for field in slack["spec"]["inputs"] if field["name"] == "additionalParameters")
    assert additional["default"] == ""


def test_custom_type_object_round_trips_without_labels() -> None:
    spec = registry.type_from_object(custom_object(description="Acme's API"))
    obj = registry.type_to_object(spec)
    assert "labels" not in obj["metadata"]
    assert registry.type_from_object(obj) == spec


def test_type_name_falls_back_to_the_object_name() -> None:
    obj = custom_object()
    del obj["spec"]["name"]
    assert registry.type_from_object(obj).name == "acmeapi"


def test_builtin_label_on_an_object_marks_the_type_builtin() -> None:
    obj = custom_object()
    obj["metadata"]["labels"] = {names.BUILTIN_LABEL: "true"}
    assert registry.type_from_object(obj).builtin


def test_missing_label_and_version_get_defaults() -> None:
    obj = custom_object()
    del obj["spec"]["label"]
    del obj["spec"]["version"]
    spec = registry.type_from_object(obj)
    assert spec.label == "acmeApi"
    assert spec.version == 1


def test_integral_float_version_becomes_an_int() -> None:
    assert registry.type_from_object(custom_object(version=3.0)).version == 3


@pytest.mark.parametrize(
    ("obj", "fragments"),
    [
        (with_input(type="secret"), ["'acmeApi'", "spec.inputs[0]", ".type", "password"]),
        (with_input(name="1field", type="string"), ["spec.inputs[0].name", "[A-Za-z_]"]),
        (with_input(name="my-field", type="string"), ["spec.inputs[0].name"]),
        (with_input(type="options"), ["'field'", ".options", "at least one option"]),
        (
            with_input(type="options", options=["a", "b"], default="c"),
            [".default", "one of the field's options"],
        ),
        (with_input(type="number", default="six"), [".default", "not a valid number"]),
        (with_input(type="number", default=6379), [".default", "must be a string"]),
        (with_input(type="string", options=["a"]), [".options", "only allowed on fields of type options"]),
        (with_input(type="options", options=["a", "a"]), [".options", "repeats"]),
        (with_input(type="string", optional="yes"), [".optional", "true or false"]),
        (with_input(type="boolean", default="maybe"), [".default", "not a valid boolean"]),
        (custom_object(inputs=[]), ["spec.inputs", "non-empty list"]),
        (custom_object(version="one"), ["spec.version", "number"]),
        (custom_object(version=True), ["spec.version", "number"]),
        (custom_object(name="bad name!"), ["type name"]),
    ],
)
def test_malformed_type_definitions_are_refused_with_type_and_field(
    obj: dict[str, typing.Any], fragments: list[str]
) -> None:
    if "name" in obj["spec"]:
        obj["metadata"]["name"] = obj["spec"]["name"].lower()
    with pytest.raises(registry.TypeDefinitionError) as raised:
        registry.type_from_object(obj)
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_duplicate_field_names_are_refused() -> None:
    obj = custom_object(
        inputs=[{"name": "key", "type": "password"}, {"name": "key", "type": "string"}],
    )
    with pytest.raises(registry.TypeDefinitionError, match=r"spec.inputs\[1\].*'key'.*unique"):
        registry.type_from_object(obj)


def test_object_named_unlike_its_type_is_refused() -> None:
    obj = custom_object()
    obj["metadata"]["name"] = "something-else"
    with pytest.raises(registry.TypeDefinitionError, match=r"metadata\.name.*'acmeapi'"):
        registry.type_from_object(obj)


def test_object_without_spec_is_refused() -> None:
    with pytest.raises(registry.TypeDefinitionError, match=r"'acmeapi'.*spec"):
        registry.type_from_object({"metadata": {"name": "acmeapi"}})


def test_type_definition_error_does_not_echo_a_bad_default() -> None:
    with pytest.raises(registry.TypeDefinitionError) as raised:
        registry.type_from_object(with_input(type="number", default="not-a-number-canary"))
    assert "canary" not in str(raised.value)


# Registry


def test_registry_finds_builtins_by_exact_name() -> None:
    reg = registry.Registry.builtin()
    found = reg.get("openAIApi")
    assert found is not None
    assert found.builtin
    assert reg.get("openaiapi") is None
    assert "openAIApi" in reg
    assert len(reg) == 113


def test_registry_names_sort_case_insensitively() -> None:
    listed = registry.Registry.builtin().names()
    assert listed == sorted(listed, key=str.casefold)
    assert listed.index("AlibabaApi") < listed.index("anthropicApi")


def test_custom_type_overrides_a_builtin_and_removal_restores_it() -> None:
    builtin = registry.Registry.builtin()
    openai = builtin.get("openAIApi")
    assert openai is not None
    override = registry.CredentialTypeSpec(
        name="openAIApi", label="Custom", version=9, inputs=(registry.InputField("key", "Key", "password"),)
    )
    customised = builtin.with_custom(override)
    assert customised.get("openAIApi") == override
    assert builtin.get("openAIApi") == openai
    assert customised.without_custom("openAIApi").get("openAIApi") == openai
    assert len(customised) == 113


def test_registry_adds_and_removes_custom_types_without_mutation() -> None:
    spec = registry.type_from_object(custom_object())
    empty = registry.Registry({})
    added = empty.with_custom(spec)
    assert empty.get("acmeApi") is None
    assert added.get("acmeApi") == spec
    assert added.names() == ["acmeApi"]
    assert added.without_custom("acmeApi").names() == []
    assert added.without_custom("unknown").names() == ["acmeApi"]


def test_registry_copies_its_inputs() -> None:
    spec = registry.type_from_object(custom_object())
    custom = {"acmeApi": spec}
    reg = registry.Registry({}, custom)
    custom.clear()
    assert reg.get("acmeApi") == spec


def test_type_from_object_does_not_modify_its_input() -> None:
    obj = custom_object()
    before = copy.deepcopy(obj)
    registry.type_from_object(obj)
    assert obj == before
