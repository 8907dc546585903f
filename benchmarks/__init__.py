"""credbridge benchmarks: speed, memory and API-write figures, each next to a baseline from the same run.

Wall-clock limits in tests are flaky and say nothing on a slower machine, so speed and memory are
measured here instead (`make bench`, `python -m benchmarks`), and every figure is printed next to a
baseline measured in the same run on the same machine: the ratio is what carries over from one
machine to another, not the absolute number.

This module holds what the benchmark groups share: the `Result` row they record, the `Options`
they are run with, and the progress messages they print on stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["BenchmarkError", "Options", "Record", "Result", "progress", "scenario_workdir"]

_STARTED = time.monotonic()


class BenchmarkError(RuntimeError):
    """A benchmark could not run (not: it ran slowly); the message says what failed."""


@dataclasses.dataclass(frozen=True)
class Options:
    """How the benchmarks are run, from the command line."""

    quick: bool = False
    """Smoke run (about a minute): shorter timing loops, 30 Credentials instead of 200."""
    selected: frozenset[str] = frozenset()
    """Benchmark names to run; empty means all of them."""
    sizes: tuple[int, ...] = ()
    """Numbers of Credentials for the cluster scenario, one fresh control plane each; empty means the defaults."""
    operator_args: tuple[str, ...] = ()
    """Extra `credbridge run` flags for the cluster scenario's operator (to compare settings)."""
    profile_dir: pathlib.Path | None = None
    """Where py-spy profiles of the operator go (create and restart phases); None means no profiling."""

    def wants(self, name: str) -> bool:
        """Tells whether the benchmark `name` is to run."""
        return not self.selected or name in self.selected


@dataclasses.dataclass(frozen=True)
class Result:
    """One row of the table: a figure and the baseline it is compared with."""

    benchmark: str
    """The benchmark (what `--only` selects) this row belongs to."""
    name: str
    """Row name, unique in a run."""
    value: float
    """The measured figure."""
    unit: str
    """Unit of `value` (and of `baseline_value` unless `baseline_unit` says otherwise)."""
    baseline_name: str
    """What the figure is compared with."""
    baseline_value: float
    """The baseline figure, measured in the same run (or a documented target)."""
    baseline_unit: str | None = None
    """Unit of `baseline_value` when it differs from `unit`."""
    note: str = ""
    """One line on how to read the row (shown under the table and kept in the JSON)."""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Raw numbers behind the row (samples, counts, evidence), kept in the JSON only."""

    @property
    def ratio(self) -> float | None:
        """value / baseline_value, or None when the baseline is zero."""
        return None if self.baseline_value == 0 else self.value / self.baseline_value

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-ready dict, ratio included."""
        return {**dataclasses.asdict(self), "ratio": self.ratio}


Record = Callable[[Result], None]
"""Takes a finished row; benchmarks record rows as they go, so a later failure keeps them."""


def progress(message: str) -> None:
    """Prints a progress line on stderr with the seconds elapsed since the run started."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def scenario_workdir(prefix: str, label: str) -> Iterator[pathlib.Path]:
    """A fresh directory for one cluster scenario's processes and logs.

    Removed when the scenario succeeds, kept (and named on stderr) when it fails. A control plane
    that does not start, or a command that fails, becomes a BenchmarkError that says why. Stop the
    scenario's processes inside the `with` block, so they are gone before the directory is.
    """
    from credbridge.local import controlplane

    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"credbridge-bench-{prefix}-"))
    succeeded = False
    try:
        yield workdir
        succeeded = True
    except controlplane.ControlPlaneError as error:
        raise BenchmarkError(f"the control plane did not start: {error}") from error
    except subprocess.CalledProcessError as error:
        raise BenchmarkError(f"`{' '.join(error.cmd)}` failed: {(error.stderr or '').strip()}") from error
    finally:
        if succeeded:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            progress(f"{label}: logs kept in {workdir}")
