"""Inference metrics: a timer (context manager and decorator), LLM request fields and an
ASGI middleware for model servers. Everything is logged with kind ``infer``.

Metric names: ``latency_ms``, ``error`` (0/1), ``status``, ``request_bytes``,
``response_bytes``, ``prompt_tokens``, ``completion_tokens``, ``ttft_ms``,
``tokens_per_s``. Request and response bodies are counted, never read or shipped.
"""

from __future__ import annotations

import functools
import inspect
import time
from time import perf_counter

from telltale.producers.client import deferred


class Timer:
    """``with mon.timer(): ...`` logs ``latency_ms`` and ``error`` (1 if the block raised;
    the exception still propagates). Extra numeric fields are logged with it."""

    __slots__ = ("monitor", "fields", "t0", "latency_ms")

    def __init__(self, monitor, **fields):
        self.monitor, self.fields = monitor, fields
        self.latency_ms = None

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.latency_ms = (time.perf_counter() - self.t0) * 1000.0
        self.monitor.log({"latency_ms": self.latency_ms, "error": 0 if exc_type is None else 1,
                          **self.fields}, kind="infer")
        return False


def timed(monitor):
    """Decorator: time every call of a function (sync or async) with :class:`Timer`."""

    def wrap(fn):
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                with Timer(monitor):
                    return await fn(*args, **kwargs)
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with Timer(monitor):
                return fn(*args, **kwargs)
        return wrapper

    return wrap


class LLMRequest:
    """One LLM request: ``with mon.llm(prompt_tokens=12) as r:`` then ``r.token()`` per
    streamed token (or ``r.tokens(n)``). Logs latency, error, prompt / completion tokens,
    time to first token and decode speed (completion tokens per second after the first)."""

    def __init__(self, monitor, prompt_tokens: int | None = None):
        self.monitor, self.prompt_tokens = monitor, prompt_tokens
        self.completion_tokens = 0
        self.t0 = self.t_first = None

    def __enter__(self) -> LLMRequest:
        self.t0 = time.perf_counter()
        return self

    def token(self) -> None:
        self.tokens(1)

    def tokens(self, n: int) -> None:
        if n > 0 and self.t_first is None:
            self.t_first = time.perf_counter()
        self.completion_tokens += n

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.monitor.log(llm_fields(time.perf_counter() - self.t0, self.prompt_tokens,
                                    self.completion_tokens,
                                    None if self.t_first is None else self.t_first - self.t0,
                                    error=exc_type is not None), kind="infer")
        return False


def llm_fields(latency_s: float, prompt_tokens: int | None, completion_tokens: int | None,
               ttft_s: float | None = None, error: bool = False) -> dict[str, float]:
    """The LLM metric fields from raw timings and token counts."""
    out = {"latency_ms": latency_s * 1000.0, "error": 1 if error else 0}
    if prompt_tokens is not None:
        out["prompt_tokens"] = prompt_tokens
    if completion_tokens is not None:
        out["completion_tokens"] = completion_tokens
    if ttft_s is not None:
        out["ttft_ms"] = ttft_s * 1000.0
        decode_s = latency_s - ttft_s
        if completion_tokens and completion_tokens > 1 and decode_s > 0:
            out["tokens_per_s"] = (completion_tokens - 1) / decode_s
    elif completion_tokens and latency_s > 0:
        out["tokens_per_s"] = completion_tokens / latency_s
    return out


@deferred
def request_fields(t0: float, end: float, first: float, chunks: int, status, error: bool,
                   request_bytes: int, response_bytes: int) -> dict[str, float]:
    """The middleware's metrics from one request's raw counts (on the sender thread)."""
    try:
        status = int(status)
    except (TypeError, ValueError):
        status = 0
    if not status and error:
        status = 500
    m = {"request_bytes": request_bytes, "response_bytes": response_bytes,
         "latency_ms": (end - t0) * 1000.0, "status": status,
         "error": 1 if error or status >= 500 else 0}
    if chunks > 1:
        m["ttft_ms"] = (first - t0) * 1000.0
    return m


class TelltaleMiddleware:
    """ASGI middleware: per HTTP request ``latency_ms`` (until the last body chunk),
    ``status``, ``error`` (status ≥ 500 or an exception), ``request_bytes``,
    ``response_bytes`` and, for streamed responses, ``ttft_ms`` (first non-empty chunk).

    ``app = TelltaleMiddleware(app, monitor)``; other scopes (websocket, lifespan) pass
    through untouched. Per request the server's thread only counts and queues the raw
    numbers (:meth:`Monitor.log_deferred`); the metrics dict is made on the sender thread.
    """

    def __init__(self, app, monitor):
        self.app, self.monitor = app, monitor
        self._log_deferred = getattr(monitor, "log_deferred", None)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = perf_counter()
        req = resp = status = chunks = 0
        first = 0.0

        async def counting_receive():
            nonlocal req
            msg = await receive()
            body = msg.get("body")
            if body:
                req += len(body)
            return msg

        def counting_send(msg):  # returns send's awaitable: no coroutine of its own
            nonlocal resp, status, chunks, first
            t = msg["type"]
            if t == "http.response.body":
                body = msg.get("body")
                if body:
                    resp += len(body)
                    chunks += 1
                    if chunks == 1:
                        first = perf_counter()
            elif t == "http.response.start":
                status = msg.get("status", 0)
            return send(msg)

        error = False
        try:
            await self.app(scope, counting_receive, counting_send)
        except BaseException:
            error = True
            raise
        finally:
            args = (t0, perf_counter(), first, chunks, status, error, req, resp)
            if self._log_deferred is not None:
                self._log_deferred(request_fields, args, kind="infer")
            else:  # a monitor-like object without log_deferred
                self.monitor.log(request_fields(*args), kind="infer")
