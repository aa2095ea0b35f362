"""Line protocol, property-style: names drawn from every character class the spec escapes,
against influxdb-client's own ``Point`` output and against the real InfluxDB 1.8 (write,
read back through InfluxQL, equal). Then the data path: what InfluxDB refuses is split
out and handed over with its message, the rest is written, only an outage spills."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request

import pytest
from influxdb_client import Point as ClientPoint

from telltale import lineprotocol as lp
from telltale.records import Point
from telltale.schema import decode_message, encode_batch
from telltale.sinks.buffer import Backpressure, DurablePointBuffer
from telltale.sinks.influx import AsyncInfluxSink, ensure_database, to_line
from tests.support.influx import influxql

# each character class the line-protocol spec names, plus plain text; the unstorable ones
# are drawn rarely, so that most names have all the others
STORABLE = ["abcXYZ_-./:", "0123456789", " ", ",", "=", '"', "λéß中文", "😀🚀",
            "|#'{}[]()@!?*&^%$~`<>;+"]
UNSTORABLE = ["\\", "\n", "\r", "\t", "\x00\x1b\x7f\x85", "\ud800"]


def random_name(rng: random.Random, n: int | None = None) -> str:
    n = rng.randint(0, 12) if n is None else n
    return "".join(rng.choice(rng.choice(UNSTORABLE if rng.random() < 0.03 else STORABLE))
                   for _ in range(n))


def client_line(m: str, tags: dict, fields: dict, t: int) -> str:
    p = ClientPoint(m)
    for k, v in tags.items():
        p.tag(k, v)
    for k, v in fields.items():
        p.field(k, v)
    return p.time(t).to_line_protocol()


def test_accepted_names_encode_as_influxdb_client_does():
    rng = random.Random(13)
    accepted = refused = 0
    for _ in range(5000):
        names = [random_name(rng) for _ in range(4)]
        if any(lp.name_problem(s) for s in names):
            refused += 1
            continue
        accepted += 1
        m, tk, tv, fk = names
        m = m.lstrip("#")  # a line starting with "#" is a comment: not a measurement
        text = random_name(rng, 20).replace("\ud800", "?")  # any valid Unicode string
        tags = {tk: tv, "zz": "1"} if tk != "zz" else {tk: tv}
        fields = dict(sorted({fk: 3, "s" if fk != "s" else "t": text}.items()))
        ours = lp.line(m, tags, fields, 42)
        assert ours == client_line(m, tags, fields, 42), (names, text)
        assert ours == to_line(Point(m, tags, fields, 42))  # the worker's cached encoder
    assert accepted > 300 and refused > 300


def test_name_problem_says_why():
    assert lp.name_problem("loss/train acc=1, \"x\" λ😀") is None
    assert "empty" in lp.name_problem("")
    assert "'\\n'" in lp.name_problem("a\nb")
    assert "backslash" in lp.name_problem("a\\")
    assert "surrogate" in lp.name_problem("a\ud800")


def test_floats_at_the_limits_and_non_finite_left_out():
    line = lp.line("m", {}, {"a": 1e308, "b": -1e308, "c": 5e-324, "d": -0.0,
                             "e": float("nan"), "f": float("inf"), "s": 'q"\\'}, 1)
    assert line == 'm a=1e+308,b=-1e+308,c=5e-324,d=-0.0,s="q\\"\\\\" 1'


def _db(cfg) -> None:
    ensure_database(cfg)


def test_round_trip_through_the_real_influxdb(kafka_config):
    cfg = kafka_config
    _db(cfg)
    rng = random.Random(5)
    sent = {}  # run tag -> (tags, fields, time)
    lines = []
    times = [0, 1, 4102444800 * 10**9, -10**18, 1_700_000_000 * 10**9]
    floats = [1e308, -1e308, 5e-324, -0.0, 0.1, -2.5e-300]
    while len(sent) < 300:
        names = [random_name(rng, rng.randint(1, 12)) for _ in range(3)]
        if any(lp.name_problem(s) or s in lp.RESERVED_KEYS for s in names):
            continue
        tk, tv, fk = names
        if tk in ("run", "time") or fk in ("s", "n", "time"):
            continue
        run = f"r{len(sent)}"
        tags = {"run": run, tk: tv}
        fields = {fk: rng.choice(floats), "s": random_name(rng, 30).replace("\ud800", "?"),
                  "n": rng.randint(-2**63, 2**63 - 1)}
        t = rng.choice(times)
        sent[run] = (tags, fields, t)
        lines.append(lp.line("hostile", tags, fields, t))

    async def write():
        sink = AsyncInfluxSink(cfg)
        try:
            await sink.write_lines(lines)
        finally:
            await sink.close()
    asyncio.run(write())
    got = {}
    for s in influxql(cfg, 'SELECT * FROM "hostile" GROUP BY *'):
        cols = s["columns"]
        for row in s["values"]:
            rec = {c: v for c, v in zip(cols, row, strict=True) if v is not None}
            got[s["tags"]["run"]] = (s["tags"], rec)
    assert len(got) == len(sent)
    for run, (tags, fields, t) in sent.items():
        gtags, rec = got[run]
        assert {k: v for k, v in gtags.items() if v != ""} == tags
        assert rec.pop("time") == t
        assert rec.keys() == fields.keys(), run
        for k, v in fields.items():
            assert rec[k] == v, (run, k)  # floats at the limits exact; -0.0 == 0


def _influx_status(cfg) -> int:
    with urllib.request.urlopen(f"{cfg.influx_url}/ping", timeout=5) as r:
        return r.status


def test_refused_points_are_split_out_with_influxdbs_message_the_rest_written(kafka_config,
                                                                              tmp_path):
    """Before: a 400 from InfluxDB was taken for an outage and the whole batch spilled."""
    cfg = kafka_config
    _db(cfg)
    good = [lp.line("m", {"run": "g"}, {"v": float(i)}, i) for i in range(1, 2001)]
    bad = ['m,run=b time=1 5',  # reserved field key: partial write
           'm,run=b v="text" 6',  # field type conflict (v is a float)
           'm,run=b\\ v=1 7']  # a line that does not parse
    batch = good[:700] + bad[:1] + good[700:1500] + bad[1:] + good[1500:]
    refused = []
    buf = DurablePointBuffer(tmp_path / "spill", on_refused=lambda ls, msg: refused.append(
        (ls, msg)))

    async def go():
        sink = AsyncInfluxSink(cfg)
        await sink.write_lines(good[:1])  # v is a float in this measurement now
        try:
            return await buf.flush_lines(batch, sink.write_lines)
        finally:
            await sink.close()
    assert asyncio.run(go()) is True
    assert sorted(line for ls, _ in refused for line in ls) == sorted(bad)
    msgs = " | ".join(m for _, m in refused)
    assert 'invalid field name: input field "time"' in msgs
    assert "field type conflict" in msgs and "unable to parse" in msgs
    assert buf.spill_files() == [] and buf.spilled == 0
    assert buf.written == len(good) and buf.refused == 3
    rows = influxql(cfg, "SELECT count(v) FROM m WHERE run = 'g'")
    assert rows[0]["values"][0][1] == len(good)

    # every point refused (a type conflict on each): no split, one request
    conflict = [lp.line("m", {"run": "c"}, {"v": f"s{i}"}, i) for i in range(1, 1001)]
    requests = []

    async def all_refused():
        sink = AsyncInfluxSink(cfg)

        async def write(lines):
            requests.append(len(lines))
            await sink.write_lines(lines)
        try:
            return await buf.flush_lines(conflict, write)
        finally:
            await sink.close()
    refused.clear()
    assert asyncio.run(all_refused()) is True
    assert requests == [1000] and len(refused[0][0]) == 1000 and buf.refused == 1003


def test_outage_spills_bounded_with_an_alarm_and_replay_drops_refused(kafka_config, tmp_path):
    cfg = kafka_config
    _db(cfg)
    from dataclasses import replace

    down = replace(cfg, influx_url="http://127.0.0.1:9")  # nothing listens: an outage
    refused = []
    buf = DurablePointBuffer(tmp_path / "spill",
                             on_refused=lambda ls, msg: refused.extend(ls))
    batch1 = [lp.line("m2", {"run": "s"}, {"v": float(i)}, i) for i in range(1, 101)]
    batch1[50] = 'm2,run=s time=1 999'  # refused once InfluxDB answers

    async def flush(target, lines):
        sink = AsyncInfluxSink(target)
        try:
            return await buf.flush_lines(lines, sink.write_lines)
        finally:
            await sink.close()
    assert asyncio.run(flush(down, batch1)) is False
    assert buf.spilled == 100 and buf.spill_bytes() > 1800 and not refused
    buf.max_spill_bytes = buf.spill_bytes() + 100  # one more batch fits
    st = buf.status()
    assert st["alarm"] and "spill" in st["alarm"] and not st["backpressure"]
    assert asyncio.run(flush(down, batch1[:10])) is False  # past the bound: now full
    with pytest.raises(Backpressure):
        asyncio.run(flush(down, batch1[10:20]))
    st = buf.status()
    assert st["backpressure"] and "not acknowledged" in st["alarm"]
    assert len(buf) == 10  # the refused-to-spill batch is kept for the next flush
    assert asyncio.run(flush(cfg, buf.take())) is True  # InfluxDB is back
    assert refused == ['m2,run=s time=1 999']  # replay does not retry it
    assert buf.spill_files() == [] and buf.status()["alarm"] is None
    rows = influxql(cfg, "SELECT count(v) FROM m2")
    assert rows[0]["values"][0][1] == 99


def test_doctor_raises_the_spill_alarm(tmp_path):
    from telltale.doctor import check_worker

    status = {"pid": 1, "assigned": [0], "runs": {},
              "influx": {"spill_files": 3, "spill_bytes": 900, "spill_max_bytes": 1000,
                         "backpressure": True, "alarm": "spill full (900 of 1000 bytes)"}}
    (tmp_path / "worker-status.json").write_text(json.dumps(status))
    c = check_worker(str(tmp_path))
    assert c.status == "fail" and "spill full" in c.detail
    status["influx"].update(backpressure=False, alarm="spill 600 of 1000 bytes (60%)")
    (tmp_path / "worker-status.json").write_text(json.dumps(status))
    c = check_worker(str(tmp_path))
    assert c.status == "warn" and "60%" in c.detail


@pytest.mark.parametrize("metrics,tags,run,reason", [
    ({"a\nb": 1.0}, {}, "r", "control character '\\n'"),
    ({"a\\": 1.0}, {}, "r", "backslash"),
    ({"loss": 1.0}, {"host": "h\r"}, "r", "control character '\\r'"),
    ({"loss": 1.0}, {"rank": "0|1"}, "r", "contains '|'"),
    ({"time": 1.0}, {}, "r", "'time' is reserved"),
    ({"step": 1.0}, {}, "r", "'step' is reserved"),
    ({"loss": 1.0}, {"time": "x"}, "r", "tag name 'time' is reserved"),
    ({"loss": 10**400}, {}, "r", "too large for a float"),
    ({"loss": 1.0}, {}, "x" * 1024, "run is 1024 characters long"),
    ({"loss": 1.0}, {}, "r\ud800", "lone surrogate"),
])
def test_schema_refuses_what_influxdb_cannot_store(metrics, tags, run, reason):
    """Before: these were accepted and InfluxDB refused (or garbled) their points."""
    raw = json.dumps({"schema": "telltale/1", "run": run, "events": [
        {"step": 1, "ts": 1.0, "metrics": metrics, "tags": tags}]}).encode()
    events, rejected = decode_message(raw)
    assert events == [] and len(rejected) == 1
    assert reason in rejected[0].reason, rejected[0].reason


def test_schema_refuses_times_and_steps_out_of_influxdbs_range_and_deep_json():
    for ev, reason in [({"step": 1, "ts": 1e10}, "between 1677 and 2262"),
                       ({"step": 1, "ts": -1e10}, "between 1677 and 2262"),
                       ({"step": 2**63, "ts": 1.0}, "below 2**63")]:
        events, rejected = decode_message(encode_batch("r", [{**ev, "metrics": {"x": 1.0}}]))
        assert not events and reason in rejected[0].reason
    events, rejected = decode_message(b"[" * 100_000)
    assert not events and "not valid JSON" in rejected[0].reason
    # accepted: 1970, 2100, float limits, unicode and punctuation, an empty tag value
    events, rejected = decode_message(encode_batch("λ run, a=b \"q\"", [
        {"step": 1, "ts": 0.0, "metrics": {"loss, x=1": 1e308, "y": 5e-324, "z": -0.0},
         "tags": {"host": ""}},
        {"step": 2, "ts": 4102444800.0, "metrics": {"😀": -1e308}}]))
    assert not rejected and len(events) == 2 and events[0].tags == {}


def test_the_spill_keeps_any_line_as_it_was(kafka_config, tmp_path):
    """A string field with a newline or a line that is not valid UTF-8 goes through the
    spill unchanged; InfluxDB then stores the first and refuses the second."""
    from dataclasses import replace

    cfg = kafka_config
    _db(cfg)
    lines = [lp.line("m3", {"run": "n"}, {"s": "two\nlines\r\u2028"}, 1),
             lp.line("m3", {"run": "u"}, {"s": "bad \ud800"}, 2),
             lp.line("m3", {"run": "ok"}, {"s": "fine"}, 3)]
    refused = []
    buf = DurablePointBuffer(tmp_path / "spill", on_refused=lambda ls, m: refused.append(m))

    async def flush(target, batch):
        sink = AsyncInfluxSink(target)
        try:
            return await buf.flush_lines(batch, sink.write_lines)
        finally:
            await sink.close()
    assert asyncio.run(flush(replace(cfg, influx_url="http://127.0.0.1:9"), lines)) is False
    assert buf.spilled == 3
    assert asyncio.run(flush(cfg, [])) is True
    assert len(refused) == 1 and "not valid UTF-8" in refused[0]
    rows = influxql(cfg, "SELECT s FROM m3 GROUP BY run")
    assert {s["tags"]["run"]: s["values"][0][1] for s in rows} == {"n": "two\nlines\r\u2028",
                                                                   "ok": "fine"}
