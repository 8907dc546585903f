"""Workload reads through the operator's endpoint, against the same client reading a plain Secret.

A Pod that reads its values through credbridge pays for a TokenReview (cached), a
SubjectAccessReview and a decryption per read; a Pod that mounts a plain Secret pays for one GET
on the API server. This benchmark puts the two side by side, on the same machine in the same run:

1. start the local control plane and `credbridge run` with the endpoint (rate limit raised out of
   the way: the limiter is not what is measured);
2. a Credential and a plain Secret holding the same value; a ServiceAccount allowed to `use` the
   one and `get` the other; a token for each audience;
3. the same keep-alive HTTPS client (`http.client`, verified TLS, Bearer token) reads each in
   alternating rounds, with 1 and with 4 concurrent connections;
4. the operator restarted with `--token-review-ttl 0`: the same reads without the TokenReview
   cache, to show what the cache is worth.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import pathlib
import ssl
import statistics
import time
from typing import Any

from kubernetes import client

from benchmarks import BenchmarkError, Options, Record, Result, progress, scenario_workdir
from credbridge.core import names
from credbridge.kube import connecting
from credbridge.local import controlplane, operator
from credbridge.testing import workloads

NAMES = ("reads",)
"""The benchmarks this module runs, as `--only` names them."""

NAMESPACE = "bench-reads"
OPERATOR_NAMESPACE = "credbridge-system"
VALUE = "sk-bench-" + "x" * 48
"""The value both the Credential and the plain Secret hold."""
CONCURRENCY = (1, 4)


def _seconds_per_round(options: Options) -> float:
    return 1.0 if options.quick else 4.0


def _rounds(options: Options) -> int:
    return 2 if options.quick else 3


class Target:
    """One thing to read: host, port, path, token and CA."""

    def __init__(self, port: int, path: str, token: str, ca_pem: str) -> None:
        self.port, self.path, self.token = port, path, token
        self.context = ssl.create_default_context(cadata=ca_pem)

    def read_for(self, seconds: float, stop_at: float | None = None) -> list[float]:
        """Reads over one kept-alive connection for `seconds`; returns each read's latency."""
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}"}
        latencies: list[float] = []
        deadline = stop_at or time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                connection.request("GET", self.path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    raise BenchmarkError(f"GET {self.path} answered {response.status}: {body[:300]!r}")
                latencies.append(time.perf_counter() - started)
        finally:
            connection.close()
        return latencies


def measure(target: Target, clients: int, seconds: float) -> tuple[float, list[float]]:
    """`clients` connections reading `target` at once for `seconds`: reads/s and every latency."""
    stop_at = time.monotonic() + seconds
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        started = time.monotonic()
        futures = [pool.submit(target.read_for, seconds, stop_at) for _ in range(clients)]
        latencies = [latency for future in futures for latency in future.result()]
        elapsed = time.monotonic() - started
    return len(latencies) / elapsed, latencies


def compare(subject: Target, baseline: Target, clients: int, options: Options) -> tuple[float, float, dict[str, Any]]:
    """Alternating rounds (baseline, subject, ...); the median round of each, and the raw rounds."""
    subject_rates, baseline_rates, subject_latencies, baseline_latencies = [], [], [], []
    for _ in range(_rounds(options)):
        rate, latencies = measure(baseline, clients, _seconds_per_round(options))
        baseline_rates.append(rate)
        baseline_latencies += latencies
        rate, latencies = measure(subject, clients, _seconds_per_round(options))
        subject_rates.append(rate)
        subject_latencies += latencies
    details = {
        "rounds": {"subject": subject_rates, "baseline": baseline_rates},
        "p50_ms": {
            "subject": statistics.median(subject_latencies) * 1000,
            "baseline": statistics.median(baseline_latencies) * 1000,
        },
        "reads": {"subject": len(subject_latencies), "baseline": len(baseline_latencies)},
    }
    return statistics.median(subject_rates), statistics.median(baseline_rates), details


def _metric(process: operator.OperatorProcess, sample: str) -> float:
    for line in process.metrics().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Scenario:
    def __init__(self, options: Options, record: Record, workdir: pathlib.Path) -> None:
        self.options, self.record, self.workdir = options, record, workdir
        self.plane: controlplane.ControlPlane | None = None
        self.operator: operator.OperatorProcess | None = None
        self.certificate = workloads.endpoint_certificate(workdir / "endpoint-cert")
        self.starts = 0

    def start_operator(self, token_review_ttl: float) -> operator.OperatorProcess:
        assert self.plane is not None
        if self.operator is not None:
            self.operator.stop()
        log = self.workdir / f"operator-{self.starts}.log"
        self.starts += 1
        progress(f"reads: starting `credbridge run` with --token-review-ttl {token_review_ttl:g} (log: {log})")
        args = [
            "--operator-namespace",
            OPERATOR_NAMESPACE,
            "--webhook-port",
            "0",
            *self.certificate.args,
            "--read-rate",
            "1000000",
            "--read-burst",
            "1000000",
            "--token-review-ttl",
            str(token_review_ttl),
        ]
        for attempt in (1, 2, 3):
            try:
                self.operator = operator.start(self.plane.kubeconfig, log, args=args)
                break
            except RuntimeError as error:
                # The free ports it was given can be taken by another process before it binds them
                # (a busy shared machine): start again with new ones.
                if "address already in use" not in str(error) or attempt == 3:
                    raise
                progress("reads: a port was taken meanwhile; starting the operator again")
        assert self.operator is not None
        return self.operator

    def setup(self) -> tuple[Target, Target]:
        progress(f"reads: starting the local control plane in {self.workdir}")
        self.plane = controlplane.start(self.workdir / "controlplane", progress=True)
        self.plane.install_crds()
        api = connecting.api_client(str(self.plane.kubeconfig))
        core = client.CoreV1Api(api)
        for namespace in (OPERATOR_NAMESPACE, NAMESPACE):
            core.create_namespace({"metadata": {"name": namespace, "labels": {"created-by": "credbridge-bench"}}})
        self.start_operator(token_review_ttl=10.0)
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            NAMESPACE,
            names.CREDENTIAL_PLURAL,
            {
                "apiVersion": names.API_VERSION,
                "kind": names.CREDENTIAL_KIND,
                "metadata": {"name": "openai"},
                "spec": {"type": "openAIApi", "data": {"openAIApiKey": VALUE}},
            },
        )
        core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": "plain"}, "stringData": {"openAIApiKey": VALUE}})
        workloads.create_service_account(api, NAMESPACE, "reader")
        workloads.grant_use(api, NAMESPACE, "reader", names.CREDENTIAL_PLURAL, ["openai"])
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            NAMESPACE,
            {
                "metadata": {"name": "get-plain"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["plain"], "verbs": ["get"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            NAMESPACE,
            {
                "metadata": {"name": "get-plain"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "get-plain"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NAMESPACE}],
            },
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = custom.get_namespaced_custom_object(
                names.GROUP, names.VERSION, NAMESPACE, names.CREDENTIAL_PLURAL, "openai"
            ).get("status", {})
            if any(c.get("status") == "True" for c in status.get("conditions", []) if c.get("type") == "Ready"):
                break
            time.sleep(0.2)
        else:
            raise BenchmarkError("reads: the Credential did not become Ready within 60 s")
        assert self.plane.ca_file is not None
        api_port = int(self.plane.server.rsplit(":", 1)[1])
        baseline = Target(
            api_port,
            f"/api/v1/namespaces/{NAMESPACE}/secrets/plain",
            workloads.request_token(api, NAMESPACE, "reader", audiences=(), seconds=3600),
            self.plane.ca_file.read_text(),
        )
        endpoint_token = workloads.request_token(api, NAMESPACE, "reader", seconds=3600)
        subject = Target(0, f"/v1/namespaces/{NAMESPACE}/credentials/openai", endpoint_token, self.certificate.ca_pem)
        return subject, baseline

    def run(self) -> None:
        subject, baseline = self.setup()
        assert self.operator is not None
        subject.port = self.operator.endpoint_port
        rss_before = _rss(self.operator.popen.pid)
        cache_on_rate = 0.0
        for clients in CONCURRENCY:
            progress(f"reads: {clients} client(s), {_rounds(self.options)} alternating rounds")
            rate, baseline_rate, details = compare(subject, baseline, clients, self.options)
            if clients == 1:
                cache_on_rate = rate
            details["token_reviews"] = _metric(self.operator, 'credbridge_token_reviews_total{source="reviewed"}')
            details["operator_rss_mib"] = {"before": rss_before, "after": _rss(self.operator.popen.pid)}
            self.record(
                Result(
                    benchmark="reads",
                    name=f"workload reads ({clients} client{'s' if clients > 1 else ''})",
                    value=rate,
                    unit="reads/s",
                    baseline_name=f"plain Secret GET ({clients} client{'s' if clients > 1 else ''})",
                    baseline_value=baseline_rate,
                    note=(
                        "the same keep-alive HTTPS client with a Bearer token: the operator's endpoint (TokenReview "
                        "cached, SubjectAccessReview, decryption) vs the API server's GET of a plain Secret"
                    ),
                    details=details,
                )
            )
        operator_ = self.start_operator(token_review_ttl=0.0)
        subject.port = operator_.endpoint_port
        progress("reads: 1 client, TokenReview cache off")
        rates, latencies = [], []
        for _ in range(_rounds(self.options)):
            rate, round_latencies = measure(subject, 1, _seconds_per_round(self.options))
            rates.append(rate)
            latencies += round_latencies
        self.record(
            Result(
                benchmark="reads",
                name="workload reads, TokenReview cache off (1 client)",
                value=statistics.median(rates),
                unit="reads/s",
                baseline_name="workload reads, cache on (1 client)",
                baseline_value=cache_on_rate,
                note="--token-review-ttl 0: one TokenReview per read; the ratio is what the cache saves",
                details={
                    "rounds": rates,
                    "p50_ms": statistics.median(latencies) * 1000,
                    "token_reviews": _metric(operator_, 'credbridge_token_reviews_total{source="reviewed"}'),
                },
            )
        )

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        if self.plane is not None:
            self.plane.stop()


def _rss(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(options: Options, record: Record) -> None:
    """Runs the reads benchmark on a fresh local control plane; stops what it started, whatever happens."""
    if controlplane.use_existing_cluster():
        raise BenchmarkError(
            "the reads benchmark only runs on the local control plane: unset CREDBRIDGE_USE_EXISTING_CLUSTER"
        )
    with scenario_workdir("reads", "reads") as workdir:
        scenario = Scenario(options, record, workdir)
        try:
            scenario.run()
        finally:
            progress("reads: stopping the operator and the control plane")
            scenario.stop()
