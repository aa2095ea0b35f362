"""The live dashboard's HTTP side: one page, its static assets, and a small JSON API.

    GET /                 the page (lists runs; one run's charts; polls the API)
    GET /static/<file>    app.js, app.css, vendored uPlot (MIT, with its LICENSE)
    GET /api/runs         runs, worst health first: status, last step, incidents
    GET /api/runs?only=alerts   alert records per run (the page polls it every 0.5 s; a
                          new record refreshes the run and the list at once)
    GET /api/run/<run>    one run's panels (see telltale.ui.data.build_view); ?k= band width

:class:`Dashboard` answers requests independently of the web framework, so the same
answers are served by ``telltale ui`` (aiohttp) and by the Faust worker's web server.

:class:`Guard` protects it: a request whose ``Host`` header is not this machine's loopback
name, an IP address or an allowed name is refused (a page on another site cannot reach the
dashboard through DNS rebinding), and with an auth option every request needs the token
(``Authorization: Bearer``, or once ``/?token=`` which sets a cookie) or HTTP basic auth.
A dashboard bound beyond loopback must have one (:func:`needs_auth`).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
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


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
COOKIE = "telltale_ui"


def is_loopback(host: str) -> bool:
    """True for a name or address only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def needs_auth(host: str) -> bool:
    """A dashboard bound to ``host`` serves other machines, so it must have an auth option."""
    return not is_loopback(host)


def read_secret_file(path: str, what: str) -> str:
    """The stripped first line of a secret file; ValueError naming the file if unusable."""
    try:
        with open(path) as f:
            text = f.readline().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if not text:
        raise ValueError(f"the {what} file {path} is empty")
    return text


class Guard:
    """Host-header check and optional auth: a bearer/cookie ``token`` or ``basic``
    ``user:password``. ``check`` returns None (let it through) or (status, headers, text)."""

    def __init__(self, token: str | None = None, basic: str | None = None,
                 allowed_hosts=()):
        if basic is not None and ":" not in basic:
            raise ValueError("basic auth needs a file holding user:password")
        self.token, self.basic = token, basic
        self.allowed_hosts = {h.lower() for h in allowed_hosts}

    @property
    def auth(self) -> str | None:
        return "token" if self.token else "basic" if self.basic else None

    def host_ok(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        host = host_header.strip().lower()
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        if host in LOOPBACK_NAMES or host in self.allowed_hosts:
            return True
        try:  # an IP literal cannot be re-pointed by a DNS answer
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return False

    def _same(self, given: str | None, want: str) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), want.encode())

    def check(self, host_header, authorization, cookie, query_token):
        if not self.host_ok(host_header):
            return 421, {}, ("unexpected Host header: the dashboard answers to localhost, IP "
                             "addresses and the names given with --allow-host")
        if self.token:
            bearer = (authorization or "")
            bearer = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
            if self._same(bearer, self.token) or self._same(cookie, self.token) \
                    or self._same(query_token, self.token):
                return None
            return 401, {}, ("this dashboard needs its token: open /?token=<the token> once, "
                             "or send 'Authorization: Bearer <the token>'")
        if self.basic:
            given = None
            if (authorization or "").lower().startswith("basic "):
                try:
                    given = base64.b64decode(authorization[6:].strip()).decode()
                except ValueError:
                    given = None
            if self._same(given, self.basic):
                return None
            return 401, {"WWW-Authenticate": 'Basic realm="telltale", charset="UTF-8"'}, \
                "this dashboard needs a user name and password"
        return None


def make_app(dash: Dashboard, guard: Guard | None = None):
    """An aiohttp application serving ``dash`` behind ``guard`` (default: Host check only)."""
    from aiohttp import web

    guard = guard or Guard()

    @web.middleware
    async def protect(request, handler):
        qtoken = request.query.get("token")
        refused = guard.check(request.headers.get("Host"), request.headers.get("Authorization"),
                              request.cookies.get(COOKIE), qtoken)
        if refused is not None:
            status, headers, text = refused
            return web.Response(status=status, text=text + "\n", headers={
                "Cache-Control": "no-store", **headers})
        if qtoken is not None and guard.token:  # keep it in a cookie, not in the address bar
            resp = web.HTTPSeeOther(request.path)
            resp.set_cookie(COOKIE, qtoken, httponly=True, samesite="Strict", path="/")
            return resp
        return await handler(request)

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

    app = web.Application(middlewares=[protect])
    app.add_routes(routes)
    return app


class UiServer:
    """The dashboard in a background thread (for ``telltale ui``, ``demo --ui`` and tests);
    bound beyond loopback only with an auth option in ``guard``."""

    def __init__(self, source, host: str = "127.0.0.1", port: int = 0,
                 guard: Guard | None = None):
        self.guard = guard or Guard()
        if needs_auth(host) and self.guard.auth is None:
            raise ValueError(f"--host {host} serves the dashboard (and the data its InfluxDB "
                             "credentials can read) to other machines: add --auth-token-file "
                             "FILE or --basic-auth-file FILE (user:password), or use --host "
                             "127.0.0.1")
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
            self._runner = web.AppRunner(make_app(self.dash, self.guard), access_log=None)
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
