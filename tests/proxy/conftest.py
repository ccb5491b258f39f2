"""Real HTTP backends and a real proxy on 127.0.0.1 with ephemeral ports, cleaned up after."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lbrec.proxy.app import ServeInfo, ServeOptions, serve
from lbrec.proxy.server import ProxyServer


@dataclass
class Backend:
    name: str
    runner: web.AppRunner
    port: int
    hits: int = 0
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    healthy: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


def _backend_app(state: dict[str, Any]) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        backend: Backend = state["backend"]
        return web.Response(status=200 if backend.healthy else 503, text="ok")

    async def echo(request: web.Request) -> web.StreamResponse:
        backend: Backend = state["backend"]
        backend.hits += 1
        backend.seen_headers.append(dict(request.headers))
        size = 0
        async for data in request.content.iter_any():
            size += len(data)
        return web.json_response(
            {
                "backend": backend.name,
                "method": request.method,
                "path": request.path_qs,
                "size": size,
                "headers": dict(request.headers),
            },
            headers={"X-Backend": backend.name, "Set-Cookie": "a=1"},
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="late")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def hop(request: web.Request) -> web.Response:
        response = web.Response(text="hop", headers={"X-Backend": state["backend"].name})
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["Proxy-Authenticate"] = "Basic"
        response.headers["X-Custom"] = "kept"
        return response

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(int(request.query.get("n", "5"))):
            await response.write(f"part{i};".encode())
        await response.write_eof()
        return response

    async def big(request: web.Request) -> web.StreamResponse:
        mib = int(request.query.get("mib", "10"))
        response = web.StreamResponse(headers={"Content-Length": str(mib << 20)})
        await response.prepare(request)
        block = b"d" * (1 << 20)
        for _ in range(mib):
            await response.write(block)
        await response.write_eof()
        return response

    async def lazy_reader(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))  # read nothing for a while
        size = 0
        async for data in request.content.iter_any():
            size += len(data)
        return web.json_response({"size": size})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(f"{state['backend'].name}:{msg.data}")
        return sock

    app = web.Application(client_max_size=1024**4)
    app.router.add_get("/health", health)
    app.router.add_get("/slow", slow)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/hop", hop)
    app.router.add_get("/stream", stream)
    app.router.add_get("/ws", ws)
    app.router.add_get("/big", big)
    app.router.add_post("/lazy", lazy_reader)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


BackendFactory = Callable[[str], Awaitable[Backend]]


@pytest.fixture
async def backends() -> AsyncIterator[BackendFactory]:
    started: list[Backend] = []

    async def start(name: str, port: int = 0) -> Backend:
        state: dict[str, Any] = {}
        runner = web.AppRunner(_backend_app(state), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        bound = runner.addresses[0][1]
        backend = Backend(name, runner, bound)
        state["backend"] = backend
        started.append(backend)
        return backend

    yield start
    for backend in started:
        with contextlib.suppress(Exception):
            await backend.stop()


def write_config(path: Path, doc: dict[str, Any]) -> None:
    """Atomic replace, the way the reconciler writes: temp file in the same dir + rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".backends-")
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle)
    os.replace(tmp, path)


def config_doc(entries: list[tuple[str, str, int]], **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "health": {"interval": 0.2, "timeout": 0.5, "rise": 1, "fall": 2},
        "timeouts": {"connect": 1.0, "read": 5.0, "idle": 30.0},
        "backends": [{"name": n, "url": u, "weight": w} for n, u, w in entries],
    }
    doc.update(extra)
    return doc


@dataclass
class RunningProxy:
    info: ServeInfo
    config_path: Path
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.info.listen[1]}"

    @property
    def admin_url(self) -> str:
        assert self.info.admin is not None
        return f"http://127.0.0.1:{self.info.admin[1]}"

    def write(self, doc: dict[str, Any]) -> None:
        write_config(self.config_path, doc)

    async def reload(self, doc: dict[str, Any], until: Callable[[ProxyServer], bool]) -> None:
        """Write ``doc`` and wait (up to 5 s) until the file watcher's reload shows: ``until``."""
        self.write(doc)
        for _ in range(100):
            if until(self.info.server):
                return
            await asyncio.sleep(0.05)


ProxyFactory = Callable[[dict[str, Any]], Awaitable[RunningProxy]]


@pytest.fixture(params=[True, False], ids=["lane", "general"])
def fast_lane(request: pytest.FixtureRequest) -> bool:
    """Every test of a running proxy runs twice, as aiohttp and uvicorn run their protocol
    tests over both implementations: with the fast lane (proxy/fastlane.py), and with every
    request and answer the general way (``fast_lane=False``), whose everyday behaviour the
    lane would otherwise hide (ordinary GETs and answers take the lane)."""
    return bool(request.param)


@pytest.fixture
async def proxy(tmp_path: Path, fast_lane: bool) -> AsyncIterator[ProxyFactory]:
    running: list[RunningProxy] = []

    async def start(doc: dict[str, Any]) -> RunningProxy:
        path = tmp_path / "backends.json"
        write_config(path, doc)
        stop = asyncio.Event()
        ready: asyncio.Future[ServeInfo] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            serve(
                path,
                ServeOptions(drain_timeout=2.0, fast_lane=fast_lane),
                stop=stop,
                ready=ready.set_result,
            )
        )
        info = await asyncio.wait_for(asyncio.shield(ready), 5)
        proc = RunningProxy(info, path, stop, task)
        running.append(proc)
        return proc

    yield start
    for proc in running:
        proc.stop.set()
        await asyncio.wait_for(proc.task, 10)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session
