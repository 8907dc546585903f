"""A thousand Credentials of one type due for their check at once: the global rate holds, the operator keeps working.

The checks go to the vendor stand-in, which records when each request arrived. What is asserted
are outcomes: every Credential ends Valid after exactly one check each; a Credential created while
the checks are still going becomes Ready meanwhile (checks run on their own workers and wait for
their turn without holding anything); checks never arrive faster than the configured rate (an
upper bound, which a busy machine can only make easier to keep; the windows allow for requests
that bunch up in transit).
"""

from __future__ import annotations

import bisect
import concurrent.futures
import typing

import pytest
from kubernetes import client

from credbridge import tls
from credbridge.core import names
from credbridge.testing import objects, vendors

pytestmark = [pytest.mark.cluster, pytest.mark.services]

COUNT = 1000
RATE = 5.0
"""--verification-rate here: a thousand checks take at least 200 s, longer than creating them."""


@pytest.fixture(scope="module")
def operator_args(
    vendor_ca: tls.Issued, standin: vendors.VendorStandIn, tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    ca_file = vendors.write_ca(vendor_ca, tmp_path_factory.mktemp("scale"))
    return [
        *vendors.resolve_args(standin, ("api.openai.com",)),
        "--verification-allow-network=127.0.0.1/32",
        f"--verification-ca-file={ca_file}",
        f"--verification-rate={RATE:g}",
        "--verification-debounce=1",
        # Debug logging of 1,000 Credentials costs the machine more than the test needs.
        "--log-level=info",
    ]


def valid_count(api: client.ApiClient, namespace: str) -> int:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL
    )
    return sum(1 for item in listed["items"] if (objects.condition(item, "Verified") or {}).get("reason") == "Valid")


def most_in_any_window(times: list[float], seconds: float) -> int:
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, start + seconds) - index for index, start in enumerate(ordered))


@pytest.mark.timeout(1800)
def test_a_thousand_credentials_due_at_once_hold_the_global_rate_and_the_operator_keeps_reconciling(
    kube_api: client.ApiClient, namespace: str, standin: vendors.VendorStandIn, credbridge_operator: typing.Any
) -> None:
    def create(index: int) -> None:
        body = objects.credential_body(f"c{index:04d}", "openAIApi", {"openAIApiKey": vendors.VALID_KEY})
        objects.create_credential(kube_api, namespace, body)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(COUNT)))

    objects.wait_until(lambda: len(standin.requests) >= 10, 300, "the first checks")
    objects.create_credential(
        kube_api, namespace, objects.credential_body("newcomer", "tavilyApi", {"tavilyApiKey": "tvly-newcomer"})
    )
    objects.wait_for_reason(kube_api, namespace, "newcomer", "Encrypted", timeout=300)
    checked_meanwhile = len(standin.requests)
    waiting = max(
        (
            float(line.rsplit(" ", 1)[1])
            for line in credbridge_operator.process.metrics().splitlines()
            if line.startswith("credbridge_verification_waiting ")
        ),
        default=0.0,
    )
    assert checked_meanwhile < COUNT, "the newcomer was Ready only after every check: reconciling waited for them"

    objects.wait_until(lambda: valid_count(kube_api, namespace) == COUNT, 1500, f"all {COUNT} to be Valid")
    times = [request.at for request in standin.requests if request.path == "/v1/models"]
    assert len(times) == COUNT  # one check each, none repeated
    span = max(times) - min(times)
    assert (COUNT - 1) / span <= RATE * 1.05, f"{COUNT} checks in {span:.1f} s"
    assert most_in_any_window(times, 10.0) <= 10 * RATE + 2 * RATE
    assert waiting > 0  # the due checks were waiting for their turn, not all started
    assert credbridge_operator.process.alive()
