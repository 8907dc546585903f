"""Benchmark on a real local control plane and a real OAuth2 provider: the operator's token refresh.

N OAuth2 Credentials (N=50, 10 with --quick), each authorized once at the test provider (oidc-provider,
20-second access tokens, refresh tokens rotated on every refresh). The scenario:

1. start the control plane and `credbridge run` with the refresh off (`--no-oauth2`); create the N
   Credentials, their client Secrets and token Secrets whose access tokens have already expired;
   wait until every Credential is Ready;
2. restart the operator with the refresh on: every Credential is due at once. Refreshes per second
   is (N - 1) divided by the time between the first and the last refreshed token's receipt (the
   `token_received_at` the operator stored), i.e. how fast the controller drains a backlog with its
   default workers; baseline: the benchmark sending the same number of token requests itself, one
   after another (the provider's and the network's share of the cost);
3. the next round, when each token reaches its planned refresh (75 % of its lifetime less a jitter):
   every write the operator made in the namespace from the audit log, Events excluded, divided by
   the refreshes (target: the token Secret, the OAuth2 status, the managed Secret re-encrypted, the
   Credential's status: 4), and the same from the operator's own `credbridge_api_writes_total`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import pathlib
import secrets
import time
import urllib.error
from typing import Any

from kubernetes import client

from benchmarks import BenchmarkError, Options, Record, Result, cluster, progress, scenario_workdir
from credbridge.core import names
from credbridge.core.oauth2 import outcomes, tokens
from credbridge.local import controlplane, oauth2provider
from credbridge.oauth2client import client as token_client
from credbridge.testing import oauth2 as oauth2_testing

NAMES = ("oauth2",)
"""The benchmarks this module runs, as `--only` names them."""

CLIENT = "rotating"
TOKEN_SECONDS = 20
"""Access token lifetime at the benchmark's provider: the steady round comes ~14 seconds after the burst."""
WRITES_PER_REFRESH_TARGET = 4
"""Token Secret patch, OAuth2 status patch, managed Secret update, Credential status patch."""


def credential_count(options: Options) -> int:
    return 10 if options.quick else 50


class RefreshScenario(cluster.Scenario):
    """The cluster scenario's processes, with OAuth2 Credentials and a provider."""

    def __init__(self, options: Options, record: Record, workdir: pathlib.Path, count: int) -> None:
        super().__init__(options, record, workdir, count, first=False)
        self.provider: oauth2provider.OAuth2Provider | None = None
        self.refresh = True
        self.type_name = f"benchOAuth2{secrets.token_hex(3)}"

    def start_operator(self) -> Any:
        assert self.provider is not None
        extra = oauth2_testing.refresh_args(self.provider) if self.refresh else ["--no-oauth2"]
        saved = self.options
        self.options = dataclasses.replace(saved, operator_args=(*saved.operator_args, *extra))
        try:
            return super().start_operator()
        finally:
            self.options = saved

    def start_provider(self) -> None:
        self.provider = oauth2provider.start_provider(self.workdir / "provider", access_token_seconds=TOKEN_SECONDS)

    def stop(self) -> None:
        super().stop()
        if self.provider is not None:
            self.provider.stop_process()

    def names(self) -> list[str]:
        return [f"mail-{index:03d}" for index in range(self.count)]

    def create_credentials_due_now(self) -> None:
        assert self.api is not None and self.provider is not None and self.plane is not None
        spec = oauth2_testing.oauth2_type(self.type_name, "authorization_code")
        oauth2_testing.create_oauth2_type(self.api, spec)
        core, custom = client.CoreV1Api(self.api), client.CustomObjectsApi(self.api)
        progress(f"oauth2: authorizing {self.count} grants at the provider and creating their Credentials")
        long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
        for name in self.names():
            got = oauth2_testing.authorize_tokens(self.provider, CLIENT)
            # Received an hour ago: the access token has expired, the refresh is due as soon as the operator looks.
            stale = tokens.TokenSet(
                access_token=got.access_token,
                token_type=got.token_type,
                received_at=long_ago,
                expires_at=long_ago + datetime.timedelta(seconds=TOKEN_SECONDS),
                refresh_token=got.refresh_token,
                refresh_token_rotated=False,
            )
            credential, client_secret = oauth2_testing.credential_objects(
                self.provider, CLIENT, name=name, type_name=spec.name
            )
            credential["metadata"]["labels"] = {**credential["metadata"]["labels"], **cluster.BENCH_LABEL}
            core.create_namespaced_secret(cluster.BENCH_NAMESPACE, client_secret)
            oauth2_testing.store_tokens(self.api, cluster.BENCH_NAMESPACE, name, stale)
            custom.create_namespaced_custom_object(
                names.GROUP, names.VERSION, cluster.BENCH_NAMESPACE, names.CREDENTIAL_PLURAL, credential
            )
        deadline = time.monotonic() + 120.0 + self.count
        while time.monotonic() < deadline:
            listed = custom.list_namespaced_custom_object(
                names.GROUP, names.VERSION, cluster.BENCH_NAMESPACE, names.CREDENTIAL_PLURAL
            )["items"]
            ready = [
                item
                for item in listed
                if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (item.get("status") or {}).get("conditions") or ()
                )
            ]
            if len(ready) >= self.count:
                return
            time.sleep(0.5)
        raise BenchmarkError(f"oauth2: not every Credential became Ready within {120 + self.count}s")

    def received(self) -> dict[str, datetime.datetime]:
        """When each Credential's stored access token was received (from its token Secret)."""
        assert self.api is not None
        found: dict[str, datetime.datetime] = {}
        for secret in client.CoreV1Api(self.api).list_namespaced_secret(cluster.BENCH_NAMESPACE).items:
            name = secret.metadata.name
            if not name.endswith("-tokens"):
                continue
            raw = (secret.data or {}).get(tokens.TOKEN_RECEIVED_AT)
            moment = tokens.parse_time(base64.b64decode(raw).decode()) if raw else None
            if moment is not None:
                found[name.removesuffix("-tokens")] = moment
        return found

    def wait_refreshed_after(self, since: datetime.datetime, timeout: float) -> dict[str, datetime.datetime]:
        """Waits until every Credential holds a token received after `since`; returns the receipts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            receipts = {name: moment for name, moment in self.received().items() if moment > since}
            if len(receipts) >= self.count:
                return receipts
            time.sleep(0.25)
        self._operator()
        raise BenchmarkError(f"oauth2: not every Credential was refreshed within {timeout:.0f}s")

    def api_writes(self) -> float:
        """The operator's own count of its API writes (credbridge_api_writes_total), Events excluded."""
        total = 0.0
        with contextlib.suppress(urllib.error.URLError, OSError):
            for line in self._operator().metrics().splitlines():
                if line.startswith("credbridge_api_writes_total{") and 'resource="events"' not in line:
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def burst(self) -> datetime.datetime:
        """Restarts the operator with the refresh on; every Credential is due: times the backlog."""
        assert self.provider is not None
        self._operator().stop()
        self.refresh = True
        started = datetime.datetime.now(datetime.UTC)
        progress(f"oauth2: starting the operator with the refresh on; {self.count} refreshes are due")
        self.start_operator()
        receipts = self.wait_refreshed_after(started, 120.0 + self.count)
        first, last = min(receipts.values()), max(receipts.values())
        seconds = max((last - first).total_seconds(), 1e-3)
        rate = (self.count - 1) / seconds
        baseline = self.direct_requests()
        self.record(
            Result(
                benchmark="oauth2",
                name=f"token refreshes per second ({self.count} due at once)",
                value=rate,
                unit="refreshes/s",
                baseline_name=f"{self.count} token requests by the benchmark",
                baseline_value=baseline,
                baseline_unit="requests/s",
                note="(N-1) / (last - first token_received_at) with the default --oauth2-workers, each refresh = "
                "request + token Secret + status; vs the same number of requests sent one after another",
                details={"count": self.count, "first_to_last_seconds": seconds},
            )
        )
        progress(f"oauth2: {rate:.1f} refreshes/s (direct requests: {baseline:.1f}/s)")
        return last

    def direct_requests(self) -> float:
        """Token requests per second the benchmark gets itself (client credentials, one after another)."""
        assert self.provider is not None
        config = oauth2_testing.provider_config(self.provider, "machine")
        sender = token_client.TokenClient(ca_pem=self.provider.ca_pem)
        started = time.monotonic()
        for _ in range(self.count):
            if not isinstance(sender.client_credentials(config), outcomes.Refreshed):
                raise BenchmarkError("oauth2: the provider refused the baseline's token request")
        return self.count / (time.monotonic() - started)

    def steady_round(self, after: datetime.datetime) -> None:
        """The next planned refresh of every Credential: the operator's writes per refresh."""
        assert self.audit is not None
        time.sleep(cluster._settle_seconds(self.options))
        assert self.provider is not None
        mark, counted = self.audit.mark(), self.api_writes()
        sent = oauth2_testing.requests_of(self.provider, "refresh_token", CLIENT)
        progress("oauth2: waiting for every Credential's planned refresh")
        self.wait_refreshed_after(after, TOKEN_SECONDS * 3 + self.count)
        time.sleep(cluster._settle_seconds(self.options) + 2)
        writes = [w for w in self._operator_writes(mark) if (w.get("objectRef") or {}).get("resource") != "events"]
        metered = self.api_writes() - counted
        refreshes = oauth2_testing.requests_of(self.provider, "refresh_token", CLIENT) - sent
        if refreshes < 1:
            raise BenchmarkError("oauth2: no refresh was counted in the steady round")
        self.record(
            Result(
                benchmark="oauth2",
                name="API writes per token refresh",
                value=len(writes) / refreshes,
                unit="writes/refresh",
                baseline_name="target: token Secret, OAuth2 status, managed Secret, status",
                baseline_value=WRITES_PER_REFRESH_TARGET,
                note="every operator write in the namespace during one planned round (Events not), from the audit "
                "log, divided by the token requests the provider answered; the operator's own count in details",
                details={
                    "writes": len(writes),
                    "refreshes": refreshes,
                    "api_writes_total_delta": metered,
                    "evidence": cluster._write_summary(writes),
                },
            )
        )
        progress(f"oauth2: {len(writes) / refreshes:.2f} writes per refresh ({metered:.0f} writes by its own count)")


def run(options: Options, record: Record) -> None:
    """Runs the OAuth2 scenario; stops every process it started, whatever happens."""
    if controlplane.use_existing_cluster():
        raise BenchmarkError("the oauth2 benchmark only runs on the local control plane")
    with scenario_workdir("oauth2", "oauth2") as workdir:
        scenario = RefreshScenario(options, record, workdir, credential_count(options))
        try:
            scenario.start_provider()
            scenario.refresh = False
            scenario.start_cluster()
            scenario.create_credentials_due_now()
            last = scenario.burst()
            scenario.steady_round(last)
        finally:
            progress("oauth2: stopping the operator, the provider and the control plane")
            scenario.stop()
