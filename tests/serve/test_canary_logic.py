"""The canary's pure logic (serve/canary): counts and windows, shadow agreement, the shadow queue,
the gates and the rollout state machine, on plain Python and an injected clock (no Ray)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from serve.canary.agreement import Agreement, overlap_at_k, rank_correlation
from serve.canary.gates import GateConfig, GateResult, evaluate, verdict
from serve.canary.rollout import (
    Rollout,
    RolloutConfig,
    RolloutConflict,
    RolloutError,
    RolloutState,
    RolloutStore,
    abort,
    promote,
    rollback,
    set_weight,
)
from serve.canary.shadow import ShadowQueue
from serve.canary.split import CANARY, STABLE
from serve.canary.window import (
    LATENCY_BUCKETS_S,
    ArmCounts,
    ArmStats,
    Tally,
    bucket_index,
)

# --- window -------------------------------------------------------------------------------------


def _bucket_width(value: float) -> float:
    index = bucket_index(value)
    lower = LATENCY_BUCKETS_S[index - 1] if index else 0.0
    return LATENCY_BUCKETS_S[index] - lower


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantiles_from_the_histogram_are_within_a_bucket_of_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    latencies = np.clip(rng.lognormal(mean=-2.0, sigma=1.2, size=5000), 0, 9.9)
    counts = ArmCounts()
    for latency in latencies:
        counts.record(200, float(latency))
    for q in (0.5, 0.9, 0.95, 0.99):
        estimate = counts.quantile(q)
        exact = float(np.percentile(latencies, q * 100))
        assert estimate is not None
        tolerance = max(_bucket_width(exact), _bucket_width(estimate))
        assert abs(estimate - exact) <= tolerance, (q, estimate, exact)
    assert counts.latency_sum_s == pytest.approx(latencies.sum())


def test_quantile_edge_cases() -> None:
    counts = ArmCounts()
    assert counts.quantile(0.99) is None
    counts.record(200, 60.0)  # beyond the last finite bound
    assert counts.quantile(0.99) == 10.0
    counts = ArmCounts()
    for _ in range(10):
        counts.record(200, 1.2)  # all in the (1, 1.5] bucket: linear within it
    assert counts.quantile(0.5) == pytest.approx(1.25)
    assert counts.quantile(0.0) == 1.0
    with pytest.raises(ValueError):
        counts.quantile(1.5)


def test_record_counts_errors_successes_and_tokens() -> None:
    counts = ArmCounts()
    for status in (200, 200, 404, 429, 500, 503, 504, 408):
        counts.record(status, 0.01)
        counts.add_tokens(3, 5)
    assert (counts.requests, counts.successes, counts.errors) == (8, 2, 4)
    assert counts.error_rate == 0.5 and counts.success_rate == 0.25
    assert (counts.tokens_in, counts.tokens_out) == (24, 40)
    assert ArmCounts.from_dict(counts.to_dict()) == counts
    with pytest.raises(ValueError, match="latency buckets"):
        ArmCounts(buckets=[0, 1])


def test_minus_gives_the_window_and_survives_a_replica_restart() -> None:
    counts = ArmCounts()
    for _ in range(10):
        counts.record(200, 0.02)
    earlier = counts.copy()
    counts.record(500, 0.3)
    counts.record(200, 0.02)
    window = counts.minus(earlier)
    assert (window.requests, window.errors, sum(window.buckets)) == (2, 1, 2)
    assert window + earlier == counts

    restarted = ArmCounts()  # the replica died: its counters begin again from zero
    restarted.record(500, 0.1)
    restarted.record(200, 0.1)
    assert restarted.minus(counts) == restarted  # all it holds is new, nothing negative


def test_arm_stats_merge_minus_and_round_trip() -> None:
    a, b = ArmStats(origin="r1"), ArmStats(origin="r2")
    a.record(STABLE, 200, 0.01)
    a.record(CANARY, 500, 0.01)
    b.record(CANARY, 200, 0.01)
    total = a + b
    assert total[STABLE].requests == 1 and total[CANARY].requests == 2
    assert total.origin == ""
    assert total["nothing"].requests == 0
    assert ArmStats.from_dict(total.to_dict()) == total

    earlier = a.copy()
    a.record(CANARY, 200, 0.01)
    assert a.minus(earlier)[CANARY].requests == 1 and a.minus(earlier)[STABLE].requests == 0
    other = ArmStats(origin="r1-restarted")
    other.record(CANARY, 200, 0.01)
    assert other.minus(a) == other  # another lifetime's counts are not subtracted


def test_tally_total_only_grows_across_replica_restarts() -> None:
    tally = Tally()
    r1, r2 = ArmStats(origin="r1"), ArmStats(origin="r2")
    r1.record(CANARY, 200, 0.01)
    assert tally.observe({})[CANARY].requests == 0  # no replica has reported yet
    assert tally.observe({"r1": r1})[CANARY].requests == 0  # a first report is the baseline
    r1.record(CANARY, 200, 0.01)
    r2.record(CANARY, 500, 0.01)  # first heard of now: what it holds may predate the tally
    assert tally.observe({"r1": r1, "r2": r2})[CANARY].requests == 1
    r2.record(CANARY, 500, 0.01)
    assert tally.observe({"r1": r1, "r2": r2})[CANARY].errors == 1
    r2 = ArmStats(origin="r2-restarted")  # same key, restarted, already busier than before
    for _ in range(3):
        r2.record(CANARY, 200, 0.01)
    assert tally.observe({"r1": r1, "r2": r2})[CANARY].requests == 5
    assert tally.observe({"r2": r2})[CANARY].requests == 5  # r1 missed one poll
    total = tally.observe({"r1": r1, "r2": r2})  # and is back: not counted twice
    assert total[CANARY].requests == 5 and total[CANARY].errors == 1


# --- agreement ----------------------------------------------------------------------------------


def test_overlap_at_k() -> None:
    assert overlap_at_k([1, 2, 3, 4], [4, 3, 2, 1], 4) == 1.0
    assert overlap_at_k([1, 2, 3, 4], [1, 2, 9, 8], 4) == 0.5
    assert overlap_at_k([1, 2, 3, 4, 5], [1, 9, 3, 4, 5], 2) == 0.5  # only the top k counts
    assert overlap_at_k([1, 2, 3], [3, 2, 1], 10) == 1.0  # fewer than k hits, the same ones
    assert overlap_at_k([1, 2, 3, 4], [1, 2], 10) == 0.5  # one returned fewer
    assert overlap_at_k([], [], 10) == 1.0
    assert overlap_at_k([1], [], 10) == 0.0
    assert overlap_at_k(["a", "a", "b"], ["b", "a"], 2) == 1.0  # a repeated id counts once
    with pytest.raises(ValueError):
        overlap_at_k([1], [1], 0)


def test_rank_correlation_is_kendalls_tau_of_the_common_ids() -> None:
    assert rank_correlation([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert rank_correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert rank_correlation([1, 7, 2, 8, 3], [9, 3, 2, 1]) == -1.0  # only 1, 2, 3 are compared
    assert rank_correlation([1, 2], [2, 3]) is None  # one common id: no pair to order
    assert rank_correlation([], []) is None


def test_agreement_aggregates_merges_and_round_trips() -> None:
    left = Agreement("v1", "v2")
    left.add_search([1, 2, 3, 4], [1, 2, 3, 4])
    left.add_search([1, 2, 3, 4], [4, 3, 9, 8])
    left.add_text("Paris.", "Paris.")
    left.add_text("Paris is the capital.", "Paris.")
    assert left.pairs == 4
    assert left.mean_overlap == pytest.approx((1.0 + 0.5) / 2)
    assert left.mean_rank_correlation == pytest.approx((1.0 - 1.0) / 2)
    assert left.exact_match_rate == 0.5
    assert left.mean_length_ratio == pytest.approx((1 + 6 / 21) / 2)
    right = Agreement("v1", "v2")
    right.add_search([5], [6])  # no common id: overlap counts, the correlation does not
    merged = left + right
    assert (merged.search_pairs, merged.rank_pairs) == (3, 2)
    assert Agreement.from_dict(merged.to_dict()) == merged
    with pytest.raises(ValueError):
        left.merged(Agreement("v1", "v3"))
    with pytest.raises(ValueError):
        left.add_search([1], [1], k=5)


# --- shadow queue -------------------------------------------------------------------------------


def test_shadow_queue_never_slows_the_client_and_counts_drops_and_failures() -> None:
    async def scenario() -> dict[str, int]:
        release = asyncio.Event()
        ran: list[int] = []

        def blocked(n: int):
            async def call() -> None:
                await release.wait()
                ran.append(n)

            return call

        async def broken() -> None:
            raise RuntimeError("canary down")

        queue = ShadowQueue(maxsize=3, workers=1)
        started = time.perf_counter()
        accepted = [queue.offer(blocked(n)) for n in range(10)]
        offering_s = time.perf_counter() - started
        await asyncio.sleep(0.01)  # the worker takes one and blocks on it
        started = time.perf_counter()
        accepted += [queue.offer(blocked(n)) for n in range(10, 15)]
        offering_s += time.perf_counter() - started
        assert offering_s < 0.05  # the client path never waited on a blocked worker
        assert accepted.count(True) == 4  # 3 queued, then 1 more once the worker took one
        assert queue.describe()["dropped"] == 11
        release.set()
        await queue.drain()
        assert queue.offer(broken)
        await queue.drain()
        await queue.close()
        assert sorted(ran) == [0, 1, 2, 10]
        return queue.describe()

    counts = asyncio.run(scenario())
    assert counts["sent"] == 5 and counts["dropped"] == 11
    assert counts["completed"] == 4 and counts["failed"] == 1


def test_shadow_timeout_counts_as_failed() -> None:
    async def scenario() -> dict[str, int]:
        queue = ShadowQueue(maxsize=2, workers=1, timeout_s=0.01)
        queue.offer(lambda: asyncio.sleep(1))
        await queue.drain()
        await queue.close()
        return queue.describe()

    assert asyncio.run(scenario())["failed"] == 1


# --- gates --------------------------------------------------------------------------------------


def _canary(requests: int, errors: int = 0, latency_s: float = 0.05, slow: int = 0) -> ArmCounts:
    counts = ArmCounts()
    for i in range(requests):
        counts.record(500 if i < errors else 200, 3.0 if i < slow else latency_s)
    return counts


def _agreement(pairs: int, overlapping: int) -> Agreement:
    agreement = Agreement("v1", "v2")
    for _ in range(pairs):
        agreement.add_search(list(range(10)), list(range(overlapping)) + list(range(100, 110)))
    return agreement


def test_gates_pass_fail_and_pending() -> None:
    cfg = GateConfig()
    passed = evaluate(_canary(200), None, cfg, index_arm=True)
    assert [r.name for r in passed] == ["error_rate", "p99_s", "success_rate"]
    assert verdict(passed) == "passed"

    failed = {r.name: r for r in evaluate(_canary(200, errors=10), None, cfg, index_arm=False)}
    assert failed["error_rate"].failed and failed["error_rate"].value == 0.05
    assert failed["success_rate"].failed and failed["p99_s"].passed

    slow = {r.name: r for r in evaluate(_canary(200, slow=10), None, cfg, index_arm=False)}
    assert slow["p99_s"].failed and slow["p99_s"].value > 2.0

    empty = evaluate(ArmCounts(), None, cfg, index_arm=False)
    assert all(r.pending for r in empty) and verdict(empty) == "pending"

    few = evaluate(_canary(200), _agreement(5, 10), cfg, index_arm=True)
    assert few[-1].name == "overlap_at_10" and few[-1].pending
    assert verdict(few) == "pending"
    good = evaluate(_canary(200), _agreement(20, 9), cfg, index_arm=True)
    assert good[-1].passed and good[-1].value == pytest.approx(0.9)
    bad = evaluate(_canary(200), _agreement(20, 5), cfg, index_arm=True)
    assert bad[-1].failed and verdict(bad) == "failed"
    assert len(evaluate(_canary(200), _agreement(20, 5), cfg, index_arm=False)) == 3

    strict = GateConfig(max_error_rate=0.0)
    assert verdict(evaluate(_canary(200), None, strict, index_arm=False)) == "passed"


# --- rollout ------------------------------------------------------------------------------------


class Traffic:
    """A controller's cumulative counts, fed with requests per arm as time goes by."""

    def __init__(self) -> None:
        self.counts = ArmStats(origin="controller")

    def serve(self, canary: int, errors: int = 0, slow: int = 0, stable: int = 0) -> ArmStats:
        for i in range(canary):
            status = 500 if i < errors else 200
            self.counts.record(CANARY, status, 3.0 if i < slow else 0.05)
        for _ in range(stable):
            self.counts.record(STABLE, 200, 0.05)
        return self.counts.copy()


def _start(cfg: RolloutConfig, traffic: Traffic, now: float = 0.0) -> RolloutState:
    return Rollout.start("search", "v2", "v1", cfg, now, counts=traffic.counts.copy())


def test_a_healthy_canary_walks_every_step_to_promotion() -> None:
    cfg = RolloutConfig(interval_s=60, min_requests=50)
    traffic = Traffic()
    state = _start(cfg, traffic)
    assert state.weight == 1 and state.step == 0
    weights, now = [state.weight], 0.0
    while state.running:
        now += 30
        decision = Rollout.advance(state, cfg, now, traffic.serve(canary=40), None)
        if decision.weight is not None:
            weights.append(decision.weight)
        state = decision.state
    assert weights == [1, 5, 10, 25, 50, 100, 100]  # the last: promoted
    assert state.status == "promoted" and state.weight == 100 and decision.promoted
    assert state.ended_at == now == 6 * 60  # each step held exactly its interval
    kinds = [event.kind for event in state.history]
    assert kinds == ["step"] + ["gate", "step"] * 5 + ["gate", "promote"]
    assert all(g.passed for e in state.history if e.kind == "gate" for g in e.gates)
    after = Rollout.advance(state, cfg, now + 30, traffic.serve(canary=40), None)
    assert after.weight is None and after.state == state  # a finished rollout stays as it is


def test_advance_is_pure() -> None:
    cfg = RolloutConfig(interval_s=0, min_requests=1)
    traffic = Traffic()
    state = _start(cfg, traffic)
    before = state.model_dump()
    decision = Rollout.advance(state, cfg, 1.0, traffic.serve(canary=5), None)
    assert decision.state.weight == 5
    assert state.model_dump() == before


def test_a_canary_with_5_percent_errors_rolls_back_within_one_interval() -> None:
    cfg = RolloutConfig(interval_s=300, min_requests=100)
    traffic = Traffic()
    state = _start(cfg, traffic)
    decision = Rollout.advance(state, cfg, 60, traffic.serve(canary=50), None)
    assert decision.weight is None  # healthy so far, and below min_requests
    # 10 errors in the next 150: 5% of the window, seen on the poll at 120 s, long before 300 s.
    decision = Rollout.advance(decision.state, cfg, 120, traffic.serve(canary=150, errors=10), None)
    assert decision.rolled_back and decision.weight == 0
    state = decision.state
    assert state.status == "rolled_back" and state.weight == 0 and state.ended_at == 120 < 300
    assert "error_rate" in state.history[-1].reason
    assert state.history[-1].kind == "rollback"
    gate_event = state.history[-2]
    assert gate_event.kind == "gate"
    assert {g.name for g in gate_event.gates if g.failed} == {"error_rate", "success_rate"}


def test_errors_before_min_requests_roll_back_once_the_budget_is_spent() -> None:
    cfg = RolloutConfig(interval_s=300, min_requests=100)  # budget: 1% of 100 = 1 error
    traffic = Traffic()
    state = _start(cfg, traffic)
    decision = Rollout.advance(state, cfg, 10, traffic.serve(canary=20, errors=1), None)
    assert decision.rolled_back and decision.state.ended_at == 10
    assert "error_budget" in decision.reason


def test_a_slow_canary_rolls_back_on_p99() -> None:
    cfg = RolloutConfig(interval_s=300, min_requests=100)
    traffic = Traffic()
    state = _start(cfg, traffic)
    decision = Rollout.advance(state, cfg, 100, traffic.serve(canary=200, slow=10), None)
    assert decision.rolled_back and decision.state.status == "rolled_back"
    assert decision.reason.startswith("gate failed: p99_s")
    assert [g.name for g in decision.gates if g.failed] == ["p99_s"]


def test_a_low_overlap_rolls_back_an_index_canary() -> None:
    cfg = RolloutConfig(interval_s=300, min_requests=100)
    traffic = Traffic()
    state = _start(cfg, traffic)
    decision = Rollout.advance(state, cfg, 100, traffic.serve(canary=200), _agreement(30, 3))
    assert decision.rolled_back and "overlap_at_10" in decision.reason
    with pytest.raises(ValueError, match="agreement"):
        Rollout.advance(state, cfg, 100, traffic.serve(canary=1), Agreement("v0", "v2"))


def test_min_requests_and_pending_gates_hold_a_step() -> None:
    cfg = RolloutConfig(interval_s=60, min_requests=100)
    traffic = Traffic()
    state = _start(cfg, traffic)
    for now in (100, 1000, 10_000):  # hours past the interval, still too few canary requests
        decision = Rollout.advance(state, cfg, now, traffic.serve(canary=10, stable=1000), None)
        state = decision.state
        assert decision.weight is None and state.weight == 1
        assert "canary requests" in decision.reason
        assert all(g.pending for g in decision.gates)
    decision = Rollout.advance(state, cfg, 10_001, traffic.serve(canary=70), _agreement(5, 10))
    assert decision.weight is None and "overlap_at_10" in decision.reason  # too few shadows
    decision = Rollout.advance(decision.state, cfg, 10_002, traffic.serve(0), _agreement(25, 10))
    assert decision.weight == 5 and decision.state.step == 1


def test_state_saved_mid_rollout_resumes_at_the_same_step_and_weight(tmp_path) -> None:
    cfg = RolloutConfig(interval_s=60, min_requests=50)
    store = RolloutStore(str(tmp_path / "rollouts"))
    traffic = Traffic()
    state = store.start("search", "v2", "v1", cfg, 0.0, counts=traffic.counts.copy())
    for now in (60, 120):  # two steps passed: 10%
        state = Rollout.advance(state, cfg, now, traffic.serve(canary=60), None).state
        store.save(state)
    state = Rollout.advance(state, cfg, 150, traffic.serve(canary=30), None).state
    store.save(state)  # halfway through the 10% step, 30 requests in its window

    # The controller restarts: its counts start again (a new Tally), the state comes from disk.
    resumed = store.load("search")
    assert resumed == state and resumed.weight == 10 and resumed.step == 2
    fresh = Traffic()
    fresh.counts.origin = "controller-after-restart"
    decision = Rollout.advance(resumed, resumed.config, 160, fresh.serve(canary=10), None)
    assert decision.weight is None and decision.state.weight == 10  # neither 0 nor 100
    assert "10 of 50" in decision.reason  # the window counts since the restart only
    decision = Rollout.advance(decision.state, resumed.config, 180, fresh.serve(canary=40), None)
    assert decision.weight == 25  # the step kept its start time: 180 - 120 >= 60


def test_one_rollout_per_application(tmp_path) -> None:
    store = RolloutStore(str(tmp_path))
    cfg = RolloutConfig()
    first = store.start("search", "v2", "v1", cfg, 1_700_000_000.0)
    with pytest.raises(RolloutConflict, match=r"search is running: v1 -> v2 at 1% \(step 1/6\)"):
        store.start("search", "v3", "v1", cfg, 1_700_000_100.0)
    store.start("chat", "m2", "m1", cfg, 0.0)  # another application is independent
    store.save(promote(first, 50.0))
    second = store.start("search", "v3", "v2", cfg, 100.0)
    assert store.load("search") == second
    assert [old.to for old in store.history("search")] == ["v2"]
    with pytest.raises(RolloutConflict):
        store.save(Rollout.start("search", "v4", "v3", cfg, 200.0))
    assert store.load("nothing") is None and store.history("nothing") == []


def test_manual_verbs() -> None:
    cfg = RolloutConfig(interval_s=60, min_requests=10)
    traffic = Traffic()
    state = _start(cfg, traffic)

    moved = set_weight(state, 30, 10.0, counts=traffic.counts.copy())
    assert (moved.weight, moved.step, moved.step_started_at) == (30, None, 10.0)
    assert moved.history[-1].kind == "set" and state.weight == 1
    decision = Rollout.advance(moved, cfg, 70.0, traffic.serve(canary=20), None)
    assert decision.weight == 50 and decision.state.step == 4  # the schedule goes on above 30

    paused = set_weight(state, 0, 10.0, counts=traffic.counts.copy())
    decision = Rollout.advance(paused, cfg, 10_000.0, traffic.serve(canary=0, stable=500), None)
    assert decision.weight is None  # no canary traffic: the step holds

    last = set_weight(state, 100, 10.0, counts=traffic.counts.copy())
    assert last.step == 5
    assert Rollout.advance(last, cfg, 70.0, traffic.serve(canary=20), None).promoted

    aborted = abort(state, 5.0, "wrong build")
    assert (aborted.status, aborted.weight, aborted.history[-1].reason) == (
        "aborted",
        0,
        "wrong build",
    )
    promoted = promote(state, 5.0)
    assert (promoted.status, promoted.weight) == ("promoted", 100)
    back = rollback(promoted, 6.0, "customers complain")
    assert (back.status, back.weight, back.ended_at) == ("rolled_back", 0, 6.0)
    for verb in (abort, promote, rollback):
        with pytest.raises(RolloutError, match="it is rolled_back"):
            verb(back, 7.0)
    with pytest.raises(RolloutError, match="it is rolled_back"):
        set_weight(back, 5, 7.0)
    with pytest.raises(RolloutError):
        set_weight(state, 101, 1.0)


def test_config_and_state_validation_and_json_round_trip() -> None:
    for steps in ([], [5, 1], [1, 1], [0, 50], [50, 101]):
        with pytest.raises(ValueError):
            RolloutConfig(steps=steps)
    with pytest.raises(RolloutError):
        Rollout.start("search", "v1", "v1", RolloutConfig(), 0.0)
    with pytest.raises(RolloutError):
        Rollout.start("../etc", "v2", "v1", RolloutConfig(), 0.0)
    traffic = Traffic()
    cfg = RolloutConfig(interval_s=0, min_requests=1)
    state = Rollout.advance(_start(cfg, traffic), cfg, 1.0, traffic.serve(canary=3), None).state
    assert RolloutState.from_json(state.to_json()) == state
    gate = state.history[-2].gates[0]
    assert isinstance(gate, GateResult) and gate.passed and gate.value == 0.0


def test_a_mean_at_the_threshold_passes_its_gate() -> None:
    # Six shadowed searches at 4/5 each: their float mean is a hair under 0.8.
    agreement = Agreement("v1", "v2")
    for _ in range(6):
        agreement.add_search([1, 2, 3, 4, 5], [1, 2, 3, 4, 6])
    assert agreement.mean_overlap < 0.8
    canary = ArmCounts()
    for _ in range(10):
        canary.record(200, 0.01)
    cfg = GateConfig(min_overlap_at_10=0.8, min_shadow_pairs=6)
    results = evaluate(canary, agreement, cfg, index_arm=True)
    assert verdict(results) == "passed", results
