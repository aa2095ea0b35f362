"""The dashboard's data layer: views from the pipeline's real output, degrading gracefully."""

from __future__ import annotations

import json

import numpy as np

from telltale.config import Config
from telltale.schema import encode_batch
from telltale.sinks.local import LocalStore
from telltale.sinks.memory import MemoryStore
from telltale.streams.embedded import EmbeddedPipeline
from telltale.ui.data import build_view, incidents, open_alerts
from telltale.ui.sources import LocalSource, _quote


def run_events(store, run: str, events: list[dict]) -> None:
    pipe = EmbeddedPipeline(Config(windows=("step:50",)), store)
    pipe.handle(run, encode_batch(run, events))
    pipe.close()


def loss_events(n=300, spike_at=200, nan_at=None, extra=None):
    rng = np.random.default_rng(0)
    out = []
    for s in range(1, n + 1):
        v = 1.0 + 0.01 * rng.standard_normal()
        if s == spike_at:
            v = 5.0
        if nan_at and s >= nan_at:
            v = float("nan")
        m = {"loss": v, **(extra(s) if extra else {})}
        out.append({"step": s, "ts": 1000.0 + s, "kind": "train", "metrics": m})
    return out


def test_only_a_loss_gives_a_training_panel_and_empty_families():
    mem = MemoryStore()
    run_events(mem, "r1", loss_events())
    v = build_view("r1", mem.points["r1"], mem.alerts["r1"])
    json.dumps(v, allow_nan=False)  # what the API sends is strict JSON
    assert [p["metric"] for p in v["training"]] == ["loss"]
    assert v["internals"] == [] and v["resources"] == [] and v["inference"] is None
    p = v["training"][0]
    spike = next(a for a in v["alerts"] if a["step"] == 200)
    assert spike["id"] in p["alert_ids"] and "loss" in spike["explanation"]
    i = p["steps"].index(200)
    # the band at the spike is the window before it: mean ≈ 1, well below the spike
    assert abs(p["band"]["mean"][i] - 1.0) < 0.05 and p["band"]["hi"][i] < 5.0
    # scores on the alerts' one 0..1 scale: a 6σ spike is well above the middle
    assert "zscore" in p["scores"] and 0.6 < p["scores"]["zscore"][i] <= 1
    assert all(0 <= x <= 1 for xs in p["scores"].values() for x in xs if x is not None)
    assert v["summary"]["metrics"][0]["best"] <= 1.05  # loss: lower is better


def test_a_nan_alert_gets_a_place_on_the_x_axis(tmp_path):
    store = LocalStore(str(tmp_path))
    run_events(store, "r2", loss_events(n=120, spike_at=None, nan_at=100))
    store.close()
    src = LocalSource(str(tmp_path))
    [summary] = src.runs()
    assert summary["run"] == "r2" and summary["health"] == "critical"
    v = src.run_view("r2")
    p = v["training"][0]
    nan_alert = next(a for a in v["alerts"] if a["detector"] == "nonfinite")
    i = p["steps"].index(nan_alert["step"])
    assert p["lines"][0]["values"][i] is None  # a gap, not a number
    assert v["summary"]["nonfinite_events"] == 21


def test_local_source_reads_appends_and_a_restarted_store(tmp_path):
    store = LocalStore(str(tmp_path))
    run_events(store, "a", loss_events(n=50, spike_at=None))
    store.flush()
    src = LocalSource(str(tmp_path))
    assert [r["last_step"] for r in src.runs()] == [50]
    run_events(store, "b", loss_events(n=20, spike_at=None))
    store.flush()
    assert {r["run"]: r["last_step"] for r in src.runs()} == {"a": 50, "b": 20}
    store.close()
    for f in tmp_path.glob("*.jsonl"):  # a new demo truncates the files
        f.write_text("")
    store = LocalStore(str(tmp_path))
    run_events(store, "c", loss_events(n=10, spike_at=None))
    store.close()
    assert [r["run"] for r in src.runs()] == ["c"]


def test_layers_ranks_and_a_straggler():
    def extra(s):
        m = {"step_time_s": 0.1 if s % 2 else 0.11}
        if s % 10 == 0:
            m.update({"grad_norm/enc": 0.5, "grad_norm/head": 1.0, "act_mean/enc": 0.1})
        return m

    mem = MemoryStore()
    evs = []
    for rank in range(4):
        for e in loss_events(n=60, spike_at=None, extra=extra):
            e = json.loads(json.dumps(e))
            e["tags"] = {"rank": rank, "host": f"node-{rank // 2}"}
            if rank == 2:
                e["metrics"]["step_time_s"] *= 3
            evs.append(e)
    run_events(mem, "r3", evs)
    v = build_view("r3", mem.points["r3"], mem.alerts["r3"])
    fams = {h["family"]: h for h in v["internals"]}
    assert fams["grad_norm"]["layers"] == ["enc", "head"]
    assert fams["grad_norm"]["steps"] == list(range(10, 61, 10))
    assert fams["grad_norm"]["z"][1][0] == 1.0
    st = next(r for r in v["resources"] if r["metric"] == "step_time_s")
    assert st["outliers"] == ["node-1 rank 2"] and len(st["lines"]) == 4
    loss = v["training"][0]
    assert [ln["label"] for ln in loss["lines"]] == ["rank 0", "rank 1", "rank 2", "rank 3"]


def test_open_alerts_follow_the_lifecycle_and_quotes_are_escaped():
    a = {"id": "x", "severity": "warning", "state": "firing"}
    assert [(o["id"], o["status"]) for o in open_alerts([a])] == [("x", "open")]
    assert open_alerts([a, {**a, "state": "resolved"}]) == []
    assert open_alerts([{"id": "y", "severity": "critical"}])  # no lifecycle: open
    # closed only because the run ended: still open (it never recovered), and said so
    ended = {**a, "state": "resolved", "stats": {"resolved_because": "run ended"}}
    [o] = open_alerts([a, ended])
    assert o["status"] == "open" and o["ended"]
    assert _quote("it's\\") == "'it\\'s\\\\'"


def test_an_incident_with_a_lifecycle_is_one_marker_at_its_first_step():
    mem = MemoryStore()
    run_events(mem, "r4", loss_events())
    base = next(a for a in mem.alerts["r4"] if a["step"] == 200)
    life = [{**base, "state": "firing", "explanation": "loss jumped"},
            {**base, "state": "updated", "step": 205, "explanation": "still high"},
            {**base, "state": "resolved", "step": 210, "first_step": 200, "last_step": 210,
             "explanation": "back to normal"}]
    [one] = incidents(life)
    assert (one["step"], one["last_step"], one["state"]) == (200, 210, "resolved")
    v = build_view("r4", mem.points["r4"], life)
    # what happened (its firing record: the severity never rose), how it ended, one marker
    # at step 200
    assert [(a["step"], a["explanation"], a["state"]) for a in v["alerts"]] == [
        (200, "loss jumped", "resolved")]
    assert open_alerts(life) == []


def test_the_local_store_is_read_in_time_order_not_write_order(tmp_path):
    # the pipeline writes blocks per (kind, rank): a batch's eval and system lines come
    # after its last train line, and a non-finite event's point after its block
    def ev(s):
        return {"step": s, "ts": 1000.0 + s, "kind": "train", "metrics": {"loss": 1.0 + s / 1e3}}

    store = LocalStore(str(tmp_path))
    events = [ev(s) for s in range(1, 61)]
    events[39]["metrics"]["loss"] = float("nan")
    events += [{"step": 30, "ts": 1030.5, "kind": "eval", "metrics": {"val_loss": 1.2}}]
    run_events(store, "r3", events)
    store.close()
    src = LocalSource(str(tmp_path))
    [summary] = src.runs()
    assert summary["last_step"] == 60 and summary["last_ts"] == 1060.0
    loss = next(p for p in src.run_view("r3")["training"] if p["metric"] == "loss")
    assert loss["steps"] == sorted(loss["steps"]) and loss["steps"][-1] == 60


def test_score_lines_are_continuous_when_only_notable_scores_are_stored():
    """TELLTALE_SCORES=notable (the default) stores a trace of every 10th value plus the
    abnormal ones: the page's score line still has a value at every step after warm-up,
    the spike's own score at the spike."""
    mem = MemoryStore()
    run_events(mem, "r9", loss_events(n=600, spike_at=400))
    stored = {p["fields"]["step"] for p in mem.points["r9"]["scores"]}
    assert len(stored) < 200  # notable: far fewer rows than the 600 values
    v = build_view("r9", mem.points["r9"], mem.alerts["r9"])
    p = v["training"][0]
    z = p["scores"]["zscore"]
    after = [x for st, x in zip(p["steps"], z, strict=True) if st > 100]
    assert after and all(x is not None for x in after)
    assert z[p["steps"].index(400)] > 0.6
