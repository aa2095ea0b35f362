"""Real local servers for the delivery tests: an aiohttp webhook receiver and aiosmtpd."""

from __future__ import annotations

import asyncio
import socket
import threading
from email import message_from_bytes

from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebhookServer:
    """Records every POST (idempotency key, JSON body). ``status`` != 200 answers with that
    status; ``stop()`` / ``start()`` take it away and bring it back on the same port."""

    def __init__(self):
        self.port = free_port()
        self.received: list[tuple[str, dict]] = []
        self.status = 200
        self.refused = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.status != 200:
            self.refused += 1
            return web.Response(status=self.status, text="down for maintenance")
        self.received.append((request.headers.get("Idempotency-Key", ""), body))
        return web.json_response({"ok": True})

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def start(self) -> WebhookServer:
        async def go():
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self._run(go())
        return self

    def stop(self) -> None:
        if self.runner is not None:
            self._run(self.runner.cleanup())
            self.runner = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class SmtpServer:
    """aiosmtpd on a free port; ``messages`` holds the parsed e-mails received."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                outer.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
