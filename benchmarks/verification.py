"""Benchmark on a real local control plane: Credentials checked against their service, periodically.

What verification costs the operator, and how fast it checks, at the defaults:

1. the cluster benchmarks' control plane, the vendor stand-in (`credbridge.testing.vendors`, a
   TLS server on 127.0.0.1 answering OpenAI's check path), and N openAIApi Credentials (10,000;
   100 with --quick) created and followed to Ready by an operator without verification;
2. without verification: the operator restarted with `--no-verification` and measured for a
   window of W seconds from its start (W = 90; 30 with --quick): CPU seconds, RSS at the end, peak
   RSS;
3. with verification: the same operator restarted with verification on, every default kept
   (`--verification-rate 2`, interval 6 h, debounce 10 s) except that the vendor's host leads to
   the stand-in; the same window. All N come due at once (never checked) and the global rate
   paces them: the busiest state periodic checks reach, since at most `rate` checks start per
   second however many are due (10,000 Credentials at 2/s take 83 minutes, less than the 6 h
   interval, so in a steady state the operator is idle between passes);
4. verifications per second: the checks the stand-in received in the window, first to last.
"""

from __future__ import annotations

import contextlib
import pathlib
import time
import urllib.error

from kubernetes import client

from benchmarks import BenchmarkError, Options, Record, Result, cluster, progress, scenario_workdir
from credbridge import tls
from credbridge.core import names
from credbridge.local import controlplane
from credbridge.operator import settings as settings_module
from credbridge.testing import vendors

NAMES = ("verification",)
"""The benchmarks this module runs, as `--only` names them."""

DEFAULT_COUNT = 10_000
QUICK_COUNT = 100


def window_seconds(options: Options) -> float:
    return 30.0 if options.quick else 90.0


def _credential_body(name: str) -> dict[str, object]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_KIND,
        "metadata": {"name": name, "labels": cluster.BENCH_LABEL},
        "spec": {"type": "openAIApi", "data": {"openAIApiKey": vendors.VALID_KEY}},
    }


class VerificationScenario(cluster.Scenario):
    """The cluster scenario's processes, N Credentials, and the operator run with and without verification."""

    def __init__(self, options: Options, record: Record, workdir: pathlib.Path, count: int) -> None:
        super().__init__(options, record, workdir, count, first=False)
        self.ca = tls.make_ca("credbridge-bench-vendors")
        self.standin = vendors.VendorStandIn(self.ca).start()
        self.ca_file = vendors.write_ca(self.ca, workdir)

    def stop(self) -> None:
        super().stop()
        self.standin.stop()

    def verification_flags(self) -> tuple[str, ...]:
        """Verification at its defaults, with the vendor's host leading to the stand-in."""
        return (
            *vendors.resolve_args(self.standin, ("api.openai.com",)),
            "--verification-allow-network=127.0.0.1/32",
            f"--verification-ca-file={self.ca_file}",
        )

    def create(self) -> None:
        assert self.api is not None
        watch_ = cluster.CredentialWatch(self.api, cluster.BENCH_NAMESPACE)
        self.watch = watch_
        watch_.start()
        custom = client.CustomObjectsApi(self.api)
        progress(f"verification: creating {self.count} openAIApi Credentials")

        def create(index: int) -> None:
            custom.create_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                cluster.BENCH_NAMESPACE,
                names.CREDENTIAL_PLURAL,
                _credential_body(f"cred-{index:05d}"),
            )

        cluster.in_parallel(range(self.count), create)
        timeout = 120.0 + self.count * 0.5
        if not watch_.wait_until(lambda: len(watch_.ready_at) >= self.count, timeout):
            self._operator()
            raise BenchmarkError(
                f"verification: only {len(watch_.ready_at)} of {self.count} Ready after {timeout:.0f}s"
            )
        progress(f"verification: all {self.count} Ready")

    def measure(self, flags: tuple[str, ...], label: str) -> dict[str, float]:
        """Restarts the operator with `flags` and measures it for the window from its start."""
        self._operator().stop()
        self.operator_flags = flags
        before = len(self.standin.requests)
        process = self.start_operator()
        pid = process.popen.pid
        started = time.monotonic()
        window = window_seconds(self.options)
        progress(f"verification: {label}: measuring the operator for {window:.0f}s from its start")
        time.sleep(window)
        self._operator()
        cpu = cluster.cpu_seconds(pid)
        rss, peak = cluster.rss_bytes(pid), cluster.peak_rss_bytes(pid)
        arrived = [request.at for request in self.standin.requests[before:] if request.at >= started]
        waiting = 0.0
        with contextlib.suppress(urllib.error.URLError, OSError):
            waiting = cluster._metric_sum(process, "credbridge_verification_waiting")
        mib = 1024 * 1024
        figures = {
            "cpu_seconds": cpu,
            "rss_mib": rss / mib,
            "peak_rss_mib": peak / mib,
            "checks": float(len(arrived)),
            "checks_per_second": (len(arrived) - 1) / (max(arrived) - min(arrived)) if len(arrived) > 1 else 0.0,
            "waiting_at_end": waiting,
        }
        progress(
            f"verification: {label}: CPU {cpu:.1f}s, RSS {figures['rss_mib']:.0f} MiB (peak "
            f"{figures['peak_rss_mib']:.0f}), {len(arrived)} checks ({figures['checks_per_second']:.2f}/s)"
        )
        return figures

    def report(self, without: dict[str, float], with_: dict[str, float]) -> None:
        window = window_seconds(self.options)
        rate = settings_module.VerificationSettings().per_second
        n = f"N={self.count:,}"
        self.record(
            Result(
                benchmark="verification",
                name=f"verifications/s at the default rate ({n})",
                value=with_["checks_per_second"],
                unit="checks/s",
                baseline_name="--verification-rate default (configured, not measured)",
                baseline_value=rate,
                note="checks the vendor stand-in received in the window, first to last; all N were due at once",
                details={"checks": with_["checks"], "waiting_at_end": with_["waiting_at_end"], "window_s": window},
            )
        )
        self.record(
            Result(
                benchmark="verification",
                name=f"operator CPU, {window:.0f} s from start, verifying ({n})",
                value=with_["cpu_seconds"],
                unit="CPU s",
                baseline_name="same, --no-verification",
                baseline_value=without["cpu_seconds"],
                note="user+system CPU of `credbridge run` in the window (start-up included): the cost of scheduling "
                "N checks under the global rate and running the ones it lets through",
                details={"with": with_, "without": without},
            )
        )
        self.record(
            Result(
                benchmark="verification",
                name=f"operator RSS, verifying ({n})",
                value=with_["rss_mib"],
                unit="MiB",
                baseline_name="same, --no-verification",
                baseline_value=without["rss_mib"],
                note="VmRSS at the end of the window; details has the peaks",
                details={"peak_with_mib": with_["peak_rss_mib"], "peak_without_mib": without["peak_rss_mib"]},
            )
        )


def count(options: Options) -> int:
    if options.sizes:
        return max(options.sizes)
    return QUICK_COUNT if options.quick else DEFAULT_COUNT


def run(options: Options, record: Record) -> None:
    """Runs the verification scenario; stops every process it started, whatever happens."""
    if controlplane.use_existing_cluster():
        raise BenchmarkError("the verification benchmark only runs on the local control plane")
    with scenario_workdir("verification", "verification") as workdir:
        scenario = VerificationScenario(options, record, workdir, count(options))
        try:
            scenario.start_cluster()
            scenario.create()
            if scenario.watch is not None:
                scenario.watch.stop()
            without = scenario.measure(("--no-verification",), "without verification")
            with_ = scenario.measure(scenario.verification_flags(), "with verification")
            if with_["checks"] == 0:
                raise BenchmarkError("verification: the stand-in received no check; see the operator log")
            scenario.report(without, with_)
        finally:
            progress("verification: stopping the operator, the stand-in and the control plane")
            scenario.stop()
