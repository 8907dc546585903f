"""Which replica works under kopf peering (operator.activity.judge), and a closed gate holding a queue."""

from __future__ import annotations

import datetime
import threading
import time

from credbridge.operator import activity, workqueue

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


def peer(priority: int, seconds_ago: float, lifetime: int = 20) -> dict[str, object]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_the_highest_live_priority_works() -> None:
    peers = {"a@host": peer(100, 1), "b@host": peer(50, 1)}
    assert activity.judge(peers, 100, NOW) is True
    assert activity.judge(peers, 50, NOW) is False


def test_a_dead_peer_does_not_hold_the_work() -> None:
    peers = {"a@host": peer(100, 30), "b@host": peer(50, 1)}
    assert activity.judge(peers, 50, NOW) is True


def test_two_live_peers_with_one_priority_both_pause_and_a_missing_own_entry_waits() -> None:
    assert activity.judge({"a@host": peer(7, 1), "b@host": peer(7, 2)}, 7, NOW) is False
    assert activity.judge({"a@host": peer(3, 1)}, 7, NOW) is False
    assert activity.judge({}, 7, NOW) is False
    assert activity.judge({"broken": {"priority": "x"}, "a@host": peer(7, 1)}, 7, NOW) is True


def test_a_closed_gate_holds_keys_until_it_opens() -> None:
    seen: list[str] = []
    open_ = threading.Event()
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(seen.append, workers=1, gate=open_.is_set)
    queue.start()
    try:
        queue.add("k")
        queue.add("k")
        time.sleep(0.3)
        assert seen == [] and queue.depth() == 1
        open_.set()
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == ["k"]
    finally:
        queue.stop()
