"""The size limits are defined once in core.validation; the CRD schemas repeat them for the API server."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from credbridge.core import sealing, validation

CRDS = pathlib.Path(__file__).resolve().parents[2] / "crds"


def schema(file: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / file).read_text())
    found: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return found


def test_credential_schema_repeats_the_value_and_field_limits() -> None:
    spec = schema("credbridge.io_credentials.yaml")["properties"]["spec"]["properties"]
    assert spec["data"]["additionalProperties"]["maxLength"] == validation.MAX_VALUE_BYTES
    assert spec["data"]["maxProperties"] == validation.MAX_FIELDS
    assert spec["valueFrom"]["maxProperties"] == validation.MAX_FIELDS
    assert str(validation.MAX_VALUE_BYTES) in spec["data"]["description"]
    assert str(validation.MAX_PLAINTEXT_BYTES) in spec["data"]["description"]
    assert spec["sealedData"]["additionalProperties"]["maxLength"] == sealing.MAX_TOKEN_CHARS
    assert spec["sealedData"]["maxProperties"] == validation.MAX_FIELDS
    assert str(sealing.MAX_TOKEN_CHARS) in spec["sealedData"]["description"]
    assert sealing.MAX_VALUE_BYTES == validation.MAX_VALUE_BYTES


def test_the_largest_sealed_value_with_the_longest_scope_fits_the_schema() -> None:
    public_key = sealing.public_key_of(bytes(range(32)))
    scope = sealing.Scope("n" * 63, "c" * 253, "f" * 128)
    token = sealing.seal_value("v" * sealing.MAX_VALUE_BYTES, public_key, scope, bytes)
    assert len(token) <= sealing.MAX_TOKEN_CHARS
    assert sealing.read_header(token) is not None


def test_credential_type_schema_allows_no_more_inputs_than_a_credential_has_fields() -> None:
    spec = schema("credbridge.io_credentialtypes.yaml")["properties"]["spec"]["properties"]
    assert spec["inputs"]["maxItems"] == validation.MAX_FIELDS


def test_the_largest_credential_fits_a_secret() -> None:
    # Sealed: nonce and tag, base64url, the `cb1.<keyId>.` prefix; Secret data is limited to 1 MiB.
    sealed = len("cb1.01234567.") + -(-(validation.MAX_PLAINTEXT_BYTES + 12 + 16) * 4 // 3)
    assert sealed < 1024 * 1024
