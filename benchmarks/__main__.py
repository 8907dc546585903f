"""`python -m benchmarks`: run the benchmarks, print a table, save the figures as JSON.

The exit code says whether every selected benchmark could run, never whether it was fast: a slow
figure is information for a human, a benchmark that could not run is a failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import (
    BenchmarkError,
    Options,
    Record,
    Result,
    bindings,
    cluster,
    crypto,
    flowise,
    oauth2,
    progress,
    reads,
    verification,
)

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Group:
    """Benchmarks that run together (the cluster ones share one control plane)."""

    names: tuple[str, ...]
    run: Callable[[Options, Record], None]


GROUPS = (
    Group(("envelope",), crypto.bench_envelope),
    Group(("sealing",), crypto.bench_sealing),
    Group(("validation",), crypto.bench_validation),
    Group(cluster.NAMES, cluster.run),
    Group(bindings.NAMES, bindings.run),
    Group(reads.NAMES, reads.run),
    Group(flowise.NAMES, flowise.run),
    Group(oauth2.NAMES, oauth2.run),
    Group(verification.NAMES, verification.run),
)
ALL_NAMES = tuple(name for group in GROUPS for name in group.names)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Run credbridge's speed, memory and API-write benchmarks, each against a baseline measured "
            "in the same run. Progress goes to stderr, the table to stdout, the figures to "
            f"{RESULTS_DIR.relative_to(REPO_ROOT)}/<UTC timestamp>.json and latest.json."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run of about a minute: short timing loops, 30 Credentials"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=ALL_NAMES,
        default=[],
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(ALL_NAMES)}",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=(),
        metavar="N[,N...]",
        help=f"numbers of Credentials for the cluster scenario (default {','.join(map(str, cluster.DEFAULT_SIZES))})",
    )
    parser.add_argument(
        "--operator-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra `credbridge run` flag for the cluster scenario, e.g. --operator-arg=--workers=32 (repeatable)",
    )
    parser.add_argument(
        "--profile",
        type=pathlib.Path,
        default=None,
        metavar="DIR",
        help="sample the operator with py-spy while Credentials are created and re-verified; speedscope files in DIR",
    )
    parser.add_argument(
        "--output-dir", type=pathlib.Path, default=RESULTS_DIR, help="where to write the JSON (default: %(default)s)"
    )
    return parser.parse_args(argv)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError("sizes must be positive numbers, e.g. 1000,3000,10000")
    return values


def run(options: Options) -> tuple[list[Result], list[dict[str, Any]]]:
    """Runs the selected groups; returns the rows and, for each group that could not finish, why."""
    results: list[Result] = []
    failures: list[dict[str, Any]] = []
    for group in GROUPS:
        if not any(options.wants(name) for name in group.names):
            continue
        started = time.monotonic()
        try:
            group.run(options, results.append)
        except BenchmarkError as error:
            failures.append({"benchmarks": list(group.names), "error": str(error)})
            progress(f"FAILED {'/'.join(group.names)}: {error}")
        except Exception as error:  # report it and run the other groups
            failures.append({"benchmarks": list(group.names), "error": f"{type(error).__name__}: {error}"})
            progress(f"FAILED {'/'.join(group.names)}: {type(error).__name__}: {error}")
        else:
            progress(f"done {'/'.join(group.names)} in {time.monotonic() - started:.1f}s")
    return results, failures


def number(value: float | None) -> str:
    """A figure with three significant digits (whole numbers above 1000), or '—' when absent."""
    if value is None or value != value:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(results: Sequence[Result]) -> str:
    """The rows as an aligned text table (also valid Markdown), then one note per row."""
    header = ("benchmark", "value", "unit", "baseline", "baseline value", "ratio")
    rows = [
        (
            result.name,
            number(result.value),
            result.unit,
            result.baseline_name,
            f"{number(result.baseline_value)} {result.baseline_unit or result.unit}",
            "—" if result.ratio is None else f"{result.ratio:.2f}",
        )
        for result in results
    ]
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    right = {1, 4, 5}

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    lines = [line(header), rule, *(line(row) for row in rows)]
    notes = [f"- {result.name}: {result.note}" for result in results if result.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_facts() -> dict[str, Any]:
    """What the figures depend on: CPUs, Python, the commit, the control plane build."""
    status = _git("status", "--porcelain")
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }
    try:
        from credbridge.local import controlplane

        binaries = controlplane.Binaries.locate()
        facts["kubernetes"] = binaries.kube_apiserver.parent.name
        facts["etcd"] = binaries.etcd.parent.name
    except Exception:  # facts are best effort; the cluster group reports its own failure
        facts["kubernetes"] = None
    return facts


def _cpu_model() -> str | None:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def write_json(
    directory: pathlib.Path,
    started: datetime.datetime,
    options: Options,
    results: Sequence[Result],
    failures: Sequence[dict[str, Any]],
    load_at_start: Sequence[float],
) -> pathlib.Path:
    """Writes `<UTC timestamp>.json` and `latest.json`; returns the timestamped path."""
    document = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "options": {
            "quick": options.quick,
            "only": sorted(options.selected),
            "sizes": list(options.sizes),
            "operator_args": list(options.operator_args),
        },
        "machine": machine_facts(),
        # Other work on the machine moves every figure; the load average tells a reader whether it was busy.
        "load_average": {"start": list(load_at_start), "end": list(os.getloadavg())},
        "results": [result.to_json() for result in results],
        "failures": list(failures),
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(
        quick=args.quick,
        selected=frozenset(args.only),
        sizes=args.sizes,
        profile_dir=args.profile,
        operator_args=tuple(args.operator_arg),
    )
    started = datetime.datetime.now(datetime.UTC)
    load_at_start = os.getloadavg()
    progress(f"benchmarks: {', '.join(n for n in ALL_NAMES if options.wants(n))}{' (quick)' if options.quick else ''}")
    try:
        results, failures = run(options)
    except KeyboardInterrupt:
        progress("interrupted; nothing saved")
        return 130
    print(table(results) if results else "no results")
    for failure in failures:
        print(f"\nCOULD NOT RUN {'/'.join(failure['benchmarks'])}: {failure['error']}")
    path = write_json(args.output_dir, started, options, results, failures, load_at_start)
    progress(f"saved {path} and {path.with_name('latest.json')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
