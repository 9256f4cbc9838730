"""The call coalescer of the search serving class, on a plain event loop (no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from serve.coalesce import Coalescer


def test_items_arriving_during_a_call_share_the_next_one() -> None:
    calls: list[list[int]] = []

    async def call(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.05)
        return [item * 10 for item in items]

    async def scenario() -> list[int]:
        coalescer = Coalescer(call, max_items=3)
        first = asyncio.ensure_future(coalescer.submit(0))
        await asyncio.sleep(0.01)  # the first call is in flight; the rest wait for it
        rest = [coalescer.submit(i) for i in range(1, 6)]
        return [await first, *await asyncio.gather(*rest)]

    assert asyncio.run(scenario()) == [0, 10, 20, 30, 40, 50]
    assert calls == [[0], [1, 2, 3], [4, 5]]  # idle: at once; then at most max_items a call


def test_a_failed_call_fails_its_callers_and_the_next_call_still_runs() -> None:
    async def call(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if 0 in items:
            raise ValueError("boom")
        return items

    async def scenario() -> int:
        coalescer = Coalescer(call, max_items=8)
        with pytest.raises(ValueError, match="boom"):
            await coalescer.submit(0)
        return await coalescer.submit(7)

    assert asyncio.run(scenario()) == 7
