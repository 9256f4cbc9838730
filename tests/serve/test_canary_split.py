"""The arm choice alone (no Ray): weights, sticky keys across a growing weight, salts, the
tester's forced arm."""

from __future__ import annotations

import pytest

from serve.canary.split import CANARY, STABLE, bucket, choose_arm
from serve.errors import APIError

KEYS = [f"user-{i}" for i in range(5000)]


def canary_share(weight: int, keys: list[str | None]) -> float:
    arms = [choose_arm(weight, "v2", key, None) for key in keys]
    return arms.count(CANARY) / len(arms)


@pytest.mark.parametrize("weight", [0, 1, 10, 37, 50, 99, 100])
def test_the_canary_answers_its_weight_of_keys_and_of_keyless_requests(weight: int) -> None:
    assert abs(canary_share(weight, KEYS) - weight / 100) < 0.03
    assert abs(canary_share(weight, [None] * 5000) - weight / 100) < 0.03


def test_a_key_stays_on_its_arm_and_reaches_the_canary_for_good_as_the_weight_grows() -> None:
    for key in KEYS[:500]:
        arms = [choose_arm(weight, "v2", key, None) for weight in range(101)]
        assert arms == [choose_arm(weight, "v2", key, None) for weight in range(101)]
        first = arms.index(CANARY)  # weight 100 sends every key to the canary
        assert arms[:first] == [STABLE] * first and arms[first:] == [CANARY] * (101 - first)


def test_each_canary_version_tries_another_set_of_users() -> None:
    first = {key for key in KEYS if bucket(key, "v2") < 10}
    second = {key for key in KEYS if bucket(key, "v3") < 10}
    assert len(first & second) < 0.3 * len(first)


def test_no_canary_means_stable_and_the_force_header_picks_an_arm() -> None:
    assert choose_arm(100, None, "user-1", None) == STABLE
    assert choose_arm(0, "v2", "user-1", "Canary") == CANARY
    assert choose_arm(100, "v2", "user-1", "stable") == STABLE
    with pytest.raises(APIError, match="must be one of stable, canary, got 'blue'") as bad:
        choose_arm(50, "v2", None, "blue")
    assert bad.value.status == 400
    with pytest.raises(APIError, match="no canary is serving"):
        choose_arm(50, None, None, "canary")
