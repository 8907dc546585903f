"""`credbridge run`: start the operator with settings from flags (made from the settings dataclasses)."""

from __future__ import annotations

import argparse
import pathlib
import secrets
import typing

from credbridge.cli import flags
from credbridge.operator import runner
from credbridge.operator import settings as settings_module

POLICY_PATHS = ("env.allow", "env.namespace_rules", "admission.literal_secrets")
"""The flags `credbridge validate` shares with `credbridge run`: what references and literals are allowed."""

GROUPS = {
    "endpoint": ("workload reads", "the TLS endpoint Pods read values from"),
    "injection": ("Pod injection", "the mutating webhook that injects `credbridge fetch` into annotated Pods"),
    "bindings": ("CredentialBindings", "plain Secret output and rollouts"),
    "flowise": ("Flowise", "syncing FlowiseTargets into Flowise servers"),
    "oauth2": ("OAuth2", "keeping the access tokens of OAuth2 Credentials fresh"),
    "verification": ("verification", "checking Credentials against their services, and expiry"),
}
"""Settings shown under a heading of their own in --help (the others are listed first)."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the operator",
        description=(
            "Run the credbridge operator: reconcile Credentials into encrypted Secrets, share them, and serve "
            "the validating webhook, health and metrics endpoints. The operator namespace (--operator-namespace, "
            "default $POD_NAMESPACE or credbridge-system) must exist: the keyring Secret is kept there."
        ),
    )
    defaults = {
        "watch.operator_namespace": runner.default_operator_namespace(),
        "peering_priority": None,
    }
    grouped: dict[str, list[flags.Option]] = {}
    for option in flags.options():
        grouped.setdefault(option.path.split(".")[0] if option.path.split(".")[0] in GROUPS else "", []).append(option)
    flags.add_arguments(parser, grouped.pop("", []), defaults=defaults)
    for name, selected in grouped.items():
        title, description = GROUPS[name]
        flags.add_arguments(parser.add_argument_group(title, description), selected, defaults=defaults)
    parser.set_defaults(handler=handle)


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that decide what references and literals are allowed, shared with `credbridge validate`."""
    flags.add_arguments(parser, [option for option in flags.options() if option.path in POLICY_PATHS])


def policy_values(args: argparse.Namespace) -> dict[str, typing.Any]:
    """The values of the policy flags (add_policy_arguments), by settings path."""
    return flags.values(args, [option for option in flags.options() if option.path in POLICY_PATHS])


def handle(args: argparse.Namespace) -> int:
    given = flags.values(args, flags.options())
    if given["peering_priority"] is None:
        # Identical replicas must never tie: a random priority unless one is given.
        given["peering_priority"] = secrets.randbelow(2**31)
    try:
        settings: settings_module.OperatorSettings = flags.build(settings_module.OperatorSettings, given)
        settings_check(settings)
    except ValueError as error:
        raise SystemExit(f"credbridge run: {error}") from None
    return runner.run(settings)


def settings_check(settings: settings_module.OperatorSettings) -> None:
    """Reject contradictory or malformed settings before connecting to anything (ValueError naming the flags)."""
    if bool(settings.admission.certfile) != bool(settings.admission.pkeyfile):
        raise ValueError("--webhook-certfile and --webhook-pkeyfile go together")
    if bool(settings.endpoint.certfile) != bool(settings.endpoint.pkeyfile):
        raise ValueError("--endpoint-certfile and --endpoint-pkeyfile go together")
    endpoint = settings.endpoint
    if endpoint.reads_per_second <= 0 or endpoint.burst < 1 or endpoint.token_review_ttl < 0:
        raise ValueError("--read-rate must be > 0, --read-burst >= 1 and --token-review-ttl >= 0")
    settings_module.env_policy(settings.env.allow, settings.env.namespace_rules)
    if settings.keyring.sealing_rotation < 0:
        raise ValueError("--sealing-key-rotation must be 0 (off) or a number of seconds")
    oauth2 = settings.oauth2
    if oauth2.workers < 1:
        raise ValueError("--oauth2-workers must be >= 1")
    oauth2.egress_policy()
    if oauth2.ca_file is not None:
        try:
            pathlib.Path(oauth2.ca_file).read_text()
        except OSError as error:
            raise ValueError(f"--oauth2-ca-file {oauth2.ca_file} cannot be read: {error.strerror}") from None
    verification = settings.verification
    if verification.per_second <= 0 or verification.workers < 1 or verification.interval < 0:
        raise ValueError(
            "--verification-rate must be > 0, --verification-workers >= 1 and --verification-interval >= 0"
        )
    if not 0 <= verification.jitter <= 1 or verification.debounce < 0:
        raise ValueError("--verification-jitter must be between 0 and 1 and --verification-debounce >= 0")
    verification.egress_policy()
    verification.static_hosts()
