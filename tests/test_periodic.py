"""Background rounds (core/periodic.py): rounds follow one another, a failing round does not
end them, and stop() ends them."""

from __future__ import annotations

import threading

from core.periodic import RUNNING, Periodic


def test_a_failing_round_is_followed_by_the_next_and_stop_ends_them() -> None:
    rounds: list[int] = []
    third = threading.Event()

    def round() -> None:
        rounds.append(len(rounds) + 1)
        if len(rounds) == 3:
            third.set()
        if len(rounds) == 1:
            raise RuntimeError("the database is away")

    periodic = Periodic("test-rounds", 0.01, round).start()
    assert periodic in RUNNING
    assert third.wait(60), "the rounds stopped after the failing one"
    periodic.stop()
    assert periodic not in RUNNING
    assert periodic._thread is not None and not periodic._thread.is_alive()  # no more rounds
