"""The live dashboard's HTTP side: one page, its static assets, and a small JSON API.

    GET /                 the page (lists runs; one run's charts; polls the API)
    GET /static/<file>    app.js, app.css, vendored uPlot (MIT, with its LICENSE)
    GET /api/runs         runs, worst health first: status, last step, incidents
    GET /api/runs?only=alerts   alert records per run (the page polls it every 0.5 s; a
                          new record refreshes the run and the list at once)
    GET /api/run/<run>    one run's panels (see telltale.ui.data.build_view); ?k= band width

:class:`Dashboard` answers requests independently of the web framework, so the same
answers are served by ``telltale ui`` (aiohttp) and by the Faust worker's web server.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import threading
from importlib import resources

from telltale.ui.data import DataError, parse_k

STATIC = resources.files("telltale.ui") / "static"
_TYPES = {".js": "application/javascript", ".css": "text/css", ".html": "text/html",
          ".png": "image/png", ".txt": "text/plain", ".LICENSE": "text/plain"}


def static_bytes(name: str) -> bytes | None:
    """A file of the package's static folder, or None (no path escapes the folder)."""
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") or p.startswith(".") for p in parts):
        return None
    f = STATIC.joinpath(*parts)
    return f.read_bytes() if f.is_file() else None


def _ctype(name: str) -> str:
    for ext, t in _TYPES.items():
        if name.endswith(ext):
            return t
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class Dashboard:
    """Framework-free request handling: ``(status, content type, body)`` per request."""

    def __init__(self, source):
        self.source = source

    def page(self) -> tuple[int, str, bytes]:
        return 200, "text/html", static_bytes("index.html")

    def static(self, name: str) -> tuple[int, str, bytes]:
        body = static_bytes(name)
        if body is None:
            return 404, "text/plain", f"no static file {name!r}".encode()
        return 200, _ctype(name), body

    def runs(self, only: str | None = None) -> tuple[int, str, bytes]:
        try:
            if only == "alerts":  # the page's fast poll: alert records per run
                return self._json({"alerts": self.source.alert_counts()})
            doc = {"source": self.source.describe(), "runs": self.source.runs()}
        except DataError as exc:
            return self._json({"error": str(exc)}, 503)
        return self._json(doc)

    def run(self, run: str, k: str | None = None) -> tuple[int, str, bytes]:
        try:
            kk = parse_k(k)
        except ValueError as exc:
            return self._json({"error": str(exc)}, 400)
        try:
            view = self.source.run_view(run, k=kk)
        except DataError as exc:
            return self._json({"error": str(exc)}, 503)
        if view is None:
            return self._json({"error": f"no run {run!r} in {self.source.describe()}"}, 404)
        return self._json(view)

    @staticmethod
    def _json(doc, status: int = 200) -> tuple[int, str, bytes]:
        return status, "application/json", json.dumps(doc, allow_nan=False,
                                                      default=str).encode()


def make_app(dash: Dashboard):
    """An aiohttp application serving ``dash``."""
    from aiohttp import web

    def respond(res) -> web.Response:
        status, ctype, body = res
        return web.Response(status=status, body=body, headers={
            "Content-Type": ctype, "Cache-Control": "no-store"})

    async def in_thread(fn, *a):
        return respond(await asyncio.to_thread(fn, *a))

    routes = web.RouteTableDef()

    @routes.get("/")
    async def index(request):
        return respond(dash.page())

    @routes.get("/static/{name:.+}")
    async def static(request):
        return respond(dash.static(request.match_info["name"]))

    @routes.get("/api/runs")
    async def runs(request):
        return await in_thread(dash.runs, request.query.get("only"))

    @routes.get("/api/run/{run}")
    async def run(request):
        return await in_thread(dash.run, request.match_info["run"], request.query.get("k"))

    app = web.Application()
    app.add_routes(routes)
    return app


class UiServer:
    """The dashboard on 127.0.0.1 in a background thread (for ``demo --ui`` and tests)."""

    def __init__(self, source, host: str = "127.0.0.1", port: int = 0):
        self.dash = Dashboard(source)
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> UiServer:
        self._thread = threading.Thread(target=self._serve, name="telltale-ui", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise OSError(f"cannot serve the dashboard on {self.host}:{self.port}: "
                          f"{self._error}; pick another --port") from None
        return self

    def _serve(self) -> None:
        from aiohttp import web

        self._loop = loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def up():
            self._runner = web.AppRunner(make_app(self.dash), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]

        try:
            loop.run_until_complete(up())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
