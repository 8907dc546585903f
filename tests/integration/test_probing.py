"""The prober against real servers: databases with right and wrong passwords, the vendor stand-in, and attacks.

No cluster is needed: the prober is called directly, as the verification controller will call
it. Redis and MariaDB come from Debian's packages (`make databases`), PostgreSQL as in the
Flowise tests, the vendors from `credbridge.testing.vendors`. The test network routes only to
local servers, so nothing here can reach a real vendor.
"""

from __future__ import annotations

import collections.abc
import datetime
import ipaddress
import typing

import pytest

from credbridge import probing, tls
from credbridge.core import egress, lint, registry, verification
from credbridge.local import databases
from credbridge.local import flowise as local_flowise
from credbridge.testing import vendors

pytestmark = pytest.mark.services

Outcome = verification.Outcome
BUILTINS = registry.Registry.builtin()
DEFAULT_POLICY = egress.EgressPolicy()
LOOPBACK = egress.EgressPolicy(allow_hosts=("127.0.0.1",), allow_networks=egress.parse_networks(["127.0.0.1/32"]))
FAST = probing.ProbeLimits(connect_timeout=5.0, total_timeout=8.0)
CANARY = "canary-probe-5e1f0c2d9a"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
def listener() -> collections.abc.Iterator[vendors.Listener]:
    attacker = vendors.Listener()
    yield attacker
    attacker.stop()


def spec(name: str) -> registry.CredentialTypeSpec:
    found = BUILTINS.get(name)
    assert found is not None
    return found


def custom(url: str, **verify: typing.Any) -> registry.CredentialTypeSpec:
    return registry.type_from_object(
        {
            "metadata": {"name": "acme"},
            "spec": {
                "name": "acme",
                "inputs": [
                    {"name": "apiKey", "type": "password"},
                    {"name": "endpoint", "type": "url", "optional": True},
                ],
                "verify": {"http": {"url": url, "headers": {"Authorization": "Bearer ${apiKey}"}, **verify}},
            },
        }
    )


def run(
    type_spec: registry.CredentialTypeSpec,
    fields: dict[str, str],
    net: vendors.TestNetwork,
    vendor_ca: tls.Issued,
    policy: egress.EgressPolicy = DEFAULT_POLICY,
) -> verification.ProbeResult:
    request = verification.build_probe(type_spec, fields)
    assert not isinstance(request, verification.ProbeResult), request
    return probing.probe(request, policy, limits=FAST, net=net.as_network(), tls=vendors.trust(vendor_ca))


# The built-in HTTP checks against the stand-in

HTTP_TYPES = {
    "openAIApi": "openAIApiKey",
    "anthropicApi": "anthropicApiKey",
    "cohereApi": "cohereApiKey",
    "huggingFaceApi": "huggingFaceApiKey",
    "pineconeApi": "pineconeApiKey",
    "githubApi": "accessToken",
    "notionApi": "notionIntegrationToken",
    "serpApi": "serpApiKey",
    "mistralAIApi": "mistralAIAPIKey",
    "groqApi": "groqApiKey",
}


@pytest.mark.parametrize("type_name", sorted(HTTP_TYPES))
def test_builtin_checks_map_the_vendor_statuses_to_outcomes(
    type_name: str, standin: vendors.VendorStandIn, vendor_ca: tls.Issued
) -> None:
    field = HTTP_TYPES[type_name]
    for key, outcome in (
        (vendors.VALID_KEY, Outcome.VALID),
        (vendors.REVOKED_KEY, Outcome.INVALID),
        (vendors.WEAK_KEY, Outcome.FORBIDDEN),
        (vendors.BUSY_KEY, Outcome.RATE_LIMITED),
    ):
        net = vendors.vendor_network(standin)
        result = run(spec(type_name), {field: key}, net, vendor_ca)
        assert result.outcome is outcome, result
        assert key not in result.message
        assert net.connected == [(vendors.PUBLIC_ADDRESS, 443)]


def test_github_reports_when_the_token_expires(standin: vendors.VendorStandIn, vendor_ca: tls.Issued) -> None:
    result = run(spec("githubApi"), {"accessToken": vendors.VALID_KEY}, vendors.vendor_network(standin), vendor_ca)
    assert result.outcome is Outcome.VALID
    assert result.expires_at is not None
    assert verification.format_time(result.expires_at) == "2031-02-03T04:05:06Z"


# Attacks on the egress policy


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "metadata"),
        ("127.0.0.1", "loopback"),
        ("10.0.0.7", "private"),
        ("fd00:ec2::254", "metadata"),
    ],
)
def test_a_type_pointing_at_an_internal_address_is_blocked_before_connecting(
    address: str, why: str, standin: vendors.VendorStandIn, vendor_ca: tls.Issued
) -> None:
    host = f"[{address}]" if ":" in address else address
    net = vendors.vendor_network(standin)
    result = run(custom(f"https://{host}/latest/meta-data/"), {"apiKey": CANARY}, net, vendor_ca)
    assert result.outcome is Outcome.BLOCKED
    assert why in result.message
    assert net.connected == []


def test_a_vendor_name_resolving_to_a_private_address_is_blocked(
    standin: vendors.VendorStandIn, vendor_ca: tls.Issued
) -> None:
    net = vendors.vendor_network(standin)
    net.names["api.openai.com"] = [[ipaddress.ip_address("192.168.1.20")]]
    result = run(spec("openAIApi"), {"openAIApiKey": CANARY}, net, vendor_ca)
    assert result.outcome is Outcome.BLOCKED and "192.168.1.20" in result.message
    assert net.connected == []


def test_dns_rebinding_cannot_swap_the_address_after_the_check(
    standin: vendors.VendorStandIn, vendor_ca: tls.Issued
) -> None:
    net = vendors.vendor_network(standin)
    # Public on the first lookup, private on any later one: only one lookup may happen.
    net.names["api.openai.com"] = [[vendors.PUBLIC_ADDRESS], [ipaddress.ip_address("10.0.0.9")]]
    result = run(spec("openAIApi"), {"openAIApiKey": vendors.VALID_KEY}, net, vendor_ca)
    assert result.outcome is Outcome.VALID
    assert net.lookups == ["api.openai.com"]
    assert net.connected == [(vendors.PUBLIC_ADDRESS, 443)]


def test_a_redirect_to_another_host_is_not_followed(
    standin: vendors.VendorStandIn, vendor_ca: tls.Issued, listener: vendors.Listener
) -> None:
    net = vendors.vendor_network(standin, **{"attacker.test": [[ipaddress.ip_address("198.51.100.66")]]})
    net.routes[(ipaddress.ip_address("198.51.100.66"), 443)] = listener.port
    result = run(custom("https://vendor.test/redirect"), {"apiKey": CANARY}, net, vendor_ca)
    assert result.outcome is Outcome.NOT_VERIFIABLE and "redirect" in result.message
    assert net.lookups == ["vendor.test"]
    assert listener.connections == 0


def test_a_base_url_edited_to_a_host_off_the_allow_list_receives_nothing(
    standin: vendors.VendorStandIn, vendor_ca: tls.Issued, listener: vendors.Listener
) -> None:
    type_spec = registry.type_from_object(
        {
            "metadata": {"name": "selfhosted"},
            "spec": {
                "name": "selfhosted",
                "inputs": [{"name": "apiKey", "type": "password"}, {"name": "endpoint", "type": "url"}],
                "verify": {
                    "http": {
                        "baseURLField": "endpoint",
                        "path": "/v1/models",
                        "headers": {"Authorization": "Bearer ${apiKey}"},
                    }
                },
            },
        }
    )
    attacker = ipaddress.ip_address("198.51.100.77")
    net = vendors.vendor_network(standin, **{"attacker.test": [[attacker]]})
    net.routes[(attacker, 443)] = listener.port
    policy = egress.EgressPolicy(allow_hosts=("vendor.test",))
    result = run(type_spec, {"apiKey": CANARY, "endpoint": "https://attacker.test"}, net, vendor_ca, policy)
    assert result.outcome is Outcome.BLOCKED and "attacker.test" in result.message
    assert net.lookups == [] and net.connected == []
    assert (listener.connections, listener.bytes_received) == (0, 0)
    allowed = run(type_spec, {"apiKey": vendors.VALID_KEY, "endpoint": "https://vendor.test/"}, net, vendor_ca, policy)
    assert allowed.outcome is Outcome.VALID


def test_a_server_that_never_answers_ends_as_unreachable(standin: vendors.VendorStandIn, vendor_ca: tls.Issued) -> None:
    result = run(custom("https://vendor.test/slow"), {"apiKey": CANARY}, vendors.vendor_network(standin), vendor_ca)
    assert result.outcome is Outcome.UNREACHABLE and "did not answer" in result.message


def test_a_100_mib_answer_is_not_read(standin: vendors.VendorStandIn, vendor_ca: tls.Issued) -> None:
    result = run(custom("https://vendor.test/huge"), {"apiKey": CANARY}, vendors.vendor_network(standin), vendor_ca)
    assert result.outcome is Outcome.VALID  # decided from the status line; the body is never read


def test_headers_beyond_the_limit_are_refused(standin: vendors.VendorStandIn, vendor_ca: tls.Issued) -> None:
    result = run(
        custom("https://vendor.test/huge-headers"), {"apiKey": CANARY}, vendors.vendor_network(standin), vendor_ca
    )
    assert result.outcome is Outcome.UNREACHABLE and "bytes of headers" in result.message


def test_a_certificate_for_another_name_fails_before_anything_is_sent(
    standin: vendors.VendorStandIn, vendor_ca: tls.Issued
) -> None:
    net = vendors.vendor_network(standin, **{"wrong-name.test": [[vendors.PUBLIC_ADDRESS]]})
    before = len(standin.requests)
    result = run(custom("https://wrong-name.test/v1/models"), {"apiKey": CANARY}, net, vendor_ca)
    assert result.outcome is Outcome.UNREACHABLE and "not valid for wrong-name.test" in result.message
    assert len(standin.requests) == before


def test_an_untrusted_certificate_fails(standin: vendors.VendorStandIn) -> None:
    other_ca = tls.make_ca("someone-else")
    result = run(spec("openAIApi"), {"openAIApiKey": CANARY}, vendors.vendor_network(standin), other_ca)
    assert result.outcome is Outcome.UNREACHABLE


# Real databases


def run_database(type_spec: registry.CredentialTypeSpec, fields: dict[str, str]) -> verification.ProbeResult:
    request = verification.build_probe(type_spec, fields)
    assert isinstance(request, verification.DatabaseProbe), request
    return probing.probe(request, LOOPBACK, limits=FAST)


def test_postgres_right_and_wrong_password(postgres_server: local_flowise.PostgresServer) -> None:
    port, password = postgres_server.port, postgres_server.password.reveal()
    url = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    assert run_database(spec("PostgresUrl"), {"postgresUrl": url}).outcome is Outcome.VALID
    wrong = run_database(
        spec("PostgresUrl"), {"postgresUrl": f"postgresql://postgres:{CANARY}@127.0.0.1:{port}/postgres"}
    )
    assert wrong.outcome is Outcome.INVALID and CANARY not in wrong.message


def test_redis_right_and_wrong_password_and_acl_user(redis_server: databases.RedisServer) -> None:
    fields = {"redisCacheHost": "127.0.0.1", "redisCachePort": str(redis_server.port)}
    right = run_database(spec("redisCacheApi"), {**fields, "redisCachePwd": redis_server.password})
    assert right.outcome is Outcome.VALID
    wrong = run_database(spec("redisCacheApi"), {**fields, "redisCachePwd": CANARY})
    assert wrong.outcome is Outcome.INVALID and CANARY not in wrong.message
    assert run_database(spec("redisCacheApi"), fields).outcome is Outcome.INVALID
    user = f"redis://{redis_server.user}:{redis_server.user_password}@127.0.0.1:{redis_server.port}"
    assert run_database(spec("redisCacheUrlApi"), {"redisUrl": user}).outcome is Outcome.VALID


def mysql_type() -> registry.CredentialTypeSpec:
    return registry.type_from_object(
        {
            "metadata": {"name": "mariadbcheck"},
            "spec": {
                "name": "mariadbCheck",
                "inputs": [
                    {"name": "host", "type": "string"},
                    {"name": "port", "type": "number"},
                    {"name": "user", "type": "string"},
                    {"name": "password", "type": "password"},
                    {"name": "database", "type": "string"},
                ],
                "verify": {
                    "mysql": {
                        "host": "${host}",
                        "port": "${port}",
                        "user": "${user}",
                        "password": "${password}",
                        "database": "${database}",
                    }
                },
            },
        }
    )


def test_mariadb_right_and_wrong_password(mariadb_server: databases.MariaDBServer) -> None:
    fields = {"host": "127.0.0.1", "port": str(mariadb_server.port), "user": mariadb_server.user, "database": "checks"}
    assert run_database(mysql_type(), {**fields, "password": mariadb_server.password}).outcome is Outcome.VALID
    wrong = run_database(mysql_type(), {**fields, "password": CANARY})
    assert wrong.outcome is Outcome.INVALID and CANARY not in wrong.message
    other_db = run_database(mysql_type(), {**fields, "password": mariadb_server.password, "database": "mysql"})
    assert other_db.outcome is Outcome.FORBIDDEN


def test_a_database_host_off_the_allow_list_is_blocked(mariadb_server: databases.MariaDBServer) -> None:
    request = verification.build_probe(
        mysql_type(),
        {"host": "127.0.0.1", "port": str(mariadb_server.port), "user": "checker", "password": CANARY, "database": "x"},
    )
    assert isinstance(request, verification.DatabaseProbe)
    result = probing.probe(request, egress.EgressPolicy(), limits=FAST)
    assert result.outcome is Outcome.BLOCKED and "--verification-allow-host" in result.message
    loopback_only_by_name = egress.EgressPolicy(allow_hosts=("127.0.0.1",))
    refused = probing.probe(request, loopback_only_by_name, limits=FAST)
    assert refused.outcome is Outcome.BLOCKED and "loopback" in refused.message


def test_no_result_plan_or_warning_carries_a_value(standin: vendors.VendorStandIn, vendor_ca: tls.Issued) -> None:
    """The canary scan for verification's outputs: results, conditions, Events and lint warnings."""
    outputs: list[str] = []
    for url in (
        "https://vendor.test/v1/models",
        "https://vendor.test/slow",
        "https://169.254.169.254/",
        "https://vendor.test/redirect",
    ):
        result = run(custom(url), {"apiKey": CANARY}, vendors.vendor_network(standin), vendor_ca)
        plan = verification.plan_verification({}, result, now=NOW, generation=1)
        outputs += [repr(result), repr(plan)]
    outputs += [repr(verification.build_probe(spec("openAIApi"), {"openAIApiKey": CANARY + "\n"}))]
    outputs += [repr(lint.lint_values(spec("openAIApi"), {"openAIApiKey": f" sk-ant-{CANARY}\n"}))]
    assert outputs and not [text for text in outputs if CANARY in text]
