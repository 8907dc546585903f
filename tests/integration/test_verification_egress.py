"""The attacks of issue 16 through the operator: a check must never carry a key where the admin did not allow.

CredentialTypes point their checks at the cloud metadata address, at loopback, at a private
address, at a name whose answer includes a private address (DNS rebinding: the operator looks a
name up once and judges every answer), at a server that redirects, never answers, answers 100 MiB
or shows a certificate for another name; a Credential's base-URL field is edited to an attacker's
host. Listeners stand where the key would land and must receive nothing.

The stand-in for vendor.test listens on 127.0.0.2, the attacker on 127.0.0.3; only 127.0.0.2/31
is an allowed network, so what keeps the key from the attacker is the host allow-list alone.
"""

from __future__ import annotations

import collections.abc
import secrets
import typing

import pytest
from kubernetes import client

from credbridge import tls
from credbridge.core import verification
from credbridge.testing import objects, vendors

pytestmark = [pytest.mark.cluster, pytest.mark.services]

CANARY = "canary-egress-" + secrets.token_hex(8)
TIMEOUT = 5


@pytest.fixture(scope="module")
def standin(vendor_ca: tls.Issued) -> collections.abc.Iterator[vendors.VendorStandIn]:
    server = vendors.VendorStandIn(vendor_ca, (*vendors.VENDOR_HOSTS, "attacker.test"), address="127.0.0.2").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def attacker() -> collections.abc.Iterator[vendors.Listener]:
    """The attacker's host, reachable as far as the network and the allowed networks go."""
    listener = vendors.Listener("127.0.0.3")
    yield listener
    listener.stop()


@pytest.fixture(scope="module")
def loopback() -> collections.abc.Iterator[vendors.Listener]:
    """Something on the operator's own loopback (a sidecar, a local admin port)."""
    listener = vendors.Listener("127.0.0.1")
    yield listener
    listener.stop()


@pytest.fixture(scope="module")
def operator_args(
    vendor_ca: tls.Issued,
    standin: vendors.VendorStandIn,
    attacker: vendors.Listener,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[str]:
    ca_file = vendors.write_ca(vendor_ca, tmp_path_factory.mktemp("egress"))
    return [
        *vendors.resolve_args(standin, ("vendor.test", "wrong-name.test")),
        f"--verification-resolve=attacker.test:443=127.0.0.3:{attacker.port}",
        "--verification-resolve=rebind.test=203.0.113.10",
        "--verification-resolve=rebind.test=10.9.9.9",
        "--verification-allow-host=vendor.test",
        "--verification-allow-network=127.0.0.2/31",
        f"--verification-ca-file={ca_file}",
        f"--verification-timeout={TIMEOUT}",
        "--verification-debounce=1",
    ]


def check_type(kube_api: client.ApiClient, url: str) -> str:
    type_name = "egress" + secrets.token_hex(4)
    objects.create_credential_type(
        kube_api,
        type_name,
        {
            "inputs": [{"name": "apiKey", "label": "API key", "type": "password"}],
            "verify": {"http": {"url": url, "headers": {"Authorization": "Bearer ${apiKey}"}}},
        },
    )
    return type_name


def checked(kube_api: client.ApiClient, namespace: str, name: str, type_name: str, key: str, reason: str) -> str:
    """Creates a Credential of `type_name` holding `key`, waits for `reason`; returns the Verified message."""
    objects.create_credential_when_type_known(
        kube_api, namespace, objects.credential_body(name, type_name, {"apiKey": key})
    )
    credential = objects.wait_for_verified(kube_api, namespace, name, reason, timeout=120)
    found = objects.condition(credential, verification.VERIFIED)
    assert found is not None
    message = str(found["message"])
    assert key not in message
    return message


@pytest.fixture
def types(kube_api: client.ApiClient) -> collections.abc.Iterator[list[str]]:
    made: list[str] = []
    yield made
    for type_name in made:
        objects.delete_credential_type(kube_api, type_name)


def test_checks_aimed_at_metadata_loopback_and_private_addresses_are_blocked_and_send_nothing(
    kube_api: client.ApiClient,
    namespace: str,
    loopback: vendors.Listener,
    types: list[str],
    credbridge_operator: typing.Any,
) -> None:
    aims = {
        "metadata": ("https://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        "loopback": (f"https://127.0.0.1:{loopback.port}/v1/models", "loopback address"),
        "private": ("https://10.1.2.3/v1/models", "private address"),
        "rebinding": ("https://rebind.test/v1/models", "10.9.9.9"),
    }
    made = {name: check_type(kube_api, url) for name, (url, _) in aims.items()}
    types.extend(made.values())
    for name, (_, why) in aims.items():
        message = checked(kube_api, namespace, name, made[name], CANARY, "VerificationBlocked")
        assert why in message and "--verification-allow-network" in message, message
    assert (loopback.connections, loopback.bytes_received) == (0, 0)


def test_a_base_url_edited_to_an_attackers_host_never_reaches_it(
    kube_api: client.ApiClient,
    namespace: str,
    standin: vendors.VendorStandIn,
    attacker: vendors.Listener,
    types: list[str],
    credbridge_operator: typing.Any,
) -> None:
    type_name = "selfHosted" + secrets.token_hex(4)
    objects.create_credential_type(
        kube_api,
        type_name,
        {
            "inputs": [
                {"name": "apiKey", "label": "API key", "type": "password"},
                {"name": "endpoint", "label": "Endpoint", "type": "url"},
            ],
            "verify": {
                "http": {
                    "baseURLField": "endpoint",
                    "path": "/v1/models",
                    "headers": {"Authorization": "Bearer ${apiKey}"},
                }
            },
        },
    )
    types.append(type_name)
    objects.create_credential_when_type_known(
        kube_api,
        namespace,
        objects.credential_body(
            "self-hosted", type_name, {"apiKey": vendors.VALID_KEY, "endpoint": "https://vendor.test"}
        ),
    )
    objects.wait_for_verified(kube_api, namespace, "self-hosted", "Valid", timeout=120)
    assert any(request.host == "vendor.test" for request in standin.requests)

    objects.patch_credential(
        kube_api, namespace, "self-hosted", {"spec": {"data": {"endpoint": f"https://attacker.test:{attacker.port}"}}}
    )
    credential = objects.wait_for_verified(kube_api, namespace, "self-hosted", "VerificationBlocked", timeout=120)
    message = objects.condition(credential, verification.VERIFIED)["message"]  # type: ignore[index]
    assert "attacker.test" in message and "--verification-allow-host" in message
    assert (attacker.connections, attacker.bytes_received) == (0, 0)
    assert "VerificationBlocked" in [e.get("reason") for e in objects.events_for(kube_api, namespace, "self-hosted")]


def test_redirects_silence_huge_answers_and_wrong_certificates_end_safely(
    kube_api: client.ApiClient,
    namespace: str,
    standin: vendors.VendorStandIn,
    attacker: vendors.Listener,
    types: list[str],
    credbridge_operator: typing.Any,
) -> None:
    made = {
        "redirect": check_type(kube_api, "https://vendor.test/redirect"),
        "slow": check_type(kube_api, "https://vendor.test/slow"),
        "huge": check_type(kube_api, "https://vendor.test/huge"),
        "wrong-name": check_type(kube_api, "https://wrong-name.test/v1/models"),
    }
    types.extend(made.values())
    assert "redirect" in checked(kube_api, namespace, "redirect", made["redirect"], CANARY, "NotVerifiable")
    assert f"within {TIMEOUT} seconds" in checked(kube_api, namespace, "slow", made["slow"], CANARY, "Unreachable")
    # Decided from the status line: the 100 MiB body is never read.
    checked(kube_api, namespace, "huge", made["huge"], vendors.VALID_KEY, "Valid")
    message = checked(kube_api, namespace, "wrong-name", made["wrong-name"], CANARY, "Unreachable")
    assert "not valid for wrong-name.test" in message
    assert not [request for request in standin.requests if request.host == "wrong-name.test"]
    assert (attacker.connections, attacker.bytes_received) == (0, 0)
    assert credbridge_operator.process.alive()
