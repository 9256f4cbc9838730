"""The bench's load generator against a tiny HTTP server in a thread (no Ray)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.loadgen import Load, encode_post, run_load, run_loads


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the Serve proxy and uvicorn answer
    seen: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(body)
        if self.path == "/chunked":
            self._chunked(b'{"ok": true}')
            return
        status = 500 if body.get("fail") else 200
        answer = json.dumps({"echo": body}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _chunked(self, answer: bytes) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in (answer[:4], answer[4:]):
            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_counts_every_request_and_reports_latencies(server: tuple[str, int]) -> None:
    host, port = server
    requests = [encode_post(host, port, "/x", json.dumps({"i": i}).encode()) for i in range(3)]
    result = run_load(host, port, requests, clients=4, total=50, timeout_s=10)
    assert result.requests == 50 and result.errors == 0
    assert len(_Handler.seen) == 50
    assert {body["i"] for body in _Handler.seen} == {0, 1, 2}  # clients cycle the bodies
    summary = result.summary()
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]
    assert summary["req_per_s"] > 0 and result.cpu_s > 0


def test_counts_error_statuses_and_reads_chunked_bodies(server: tuple[str, int]) -> None:
    host, port = server
    failing = [encode_post(host, port, "/x", b'{"fail": true}')]
    result = run_load(host, port, failing, clients=2, total=6, timeout_s=10)
    assert (result.requests, result.errors, result.first_error) == (0, 6, "HTTP 500")
    chunked = [encode_post(host, port, "/chunked", b"{}")]
    result = run_load(host, port, chunked, clients=1, total=5, timeout_s=10)
    assert (result.requests, result.errors) == (5, 0)


def test_a_refused_connection_is_an_error_not_a_hang() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        result = run_load("127.0.0.1", port, [b""], clients=2, total=4, timeout_s=2)
    assert result.requests == 0 and result.errors == 4


def test_a_budget_stops_the_run_early(server: tuple[str, int]) -> None:
    host, port = server
    requests = [encode_post(host, port, "/x", b"{}")]
    result = run_load(host, port, requests, clients=2, total=10**6, timeout_s=10, budget_s=0.3)
    assert 0 < result.requests < 10**6 and result.errors == 0


def test_groups_run_together_each_with_its_own_figures_and_pace(server: tuple[str, int]) -> None:
    host, port = server
    fast = Load([encode_post(host, port, "/x", b'{"g": "fast"}')], clients=2, total=10**6)
    paced = Load(
        [encode_post(host, port, "/x", b'{"g": "paced"}')], clients=4, total=10**6, rate=20
    )
    results = run_loads(host, port, [fast, paced], timeout_s=10, budget_s=0.6)
    assert [r.clients for r in results] == [2, 4] and all(r.errors == 0 for r in results)
    seen = [body["g"] for body in _Handler.seen]
    assert results[0].requests == seen.count("fast") > results[1].requests
    # 20/s for 0.6 s: 12 at most, however many clients share the pace.
    assert 8 <= results[1].requests == seen.count("paced") <= 13
