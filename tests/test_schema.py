import json

from telltale.schema import MAX_MESSAGE_BYTES, decode_message, encode_batch


def test_batch_round_trip_keeps_non_finite_values():
    raw = encode_batch("r1", [{"step": 1, "ts": 1.5, "metrics": {"loss": float("nan"), "a": 1}},
                              {"step": 2, "ts": 2.5, "kind": "eval", "metrics": {"b": 2.0},
                               "tags": {"rank": 3}}])
    events, rejected = decode_message(raw)
    assert rejected == []
    assert [e.step for e in events] == [1, 2]
    assert events[0].metrics["loss"] != events[0].metrics["loss"]  # NaN survives
    assert events[1].kind == "eval" and events[1].rank == "3"


def test_bare_event_in_trainfaults_format_is_a_batch_of_one():
    line = ('{"run": "r-c2d62425", "kind": "train", "step": 1, "ts": 1795560973.36, '
            '"metrics": {"loss": 2.29, "lr": NaN}, "tags": {"model": "mlp", "rank": 0}}')
    events, rejected = decode_message(line.encode())
    assert not rejected and events[0].run == "r-c2d62425" and events[0].tags["rank"] == "0"


def test_bad_events_are_rejected_with_reasons_and_good_ones_kept():
    raw = json.dumps({"schema": "telltale/1", "run": "r", "events": [
        {"step": 1, "ts": 1, "metrics": {"loss": 1}},
        {"step": "x", "ts": 1, "metrics": {"loss": 1}},
        {"step": 2, "ts": 1, "metrics": {"loss": "high"}},
        {"step": 3, "ts": 1, "metrics": {"loss": True}},
        {"step": 4, "ts": 1, "metrics": {}},
        {"step": 5, "ts": 1, "kind": "weird", "metrics": {"loss": 1}},
        {"step": 6, "ts": 1, "metrics": {"loss": 1}, "run": "other"},
    ]}).encode()
    events, rejected = decode_message(raw)
    assert [e.step for e in events] == [1]
    reasons = [r.reason for r in rejected]
    assert len(reasons) == 6
    assert "step must be a non-negative integer" in reasons[0]
    assert "metric 'loss' must be a number, got str" in reasons[1]
    assert "got bool" in reasons[2]
    assert "no metrics" in reasons[3]
    assert "kind must be one of" in reasons[4]
    assert "differs from batch run" in reasons[5]


def test_whole_message_rejections():
    cases = {
        b"{not json": "not valid JSON",
        b"[1, 2]": "must be a JSON object",
        json.dumps({"schema": "telltale/9", "run": "r", "events": []}).encode(): "unknown schema",
        b"x" * (MAX_MESSAGE_BYTES + 1): "bytes (max",
        json.dumps({"schema": "telltale/1", "run": 5, "events": []}).encode(): "run must be",
    }
    for raw, reason in cases.items():
        events, rejected = decode_message(raw)
        assert events == [] and len(rejected) == 1 and reason in rejected[0].reason, raw[:40]
        assert "reason" in rejected[0].to_dict() and "raw" in rejected[0].to_dict()


def test_orjson_decoding_accepts_and_refuses_what_json_does(monkeypatch):
    """orjson decodes messages where it can; the events and refusals are json's."""
    import telltale.schema as schema

    assert schema._fast_loads is not None, "the worker extra installs orjson"
    ev = '{"step":%s,"ts":1.7e9,"metrics":{"loss":%s}}'
    cases = [encode_batch("r", [{"step": 1, "ts": 1.7e9, "metrics": {"loss": float("nan")}}]),
             b'{"schema":"telltale/1","run":"r","events":[%s]}' % (ev % (1, "1e400")).encode(),
             b'{"schema":"telltale/1","run":"r","events":[%s]}' % (ev % (2**70, "1")).encode(),
             b'{"schema":"telltale/1","run":"r","events":[%s]}' % (ev % (3, 2**70)).encode(),
             b'{"schema":"telltale/1","run":"r","events":[%s]}' % (ev % (4, 10**400)).encode(),
             b'{"schema":"telltale/1","run":"\\ud800","events":[]}', b"[1,", b"\xff",
             encode_batch("r", [{"step": 5, "ts": 1.7e9, "metrics": {"a": 1, "b": 2.5}}])]
    fast = [decode_message(c) for c in cases]
    monkeypatch.setattr(schema, "_fast_loads", None)
    slow = [decode_message(c) for c in cases]
    for (fe, fr), (se, sr) in zip(fast, slow, strict=True):
        assert fe == se
        assert [r.reason.split(",")[0] for r in fr] == [r.reason.split(",")[0] for r in sr]
