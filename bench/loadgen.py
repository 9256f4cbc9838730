"""A light closed-loop HTTP/1.1 load generator (the role wrk plays), in one asyncio event loop.

Each client keeps one keep-alive connection and sends pre-encoded request bytes back to back, so
the generator does little more than a socket write and a header parse per request. A run is
bounded by a request count and a per-request timeout; it reports throughput, latency percentiles
and its own CPU time (the thread's, not the process's), so a reader can see how much of the
shared cores the generator itself took. Several groups of clients (say searches and upserts)
can run together in the one loop, each at its own pace, each with its own figures.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def encode_post(host: str, port: int, path: str, body: bytes) -> bytes:
    """One complete POST request with a JSON body, ready to write to a keep-alive socket."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("ascii") + body


@dataclass
class LoadResult:
    clients: int
    requests: int
    errors: int
    seconds: float
    cpu_s: float
    latencies_s: np.ndarray = field(repr=False)
    first_error: str | None = None

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3) if len(self.latencies_s) else 0.0

    def summary(self) -> dict[str, float | int | str | None]:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": self.seconds,
            "req_per_s": self.throughput,
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            # The generator's CPU per request: what it took from the cores it shares.
            "loadgen_cpu_us_per_req": self.cpu_s / max(self.requests, 1) * 1e6,
            "first_error": self.first_error,
        }


@dataclass(frozen=True)
class Load:
    """One group of clients of a run: `total` requests cycling through `requests`. With `rate`,
    the group's requests are spread evenly at that many per second (a client still waits for
    its answer before the next: a slow server gets fewer); without, each client sends its next
    request at once."""

    requests: Sequence[bytes]
    clients: int
    total: int
    rate: float | None = None


class _Run:
    """State shared by the clients of one group: tickets, latencies, errors."""

    def __init__(self, load: Load, timeout_s: float, budget_s: float | None) -> None:
        self.requests = load.requests
        self.tickets = iter(range(load.total))
        self.timeout_s = timeout_s
        self.started = time.perf_counter()
        self.stop_at = self.started + budget_s if budget_s else float("inf")
        self.interval = 1.0 / load.rate if load.rate else 0.0
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    def fail(self, reason: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or reason


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")  # the empty trailer
    return status, headers.get(b"connection") != b"close"


async def _client(host: str, port: int, run: _Run, offset: int) -> None:
    writer = None
    # Clients start at different requests so concurrent queries differ.
    bodies = itertools.islice(itertools.cycle(run.requests), offset, None)
    for ticket in run.tickets:
        request = next(bodies)
        if run.interval:
            await asyncio.sleep(run.started + ticket * run.interval - time.perf_counter())
        started = time.perf_counter()
        if started > run.stop_at:
            break
        try:
            async with asyncio.timeout(run.timeout_s):
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                status, keep = await _read_response(reader)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ) as error:
            run.fail(f"{type(error).__name__}: {error}")
            writer = _close(writer)
            continue
        if status // 100 == 2:
            run.latencies.append(time.perf_counter() - started)
        else:
            run.fail(f"HTTP {status}")
        if not keep:
            writer = _close(writer)
    _close(writer)


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


async def _run_groups(host: str, port: int, loads: Sequence[Load], runs: list[_Run]) -> None:
    clients = []
    for load, run in zip(loads, runs, strict=True):
        run.started = time.perf_counter()  # the pace counts from here, not from set-up
        clients += [_client(host, port, run, i) for i in range(load.clients)]
    await asyncio.gather(*clients)


def run_load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    clients: int,
    total: int,
    timeout_s: float = 30.0,
    budget_s: float | None = None,
) -> LoadResult:
    """Send `total` requests over `clients` keep-alive connections, each client waiting for its
    answer before the next request (closed loop), cycling through the encoded `requests`.
    With `budget_s`, no request starts after that many seconds (a slow target sends fewer)."""
    return run_loads(host, port, [Load(requests, clients, total)], timeout_s, budget_s)[0]


def run_loads(
    host: str,
    port: int,
    loads: Sequence[Load],
    timeout_s: float = 30.0,
    budget_s: float | None = None,
) -> list[LoadResult]:
    """Run the groups of clients together, in one event loop; one result per group. The
    generator's CPU is shared out in proportion to the requests each group sent: each costs it
    about one write and one header parse."""
    runs = [_Run(load, timeout_s, budget_s) for load in loads]
    cpu, wall = time.thread_time(), time.perf_counter()
    asyncio.run(_run_groups(host, port, loads, runs))
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    sent = [len(run.latencies) + run.errors for run in runs]
    return [
        LoadResult(
            clients=load.clients,
            requests=len(run.latencies),
            errors=run.errors,
            seconds=wall,
            cpu_s=cpu * n / max(sum(sent), 1),
            latencies_s=np.asarray(run.latencies),
            first_error=run.first_error,
        )
        for load, run, n in zip(loads, runs, sent, strict=True)
    ]


def merged(results: Sequence[LoadResult]) -> LoadResult:
    """Several runs of one group as one: rates over their summed time, latencies pooled."""
    return LoadResult(
        clients=results[0].clients,
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        seconds=sum(r.seconds for r in results),
        cpu_s=sum(r.cpu_s for r in results),
        latencies_s=np.concatenate([r.latencies_s for r in results]),
        first_error=next((r.first_error for r in results if r.first_error), None),
    )
