"""Inference: timer, decorator, LLM fields and the ASGI middleware (real ASGI protocol)."""

import asyncio
import time

import pytest

from telltale.producers import Monitor
from telltale.producers.inference import TelltaleMiddleware, llm_fields
from tests.support.transports import SwitchableTransport


def infer_events(t):
    return [e for e in t.delivered if e.kind == "infer"]


def test_timer_and_decorator_log_latency_and_errors():
    t = SwitchableTransport()
    mon = Monitor("srv", t, linger=0.001)
    with mon.timer(request_bytes=10) as tm:
        time.sleep(0.02)
    assert tm.latency_ms >= 20

    @mon.timed
    def predict(x):
        if x < 0:
            raise ValueError("negative")
        return x * 2

    assert predict(3) == 6
    with pytest.raises(ValueError):
        predict(-1)

    @mon.timed
    async def apredict():
        await asyncio.sleep(0.01)
        return 1

    assert asyncio.run(apredict()) == 1
    mon.close()
    ev = [e.metrics for e in infer_events(t)]
    assert [m["error"] for m in ev] == [0, 0, 1, 0]
    assert ev[0]["latency_ms"] >= 20 and ev[0]["request_bytes"] == 10
    assert ev[3]["latency_ms"] >= 10


def test_llm_request_reports_tokens_ttft_and_decode_speed():
    t = SwitchableTransport()
    mon = Monitor("llm", t, linger=0.001)
    with mon.llm(prompt_tokens=12) as r:
        time.sleep(0.03)  # prefill
        for _ in range(11):
            r.token()
            time.sleep(0.002)
    mon.close()
    m = infer_events(t)[0].metrics
    assert m["prompt_tokens"] == 12 and m["completion_tokens"] == 11 and m["error"] == 0
    assert 30 <= m["ttft_ms"] < m["latency_ms"]
    decode_s = (m["latency_ms"] - m["ttft_ms"]) / 1000
    assert m["tokens_per_s"] == pytest.approx(10 / decode_s)
    assert llm_fields(2.0, None, 100) == {"latency_ms": 2000.0, "error": 0,
                                          "completion_tokens": 100, "tokens_per_s": 50.0}


async def streaming_app(scope, receive, send):
    """A model server: reads the request body, streams three chunks (or fails)."""
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if scope["path"] == "/boom":
        raise RuntimeError("model crashed")
    status = 200 if body else 422
    await send({"type": "http.response.start", "status": status, "headers": []})
    for chunk in (b"tok1 ", b"tok2 ", b"tok3"):
        await asyncio.sleep(0.005)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def call(app, path, chunks):
    sent = []
    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive():
        return incoming.pop(0)

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    asyncio.run(app(scope, receive, send))
    return sent


def test_asgi_middleware_measures_requests_without_reading_bodies_into_events():
    t = SwitchableTransport()
    mon = Monitor("srv", t, linger=0.001)
    app = TelltaleMiddleware(streaming_app, mon)
    sent = call(app, "/generate", [b'{"prompt": "sec', b'ret"}'])
    assert sent[0]["status"] == 200 and b"".join(m.get("body", b"") for m in sent[1:]) == \
        b"tok1 tok2 tok3"
    call(app, "/generate", [b""])
    with pytest.raises(RuntimeError):
        call(app, "/boom", [b"x"])
    mon.close()
    ok, bad, boom = (e.metrics for e in infer_events(t))
    assert ok["status"] == 200 and ok["error"] == 0
    assert ok["request_bytes"] == len(b'{"prompt": "secret"}')
    assert ok["response_bytes"] == 14 and 0 < ok["ttft_ms"] < ok["latency_ms"]
    assert bad["status"] == 422 and bad["error"] == 0 and bad["request_bytes"] == 0
    assert boom["status"] == 500 and boom["error"] == 1
    assert "secret" not in repr(t.delivered)


def test_non_http_scopes_pass_through():
    mon = Monitor("srv", SwitchableTransport(), linger=0.001)
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(TelltaleMiddleware(app, mon)({"type": "lifespan"}, None, None))
    mon.close()
    assert seen == ["lifespan"] and mon.stats()["sent"] == 1  # only the end marker


def test_middleware_counts_on_the_servers_thread_and_builds_on_the_senders():
    """The server's thread queues raw numbers; the same fields arrive (a status sent as a
    string included), and a monitor-like object without log_deferred gets a dict."""
    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": "201", "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    t = SwitchableTransport()
    mon = Monitor("srv", t, linger=0.001)
    call(TelltaleMiddleware(app, mon), "/x", [b"abc"])
    mon.close()

    class Plain:
        def __init__(self):
            self.logged = []

        def log(self, metrics, kind="train"):
            self.logged.append((kind, metrics))

    plain = Plain()
    call(TelltaleMiddleware(app, plain), "/x", [b"abc"])
    (ev,) = infer_events(t)
    kind, m = plain.logged[0]
    assert kind == "infer" and set(m) == set(ev.metrics)
    for fields in (ev.metrics, m):
        assert fields["status"] == 201 and fields["error"] == 0
        assert fields["request_bytes"] == 3 and fields["response_bytes"] == 4
        assert "ttft_ms" not in fields and fields["latency_ms"] > 0
