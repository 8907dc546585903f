"""`credbridge run`'s flags, made from the settings dataclasses: every setting documented once, parsed back
into the same dataclasses."""

from __future__ import annotations

import dataclasses

import pytest

from credbridge.cli import flags, run
from credbridge.cli import main as cli_main
from credbridge.operator import settings as settings_module


def parse(*args: str) -> settings_module.OperatorSettings:
    parsed = cli_main.build_parser().parse_args(["run", *args])
    given = flags.values(parsed, flags.options())
    given["peering_priority"] = given["peering_priority"] or 0
    built: settings_module.OperatorSettings = flags.build(settings_module.OperatorSettings, given)
    return built


def test_every_flag_has_help_from_its_attribute_docstring_and_a_unique_name() -> None:
    options = list(flags.options())
    assert len(options) > 40
    assert all(option.help for option in options), [option.path for option in options if not option.help]
    names = [option.flag.name for option in options]
    assert len(names) == len(set(names))


def test_no_flags_give_the_default_settings() -> None:
    parsed = parse("--operator-namespace", settings_module.WatchSettings().operator_namespace)
    assert parsed == settings_module.OperatorSettings()


def test_each_style_of_flag_reaches_its_setting() -> None:
    parsed = parse(
        "--namespace=team-a",
        "--namespace=team-b",
        "--env-allow=LLM_*",
        "--binding-rollouts=off",
        "--no-flowise",
        "--flowise-resync=5",
        "--webhook-port=0",
        "--log-level=debug",
        "--peering=ha",
    )
    assert parsed.watch.namespaces == ("team-a", "team-b")
    assert parsed.env.allow == ("LLM_*",)
    assert parsed.bindings.rollouts is False
    assert parsed.flowise.enabled is False and parsed.flowise.resync_seconds == 5.0
    assert parsed.admission.port == 0
    assert parsed.log_level == "debug" and parsed.peering == "ha"
    # Untouched settings keep their defaults.
    assert parsed.endpoint == settings_module.EndpointSettings()


def test_validate_shares_the_policy_flags_with_run() -> None:
    parsed = cli_main.build_parser().parse_args(["validate", "--env-policy", "CRED_A_*=team-a", "-f", "x.yaml"])
    given = run.policy_values(parsed)
    assert given["env.namespace_rules"] == ("CRED_A_*=team-a",)
    assert given["env.allow"] == settings_module.EnvSettings().allow
    assert given["admission.literal_secrets"] == dataclasses.fields(settings_module.AdmissionSettings)[0].default


def test_contradictory_settings_are_refused_with_the_flags_named() -> None:
    settings = dataclasses.replace(
        settings_module.OperatorSettings(), admission=settings_module.AdmissionSettings(certfile="tls.crt")
    )
    with pytest.raises(ValueError, match="--webhook-certfile and --webhook-pkeyfile go together"):
        run.settings_check(settings)
