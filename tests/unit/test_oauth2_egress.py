"""The egress policy in front of the operator's token requests: a client secret and a refresh token go only
to the host a type declares or one the admin allowed, to an address the policy accepts, pinned."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from credbridge.cli import flags
from credbridge.core import egress, redaction, registry
from credbridge.core.oauth2 import outcomes, provider
from credbridge.oauth2client import client as token_client
from credbridge.oauth2client import egress as oauth2_egress
from credbridge.oauth2client import transport
from credbridge.operator import settings as settings_module

TYPES = registry.Registry.builtin()
SECRET = "client-secret-canary-3c1d"


def gmail_config(token_url: str) -> provider.ProviderConfig:
    fields = {
        "clientId": "id",
        "clientSecret": SECRET,
        "accessTokenUrl": token_url,
        "authorizationUrl": "https://accounts.google.com/o/oauth2/v2/auth",
    }
    spec = TYPES.get("gmailOAuth2")
    assert spec is not None
    return provider.config_from_fields(spec, fields, where="Credential team-a/gmail")


def test_the_host_a_type_declares_is_its_own_and_a_field_given_one_is_not() -> None:
    assert gmail_config("https://oauth2.googleapis.com/token").token_host_declared
    assert not gmail_config("https://collector.example/token").token_host_declared


class Recorder:
    """A network that answers lookups from a table and records where connections went (none opened)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.connected: list[tuple[str, int]] = []

    def resolve(self, host: str, port: int) -> list[egress.IPAddress]:
        return [ipaddress.ip_address(address) for address in self.answers[host]]

    def connect(self, address: egress.IPAddress, port: int, timeout: float) -> socket.socket:
        self.connected.append((str(address), port))
        raise ConnectionRefusedError(111, "Connection refused")


def test_a_field_given_token_endpoint_is_refused_unless_allowed_and_nothing_is_sent() -> None:
    network = Recorder({"collector.example": ["203.0.113.7"]})
    sent: list[str] = []

    def send(url: str, *args: object, **kwargs: object) -> transport.Answer:
        sent.append(url)
        raise AssertionError("sent although refused")

    rule = oauth2_egress.Egress(egress.EgressPolicy(), network.resolve, network.connect)
    client = token_client.TokenClient(send=send, egress=rule)
    outcome = client.refresh(gmail_config("https://collector.example/token"), redaction.Redacted("1//r"))
    assert isinstance(outcome, outcomes.RefreshFailed) and not outcome.transient
    assert "--oauth2-allow-host" in outcome.detail and sent == []
    assert SECRET not in repr(outcome)


def test_addresses_are_judged_once_and_the_connection_goes_to_the_pinned_one() -> None:
    network = Recorder({"idp.internal": ["10.1.2.3"], "oauth2.googleapis.com": ["142.250.1.1"]})
    closed = oauth2_egress.Egress(egress.EgressPolicy(allow_hosts=("idp.internal",)), network.resolve, network.connect)
    with pytest.raises(transport.TransportError, match="--oauth2-allow-network") as refused:
        closed.connector()("idp.internal", 443, 5.0)
    assert not refused.value.transient and network.connected == []
    opened = oauth2_egress.Egress(
        egress.EgressPolicy(allow_hosts=("idp.internal",), allow_networks=egress.parse_networks(["10.0.0.0/8"])),
        network.resolve,
        network.connect,
    )
    with pytest.raises(ConnectionRefusedError):
        opened.connector()("idp.internal", 443, 5.0)
    assert network.connected == [("10.1.2.3", 443)]
    metadata = Recorder({"oauth2.googleapis.com": ["169.254.169.254"]})
    rule = oauth2_egress.Egress(
        egress.EgressPolicy(allow_networks=egress.parse_networks(["169.254.0.0/16"])),
        metadata.resolve,
        metadata.connect,
    )
    with pytest.raises(transport.TransportError, match=r"169\.254\.169\.254"):
        rule.connector()("oauth2.googleapis.com", 443, 5.0)


def test_oauth2_flags_reach_the_nested_policy_and_client_settings() -> None:
    from credbridge.cli import main as cli_main

    parsed = cli_main.build_parser().parse_args(
        [
            "run",
            "--oauth2-refresh-share=0.5",
            "--oauth2-backoff-max=60",
            "--oauth2-timeout=3",
            "--oauth2-allow-host=idp.internal",
            "--oauth2-allow-network=10.0.0.0/8",
            "--no-oauth2",
        ]
    )
    given = flags.values(parsed, flags.options())
    given["peering_priority"] = 0
    built: settings_module.OperatorSettings = flags.build(settings_module.OperatorSettings, given)
    oauth2 = built.oauth2
    assert oauth2.refresh.refresh_share == 0.5 and oauth2.refresh.backoff_max == 60.0
    assert oauth2.client.request_timeout == 3.0 and oauth2.enabled is False
    assert oauth2.egress_policy().allow_hosts == ("idp.internal",)
    assert oauth2.refresh.jitter_share == settings_module.OAuth2Settings().refresh.jitter_share
    with pytest.raises(ValueError, match="--oauth2-allow-network"):
        settings_module.OAuth2Settings(allow_networks=("10.0.0.1/8",)).egress_policy()
