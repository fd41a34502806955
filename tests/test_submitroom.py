"""The room for more jobs in a scheduler's queue: max_queued, a known limit, and a limit learned
from refusals in a few halving steps."""

from __future__ import annotations

from hpcexec.submitroom import BACKOFF_MIN, SubmitRoom


def test_no_cap_until_something_is_known():
    room = SubmitRoom()
    assert not room.capped and room.allowed(1000, 0.0) is None


def test_max_queued_leaves_room_for_the_rest():
    room = SubmitRoom(max_queued=10)
    assert room.capped
    assert [room.allowed(q, 0.0) for q in (0, 7, 10, 12)] == [10, 3, 0, 0]
    assert room.waiting_for(10, 0.0) == "waiting: max_queued=10"


def test_a_known_limit_is_used_as_it_is():
    room = SubmitRoom()
    room.known(10, "10 queued jobs per user, from accounting")
    assert room.allowed(4, 0.0) == 6 and room.allowed(10, 0.0) == 0
    assert room.waiting_for(10, 0.0) == (
        "waiting: the scheduler's submit limit (10 queued jobs per user, from accounting)"
    )


def simulate(limit: int, others: int, jobs: int) -> tuple[list[int], int]:
    """Submit ``jobs`` against a scheduler taking ``limit`` queued jobs of which ``others``
    are taken by jobs outside the client; none ends. Sizes tried, and jobs queued at the end."""
    room, queued, tried = SubmitRoom(), 0, []
    for _ in range(50):
        size = room.allowed(queued, 0.0)
        size = jobs - queued if size is None else min(size, jobs - queued)
        if size <= 0:
            break
        tried.append(size)
        if others + queued + size <= limit:
            room.accepted(size, queued)
            queued += size
        else:
            room.refused(size, queued, "Limit", 0.0)
    return tried, queued


def test_a_limit_is_learned_in_a_few_refusals_and_then_filled_exactly():
    tried, queued = simulate(limit=10, others=0, jobs=50)
    assert queued == 10 and len(tried) <= 8, tried
    tried, queued = simulate(limit=10, others=4, jobs=50)
    assert queued == 6 and len(tried) <= 8, tried
    tried, queued = simulate(limit=100, others=0, jobs=30)
    assert (tried, queued) == ([30], 30)  # under the limit: one submission, nothing refused


def test_at_the_limit_it_waits_for_own_jobs_or_tries_one_after_a_backoff():
    room = SubmitRoom()
    room.refused(1, 10, "QOSMaxSubmitJobPerUserLimit", 100.0)
    assert room.allowed(10, 100.0) == 0
    assert room.waiting_for(10, 100.0) == (
        "waiting: the scheduler's submit limit (QOSMaxSubmitJobPerUserLimit); "
        "10 of this client's jobs queued when it was hit"
    )
    assert room.allowed(7, 101.0) == 3  # three of ours ended
    assert room.allowed(10, 100.0 + BACKOFF_MIN) == 1  # none ended: try one
    room.refused(1, 10, "QOSMaxSubmitJobPerUserLimit", 100.0 + BACKOFF_MIN)
    assert room.retry_at == 100.0 + 3 * BACKOFF_MIN  # the backoff doubled
    room.accepted(1, 10)  # others' jobs left: the limit is learned again
    assert room.upper is None and room.allowed(11, 200.0) is None
