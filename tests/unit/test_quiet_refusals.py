"""A refused `kubectl apply` is logged below ERROR; a real error in a webhook handler stays an ERROR."""

from __future__ import annotations

import logging

import pytest

from credbridge.operator import handlers


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@pytest.mark.parametrize("webhook_id", handlers.WEBHOOK_IDS)
def test_kopfs_error_line_for_a_refusal_by_our_webhooks_is_dropped(webhook_id: str) -> None:
    line = f"Webhook {webhook_id!r} failed permanently: Credential team-a/x: field 'y' is not defined"
    assert not handlers.QuietRefusals().filter(record(logging.ERROR, line))


@pytest.mark.parametrize(
    "line",
    [
        "Webhook 'validate-credentials' failed with an exception and will stop now: boom",
        "Webhook 'someone-elses' failed permanently: refused",
        "Handler 'credential_event' failed permanently: boom",
    ],
    ids=["exception-in-our-handler", "other-webhook", "event-handler"],
)
def test_other_errors_are_kept(line: str) -> None:
    assert handlers.QuietRefusals().filter(record(logging.ERROR, line))


def test_lines_below_error_are_kept() -> None:
    line = "Webhook 'validate-credentials' failed permanently: refused"
    assert handlers.QuietRefusals().filter(record(logging.INFO, line))
