"""Redacted and SecretFields never show their values, whatever formats them."""

from __future__ import annotations

import copy
import logging

import pytest

from credbridge.core import redaction

CANARY = "canary-s3cr3t-value"


def test_redacted_reveals_its_value_only_on_request() -> None:
    assert redaction.Redacted(CANARY).reveal() == CANARY


@pytest.mark.parametrize(
    "render",
    [
        repr,
        str,
        lambda value: f"{value}",
        lambda value: f"{value!r}",
        lambda value: f"{value:>40}",
        "{}".format,
    ],
)
def test_redacted_prints_redacted_however_it_is_formatted(render: object) -> None:
    assert callable(render)
    rendered = render(redaction.Redacted(CANARY))
    assert rendered == "<redacted>"


def test_redacted_in_a_container_or_log_line_stays_hidden(caplog: pytest.LogCaptureFixture) -> None:
    wrapped = redaction.Redacted(CANARY)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("values: %s %r", wrapped, {"key": wrapped})
    assert CANARY not in caplog.text
    assert CANARY not in repr([wrapped, (wrapped,)])


def test_redacted_compares_and_hashes_by_value() -> None:
    assert redaction.Redacted("a") == redaction.Redacted("a")
    assert redaction.Redacted("a") != redaction.Redacted("b")
    assert redaction.Redacted("a") != "a"
    assert len({redaction.Redacted("a"), redaction.Redacted("a"), redaction.Redacted("b")}) == 2


def test_redacted_survives_copying_with_its_value() -> None:
    assert copy.deepcopy(redaction.Redacted(CANARY)).reveal() == CANARY


def test_secret_fields_behaves_as_a_read_only_mapping() -> None:
    source = {"b": "2", "a": "1"}
    fields = redaction.SecretFields(source)
    source["c"] = "3"
    assert dict(fields) == {"b": "2", "a": "1"}
    assert fields["a"] == "1"
    assert len(fields) == 2
    assert "c" not in fields
    with pytest.raises(TypeError):
        fields["a"] = "x"  # type: ignore[index]


def test_secret_fields_repr_lists_only_field_names() -> None:
    fields = redaction.SecretFields({"password": CANARY, "user": "admin"})
    for rendered in (repr(fields), str(fields), f"{fields}", f"{[fields]}"):
        assert CANARY not in rendered
        assert "admin" not in rendered
    assert repr(fields) == "SecretFields(fields=['password', 'user'], values=<redacted>)"


def test_secret_fields_equal_by_content_and_hashable() -> None:
    assert redaction.SecretFields({"a": "1"}) == redaction.SecretFields([("a", "1")])
    assert redaction.SecretFields({"a": "1"}) == {"a": "1"}
    assert hash(redaction.SecretFields({"a": "1"})) == hash(redaction.SecretFields({"a": "1"}))


def test_secret_fields_hands_out_single_values_wrapped() -> None:
    wrapped = redaction.SecretFields({"password": CANARY}).redacted("password")
    assert repr(wrapped) == "<redacted>"
    assert wrapped.reveal() == CANARY
