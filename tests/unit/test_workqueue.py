"""The work queue: deduplication, per-key serialization, retry with backoff, delays — with real threads."""

from __future__ import annotations

import collections
import collections.abc
import itertools
import logging
import threading
import time
import typing

import pytest

from credbridge.operator import metrics, reconciling, workqueue

TIMEOUT = 10.0
"""Generous: these tests wait for outcomes, and a loaded machine makes threads slow to wake."""
CANARY = "sk-canary-in-an-exception-71b2"


def eventually(predicate: collections.abc.Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until `predicate()` holds, polling briefly; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.002)


class Recorder:
    """A handler that records calls, can hold a key until released, and tracks concurrency per key."""

    def __init__(self, fail_times: int = 0, exception: type[Exception] = RuntimeError) -> None:
        self._lock = threading.Lock()
        self.calls: list[str] = []
        self.times: list[float] = []
        self.running: collections.Counter[str] = collections.Counter()
        self.max_running: collections.Counter[str] = collections.Counter()
        self.holds: dict[str, threading.Event] = {}
        self.started: dict[str, threading.Event] = collections.defaultdict(threading.Event)
        self._fail_times = fail_times
        self._exception = exception

    def hold(self, key: str) -> threading.Event:
        self.holds[key] = threading.Event()
        return self.holds[key]

    def count(self, key: str) -> int:
        with self._lock:
            return self.calls.count(key)

    def __call__(self, key: str) -> None:
        with self._lock:
            self.calls.append(key)
            self.times.append(time.monotonic())
            self.running[key] += 1
            self.max_running[key] = max(self.max_running[key], self.running[key])
            failing = self.calls.count(key) <= self._fail_times
        self.started[key].set()
        try:
            hold = self.holds.get(key)
            if hold is not None:
                assert hold.wait(TIMEOUT)
            if failing:
                raise self._exception(CANARY)
        finally:
            with self._lock:
                self.running[key] -= 1


@pytest.fixture
def make_queue() -> collections.abc.Iterator[collections.abc.Callable[..., workqueue.WorkQueue[str]]]:
    queues: list[workqueue.WorkQueue[str]] = []

    def make(handler: collections.abc.Callable[[str], None], **kwargs: typing.Any) -> workqueue.WorkQueue[str]:
        queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(handler, **kwargs)
        queue.start()
        queues.append(queue)
        return queue

    yield make
    for holder in queues:
        holder.stop()


def test_many_adds_of_a_waiting_key_run_the_handler_once(make_queue: typing.Any) -> None:
    handler = Recorder()
    release = handler.hold("blocker")
    queue = make_queue(handler, workers=1)
    queue.add("blocker")
    assert handler.started["blocker"].wait(TIMEOUT)

    for _ in range(50):
        queue.add("k")
    release.set()

    eventually(lambda: queue.pending() == 0)
    assert handler.count("k") == 1
    assert handler.count("blocker") == 1


def test_a_key_added_while_running_runs_once_more_afterwards_never_concurrently(make_queue: typing.Any) -> None:
    handler = Recorder()
    release = handler.hold("k")
    queue = make_queue(handler, workers=4)
    queue.add("k")
    assert handler.started["k"].wait(TIMEOUT)

    for _ in range(5):
        queue.add("k")
    time.sleep(0.02)  # give idle workers the chance to (wrongly) pick the key up
    assert handler.count("k") == 1
    release.set()

    eventually(lambda: queue.pending() == 0)
    assert handler.count("k") == 2
    assert handler.max_running["k"] == 1


def test_one_key_never_runs_in_two_workers_under_load(make_queue: typing.Any) -> None:
    handler = Recorder()
    queue = make_queue(handler, workers=4)

    def producer() -> None:
        for _ in range(200):
            queue.add("k")
            queue.add("j")

    producers = [threading.Thread(target=producer) for _ in range(4)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join(TIMEOUT)

    eventually(lambda: queue.pending() == 0)
    assert handler.count("k") >= 1
    assert handler.max_running["k"] == 1
    assert handler.max_running["j"] == 1


def test_different_keys_run_in_parallel(make_queue: typing.Any) -> None:
    handler = Recorder()
    both_started = threading.Barrier(2, timeout=TIMEOUT)

    def handle(key: str) -> None:
        handler(key)
        both_started.wait()  # raises BrokenBarrierError if the keys ran one after the other

    queue: workqueue.WorkQueue[str] = make_queue(handle, workers=2)
    queue.add("a")
    queue.add("b")

    eventually(lambda: queue.pending() == 0)
    assert sorted(handler.calls) == ["a", "b"]
    assert not both_started.broken


def test_a_failing_handler_is_retried_with_backoff_until_it_succeeds(make_queue: typing.Any) -> None:
    handler = Recorder(fail_times=3)
    queue = make_queue(handler, workers=2, max_backoff=0.02)

    queue.add("k")

    eventually(lambda: handler.count("k") == 4 and queue.pending() == 0)
    gaps = [later - earlier for earlier, later in zip(handler.times, handler.times[1:], strict=False)]
    assert all(gap >= 0.015 for gap in gaps), gaps
    time.sleep(0.05)
    assert handler.count("k") == 4


def test_the_retry_log_names_the_error_type_but_not_its_message(
    make_queue: typing.Any, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Recorder(fail_times=1)
    caplog.set_level(logging.WARNING, logger=workqueue.__name__)
    queue = make_queue(handler, workers=1, max_backoff=0.01, name="reconcile")

    queue.add("team-a/x")

    eventually(lambda: handler.count("team-a/x") == 2 and queue.pending() == 0)
    messages = [record.getMessage() for record in caplog.records]
    assert any("RuntimeError" in message and "team-a/x" in message for message in messages), messages
    assert not any(CANARY in message for message in messages)


def test_add_after_delays_the_run(make_queue: typing.Any) -> None:
    handler = Recorder()
    queue = make_queue(handler, workers=1)
    delay = 0.1

    asked = time.monotonic()
    queue.add_after("k", delay)

    assert queue.pending() == 1
    eventually(lambda: handler.count("k") == 1)
    assert handler.times[0] - asked >= delay
    eventually(lambda: queue.pending() == 0)


def test_a_delayed_key_already_waiting_runs_once(make_queue: typing.Any) -> None:
    handler = Recorder()
    release = handler.hold("blocker")
    queue = make_queue(handler, workers=1)
    queue.add("blocker")
    assert handler.started["blocker"].wait(TIMEOUT)

    queue.add("k")
    queue.add_after("k", 0.01)
    time.sleep(0.03)
    release.set()

    eventually(lambda: queue.pending() == 0)
    assert handler.count("k") == 1


def test_pending_counts_running_waiting_and_delayed_keys(make_queue: typing.Any) -> None:
    handler = Recorder()
    release = handler.hold("running")
    queue = make_queue(handler, workers=1)
    queue.add("running")
    assert handler.started["running"].wait(TIMEOUT)

    queue.add("waiting")
    queue.add_after("delayed", 0.05)

    assert queue.pending() == 3
    release.set()
    eventually(lambda: queue.pending() == 0)
    assert sorted(handler.calls) == ["delayed", "running", "waiting"]


def test_stop_returns_promptly_and_nothing_runs_afterwards() -> None:
    handler = Recorder()
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(handler, workers=3)
    queue.start()
    queue.add("before")
    eventually(lambda: handler.count("before") == 1)

    started = time.monotonic()
    queue.stop()

    assert time.monotonic() - started < TIMEOUT
    queue.add("after")
    time.sleep(0.02)
    assert handler.calls == ["before"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_key_that_keeps_failing_for_a_long_time_is_still_retried(make_queue: typing.Any) -> None:
    failures = 1100
    handler = Recorder(fail_times=failures)
    logging.getLogger(workqueue.__name__).disabled = True
    try:
        queue = make_queue(handler, workers=1, max_backoff=0.0, name="long-failure")
        queue.add("k")

        def settled() -> bool:
            worker_alive = any(thread.name == "long-failure-0" for thread in threading.enumerate())
            return handler.count("k") > failures or not worker_alive

        eventually(settled, timeout=60.0)
    finally:
        logging.getLogger(workqueue.__name__).disabled = False

    assert handler.count("k") == failures + 1


# ---- Results: what a reconcile asks the queue to do next ------------------------------------------


def test_a_result_asking_for_a_retry_is_retried_with_growing_backoff(make_queue: typing.Any) -> None:
    answers = iter([reconciling.Result.retry_later("down")] * 3 + [reconciling.Result.done("ok")])
    times: list[float] = []

    def handle(key: str) -> reconciling.Result:
        times.append(time.monotonic())
        return next(answers)

    queue = make_queue(handle, workers=1, base_backoff=0.02, max_backoff=1.0)
    queue.add("k")
    eventually(lambda: len(times) == 4 and queue.pending() == 0)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.08, gaps


def test_a_result_with_requeue_after_runs_the_key_again_then_stops(make_queue: typing.Any) -> None:
    answers = iter([reconciling.Result.after("debounce", 0.05), reconciling.Result.done("written")])
    times: list[float] = []

    def handle(key: str) -> reconciling.Result:
        times.append(time.monotonic())
        return next(answers)

    queue = make_queue(handle, workers=1)
    queue.add("k")
    eventually(lambda: len(times) == 2 and queue.pending() == 0)
    assert times[1] - times[0] >= 0.05


def test_sooner_brings_a_result_back_no_later_than_asked() -> None:
    done = reconciling.Result.done("unchanged")
    assert done.sooner(30).requeue_after == 30
    assert reconciling.Result.after("x", 5).sooner(30).requeue_after == 5
    assert reconciling.Result.after("x", 60).sooner(30).requeue_after == 30
    assert done.sooner(None) is done


def test_instrumented_counts_outcomes_by_controller_and_errors_as_error() -> None:
    def sample(result: str) -> float:
        return (
            metrics.REGISTRY.get_sample_value("credbridge_reconciles_total", {"kind": "test-queue", "result": result})
            or 0.0
        )

    ok, errors = sample("written"), sample("error")
    run = reconciling.instrumented("test-queue", lambda key: reconciling.Result.done("written"))
    run("k")

    def boom(key: str) -> reconciling.Result:
        raise RuntimeError(CANARY)

    with pytest.raises(RuntimeError):
        reconciling.instrumented("test-queue", boom)("k")
    assert sample("written") == ok + 1 and sample("error") == errors + 1


def test_queue_depth_is_exported_per_queue(make_queue: typing.Any) -> None:
    handler = Recorder()
    release = handler.hold("running")
    queue = make_queue(handler, workers=1, name="depth-test")
    queue.add("running")
    assert handler.started["running"].wait(TIMEOUT)
    queue.add("a")
    queue.add("b")
    assert queue.depth() == 2
    assert metrics.REGISTRY.get_sample_value("credbridge_workqueue_depth", {"queue": "depth-test"}) == 2
    release.set()
    eventually(lambda: queue.pending() == 0)
    assert metrics.REGISTRY.get_sample_value("credbridge_workqueue_depth", {"queue": "depth-test"}) == 0


def test_stop_drains_the_runs_in_progress_and_hands_out_nothing_more() -> None:
    handler = Recorder()
    release = handler.hold("running")
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(handler, workers=1)
    queue.start()
    queue.add("running")
    assert handler.started["running"].wait(TIMEOUT)
    queue.add("waiting")
    threading.Timer(0.1, release.set).start()

    queue.stop(drain_timeout=TIMEOUT)

    assert handler.running["running"] == 0, "stop returned before the run in progress finished"
    assert handler.calls == ["running"]
