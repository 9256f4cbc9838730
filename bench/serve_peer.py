"""The peer of `refinery bench serve`: a plain single-process FastAPI + FAISS server.

Run by uvicorn in a subprocess (`uvicorn --factory bench.serve_peer:create_app`) on the bench's
vectors (REFINERY_PEER_DATA names the folder with vectors.npy and documents/). Same request and
response shapes as Refinery's `POST /v1/search`; FastAPI runs the sync handler in its thread
pool and FAISS releases the GIL, so concurrent requests use both cores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow.parquet as pq
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from serve.protocol import SearchRequest

DATA_ENV = "REFINERY_PEER_DATA"


def create_app() -> FastAPI:
    root = Path(os.environ[DATA_ENV])
    vectors = np.load(root / "vectors.npy")
    # Concurrency comes from FastAPI's thread pool; OpenMP teams inside each of those threads
    # would only contend for the same cores.
    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    # Row i of the documents is vector i (the bench writes index_id = row number).
    payloads = pq.read_table(root / "documents").drop_columns(["index_id"]).to_pylist()
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/search")
    def search(body: SearchRequest) -> JSONResponse:
        queries = np.asarray(body.vectors, dtype=np.float32)
        scores, ids = index.search(queries, body.k)
        return JSONResponse({"results": _results(scores, ids, payloads)})

    return app


def _results(scores: np.ndarray, ids: np.ndarray, payloads: list[dict]) -> list[list[Any]]:
    return [
        [
            {"id": int(i), "score": float(s), "payload": payloads[i]}
            for s, i in zip(row_scores, row_ids, strict=True)
            if i >= 0
        ]
        for row_scores, row_ids in zip(scores, ids, strict=True)
    ]
