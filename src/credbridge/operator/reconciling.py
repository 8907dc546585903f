"""The reconcile contract every controller of the operator keeps, in the style of controller-runtime's
`reconcile.Result`.

A reconcile returns a `Result`: the outcome (a short label for the metric and the log) and what
the work queue should do next — nothing (the next watch event brings the key back), run again
after a delay (a debounce, a periodic look, a time when something expires), or retry with the
queue's exponential backoff (a transient failure: a server down, a write refused). Exceptions are
for bugs and for API errors nobody planned for; they are retried with backoff too, and counted
as `error`. No controller raises to ask for a retry.

`instrumented` wraps a reconcile function so that every controller is measured the same way:
reconciles by controller and outcome, their duration, and (through the queue) the queue's depth.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

from credbridge.operator import metrics

Key = TypeVar("Key", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class Result:
    """What one reconcile did, and when the work queue should bring the key back."""

    outcome: str
    """Label for `credbridge_reconciles_total{result}`: written, unchanged, failed:<Reason>, waiting..."""
    requeue_after: float | None = None
    """Seconds until the key runs again without an event; None: only when an event asks."""
    retry: bool = False
    """True for a transient failure: run again with the queue's backoff (which grows per failure)."""

    @classmethod
    def done(cls, outcome: str) -> Result:
        return cls(outcome)

    @classmethod
    def after(cls, outcome: str, seconds: float) -> Result:
        return cls(outcome, requeue_after=max(0.0, seconds))

    @classmethod
    def retry_later(cls, outcome: str) -> Result:
        return cls(outcome, retry=True)

    def sooner(self, seconds: float | None) -> Result:
        """This result, brought back no later than `seconds` (None: no change)."""
        if seconds is None or (self.requeue_after is not None and self.requeue_after <= seconds):
            return self
        return dataclasses.replace(self, requeue_after=max(0.0, seconds))


def instrumented(controller: str | Callable[[Key], str], reconcile: Callable[[Key], Result]) -> Callable[[Key], Result]:
    """`reconcile`, counted by outcome and timed, under the label `controller` (or the label it gives a key:
    Credentials and their mirrors are told apart)."""

    def run(key: Key) -> Result:
        label = controller if isinstance(controller, str) else controller(key)
        started = time.perf_counter()
        try:
            result = reconcile(key)
        except Exception:
            metrics.RECONCILES.labels(label, "error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.labels(label).observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(label, result.outcome).inc()
        return result

    return run
