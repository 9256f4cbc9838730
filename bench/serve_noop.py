"""The do-nothing endpoint of `refinery bench serve`: a Serve FastAPI deployment behind the same
proxy as Refinery's app that reads the request body and answers a small JSON, so its
throughput is Serve's own overhead per request on this machine. It takes upserts too: the
ceiling of `refinery bench serve-updates`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

app = FastAPI()


@serve.deployment(name="DoNothing", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(app)
class DoNothing:
    @app.post("/v1/search")
    async def search(self, request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"results": []})

    @app.post("/v1/upsert")
    async def upsert(self, request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"upserted": 1, "deleted": 0, "count": 0})
