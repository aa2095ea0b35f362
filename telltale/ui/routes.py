"""The dashboard's routes on the Faust worker's web server (``telltale worker --ui``).

The same :class:`~telltale.ui.server.Dashboard` answers as ``telltale ui``, read from the
worker's InfluxDB, at /ui/ on the worker's web port (bound to 127.0.0.1), behind the same
Host-header check (a web page elsewhere cannot reach it by re-pointing a name at 127.0.0.1).
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.web import Request, Response, View

from telltale.config import Config
from telltale.ui.data import DataError
from telltale.ui.server import Dashboard, Guard
from telltale.ui.sources import InfluxSource


class WorkerSource:
    """InfluxDB, or a clear error on every API call when none is configured."""

    def __init__(self, cfg: Config):
        self.influx = InfluxSource(cfg) if cfg.influx_url else None

    def __getattr__(self, name: str) -> Any:
        if self.influx is None:
            raise DataError("the worker has no InfluxDB (TELLTALE_INFLUX_URL) to read")
        return getattr(self.influx, name)

    def describe(self) -> str:
        return self.influx.describe() if self.influx else "no InfluxDB configured"


_GUARD = Guard()  # loopback names and IP literals only; the worker binds 127.0.0.1


def _refused(view: View, request: Request) -> Response | None:
    refused = _GUARD.check(request.headers.get("Host"), None, None, None)
    if refused is None:
        return None
    status, _, text = refused
    return _reply(view, (status, "text/plain", text.encode()))


def _reply(view: View, res: tuple[int, str, bytes]) -> Response:
    status, ctype, body = res
    return view.bytes(body, content_type=ctype, status=status,
                      headers={"Cache-Control": "no-store"})


def add_dashboard_routes(app: faust.App, cfg: Config) -> None:
    """Serve the dashboard at /ui/: the page, its static files and its JSON API."""
    dash = Dashboard(WorkerSource(cfg))

    @app.page("/ui/")
    class DashboardPage(View):
        async def get(self, request: Request) -> Response:
            if (no := _refused(self, request)) is not None:
                return no
            return _reply(self, dash.page())

    @app.page("/ui/static/{name:.+}")
    class DashboardStatic(View):
        async def get(self, request: Request, name: str) -> Response:
            if (no := _refused(self, request)) is not None:
                return no
            return _reply(self, dash.static(name))

    @app.page("/ui/api/runs")
    class DashboardRuns(View):
        async def get(self, request: Request) -> Response:
            if (no := _refused(self, request)) is not None:
                return no
            return _reply(self, await asyncio.to_thread(dash.runs, request.query.get("only")))

    @app.page("/ui/api/run/{run}")
    class DashboardRun(View):
        async def get(self, request: Request, run: str) -> Response:
            if (no := _refused(self, request)) is not None:
                return no
            k = request.query.get("k")
            return _reply(self, await asyncio.to_thread(dash.run, run, k))
