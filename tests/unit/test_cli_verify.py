"""`credbridge verify`: argument parsing and reading the outcome (the waiting needs the verification controller)."""

from __future__ import annotations

import argparse
import datetime

from credbridge.cli import verify
from credbridge.operator import settings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    verify.add_parser(parser.add_subparsers())
    return parser.parse_args(["verify", *argv])


def test_arguments_name_the_credential_namespace_and_timeout() -> None:
    args = parse("production-openai", "-n", "team-a", "--timeout", "5")
    assert (args.name, args.namespace, args.timeout, args.no_wait) == ("production-openai", "team-a", 5.0, False)
    assert args.handler is verify.handle
    assert parse("x", "--no-wait").no_wait


def test_each_request_has_its_own_value_and_is_answered_only_by_a_check_of_it() -> None:
    first = verify.request_value(datetime.datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=datetime.UTC))
    second = verify.request_value(datetime.datetime(2026, 3, 1, 12, 0, 0, 2, tzinfo=datetime.UTC))
    assert first == "2026-03-01T12:00:00.000001Z" and first != second
    checked = {"status": {"lastVerifyRequest": first, "lastVerifiedTime": "2026-03-01T12:00:01Z"}}
    assert verify.answered(checked, first)
    assert not verify.answered(checked, second)
    assert not verify.answered({}, first)


def test_the_outcome_is_printed_from_the_verified_condition() -> None:
    credential = {
        "status": {
            "lastVerifiedTime": "2026-03-01T12:00:01Z",
            "expiresAt": "2026-06-01T00:00:00Z",
            "conditions": [
                {
                    "type": "Verified",
                    "status": "False",
                    "reason": "Invalid",
                    "message": "api.openai.com answered HTTP 401",
                }
            ],
        }
    }
    text, valid = verify.describe(credential)
    assert not valid
    assert "Verified: False (Invalid)" in text and "HTTP 401" in text and "2026-06-01" in text


def test_verification_settings_make_the_egress_policy_and_limits() -> None:
    configured = settings.VerificationSettings(allow_hosts=("*.corp.example",), allow_networks=("10.0.0.0/8",))
    policy = configured.egress_policy()
    assert policy.allow_hosts == ("*.corp.example",) and str(policy.allow_networks[0]) == "10.0.0.0/8"
    assert configured.probe_limits().max_answer_bytes == 64 * 1024
    assert settings.OperatorSettings().verification.interval > 0
