
import numpy as np
import pytest

from telltale.config import Config
from telltale.detectors.state import dump_state, load_state
from telltale.schema import Event
from telltale.simulate import DEMO_RUNS, simulate
from telltale.streams.processor import RunProcessor


def demo_events(sim):
    return [Event(sim.run, s, ts, k, m) for s, ts, k, m in simulate(sim, t0=1e9)]


def process(proc, run, events, sizes):
    state = proc.new_state(run)
    points, alerts, i = [], [], 0
    for b in sizes:
        out = proc.process(state, events[i:i + b])
        state = load_state(dump_state(state))  # what the Faust table stores
        points += out.all_points()
        alerts += out.alerts
        i += b
    out = proc.flush(state)
    return points + out.all_points(), alerts + out.alerts


@pytest.mark.parametrize("sim", DEMO_RUNS[1:], ids=lambda s: s.fault)
def test_output_does_not_depend_on_batching(sim):
    proc = RunProcessor(Config())
    events = demo_events(sim)
    p1, a1 = process(proc, sim.run, events, [len(events)])
    p2, a2 = process(proc, sim.run, events, [1] * len(events))
    p3, a3 = process(proc, sim.run, events, [100] * (len(events) // 100 + 1))
    _, a4 = process(proc, sim.run, events, [7] * (len(events) // 7 + 1))
    assert a1 == a2 == a3 == a4
    assert {a["state"] for a in a1} >= {"firing", "resolved"}  # the lifecycle ran
    def key(points):
        return sorted((p.measurement, sorted(p.tags.items()), p.time_ns, sorted(p.fields))
                      for p in points)

    assert key(p1) == key(p2) == key(p3)


def test_faults_are_alerted_and_the_clean_run_is_quiet():
    proc = RunProcessor(Config())
    found = {}
    for sim in DEMO_RUNS:
        _, alerts = process(proc, sim.run, demo_events(sim), [50] * 20)
        found[sim.fault] = alerts
    assert found[None] == []
    assert any(a["metric"] == "loss" and a["step"] == 300 and a["detector"] == "zscore"
               for a in found["spike"])
    assert any(a["metric"] == "loss" and a["step"] == 420 and a["detector"] == "nonfinite"
               and a["severity"] == "critical" for a in found["nan"])
    # the learning-rate jump, the loss and val_loss divergence are one problem: one incident
    div = found["divergence"]
    assert [a["state"] for a in div].count("firing") == 1 and len({a["id"] for a in div}) == 1
    assert div[0]["metric"] == "lr" and div[0]["step"] == 250
    loss_div = [a for a in div if a["metric"] == "loss" and a["detector"] == "divergence"]
    assert loss_div and 250 < loss_div[0]["step"] < 320 and loss_div[0]["state"] == "updated"
    assert {"lr", "loss", "val_loss"} <= set(div[-1]["contributors"])
    assert div[-1]["state"] == "resolved" and div[-1]["step"] == 600
    assert div[-1]["stats"]["resolved_because"] == "run ended"
    for alerts in found.values():  # every incident fires once and resolves once
        by_id = {}
        for a in alerts:
            by_id.setdefault(a["id"], []).append(a["state"])
        assert all(s[0] == "firing" and s[-1] == "resolved" and s.count("firing") == 1
                   for s in by_id.values()), by_id


def test_window_points_match_numpy():
    proc = RunProcessor(Config(windows=("step:100",)))
    sim = DEMO_RUNS[0]
    events = demo_events(sim)
    points, _ = process(proc, sim.run, events, [64] * 10)
    loss = np.array([e.metrics["loss"] for e in events if e.kind == "train"])
    steps = np.array([e.step for e in events if e.kind == "train"])
    wins = [p for p in points if p.measurement == "window_stats" and p.tags["metric"] == "loss"]
    assert len(wins) == 7  # [0,100) ... [600,700)
    for p in wins:
        sel = loss[(steps >= p.fields["start"]) & (steps < p.fields["end"])]
        assert p.fields["count"] == len(sel)
        assert np.isclose(p.fields["mean"], sel.mean()) and np.isclose(p.fields["std"], sel.std())


def test_every_closed_window_has_its_own_time_in_its_series():
    # InfluxDB keeps one point per series and time: hopping windows that begin with the
    # same event (before step 0, after a gap in steps) must not share a time
    proc = RunProcessor(Config(windows=("step:100/25", "step:100", "time:60s/20s")))
    steps = [*range(1, 120), *range(400, 460)]
    events = [Event("r", s, 1000.0 + s, "train", {"loss": 1.0 + (s % 7) / 10}) for s in steps]
    events.append(Event("r", 460, 1461.0, "end", {}))
    points, _ = process(proc, "r", events, [50] * 10)
    wins = [p for p in points if p.measurement == "window_stats"]
    for spec, expect in (("step:100/25", 14), ("step:100", 3)):
        mine = [p for p in wins if p.tags["window"] == spec]
        assert len(mine) == expect
        assert len({p.time_ns for p in mine}) == expect
        # still in order of the windows' starts, within a nanosecond per hop of the first event
        by_start = sorted(mine, key=lambda p: p.fields["start"])
        assert sorted(mine, key=lambda p: p.time_ns) == by_start
        assert all(0 <= round((1000.0 + p.fields["first_step"]) * 1e9) - p.time_ns < 4
                   for p in mine)
    timed = [p for p in wins if p.tags["window"] == "time:60s/20s"]
    assert len({p.time_ns for p in timed}) == len(timed)


def test_end_event_flushes_windows_and_marks_the_run_ended():
    proc = RunProcessor(Config(windows=("step:1000",)))
    state = proc.new_state("r")
    out = proc.process(state, [Event("r", 1, 1.0, "train", {"x": 1.0}),
                               Event("r", 2, 2.0, "train", {"x": 3.0}),
                               Event("r", 2, 3.0, "end", {})])
    w = [p for p in out.points if p.measurement == "window_stats"]
    assert state["ended"] and len(w) == 1 and w[0].fields["mean"] == 2.0


def test_a_run_has_bounded_series_and_the_rest_is_dead_lettered_with_a_reason():
    proc = RunProcessor(Config(max_series_per_run=10))
    state = proc.new_state("wide")
    evs = [Event("wide", s, float(s), "train", {f"m{s}_{j}": 1.0 for j in range(3)})
           for s in range(1, 8)]  # 21 distinct metrics
    out = proc.process(state, evs)
    assert len(state["series"]) == 10 and state["refused_values"] == 11
    (r,) = out.rejected
    assert "TELLTALE_MAX_SERIES_PER_RUN" in r.reason and r.to_dict()["raw"]
    out = proc.process(state, [Event("wide", 9, 9.0, "train", {"m1_0": 2.0})])
    assert not out.rejected  # known series go on


def test_score_blocks_give_the_same_lines_as_their_points():
    """The worker renders score blocks straight to line protocol; the embedded store expands
    them to points: both must say the same, non-finite scores left out."""
    from telltale.sinks.influx import block_lines, to_line

    proc = RunProcessor(Config())
    sim = DEMO_RUNS[2]  # goes NaN: rows with some scores missing
    state = proc.new_state(sim.run)
    out = proc.process(state, demo_events(sim))
    assert out.blocks and any(len(p.fields) < len(b.names) + 1 for b in out.blocks
                              for p in b.points())
    for b in out.blocks:
        assert block_lines(b) == [to_line(p) for p in b.points()]


def test_raw_values_are_blocks_and_a_non_finite_event_a_point_that_counts_them():
    from telltale.sinks.influx import block_lines, to_line

    proc = RunProcessor(Config())
    state = proc.new_state("raw")
    evs = [Event("raw", 1, 10.0, "train", {"loss": 1.0, "acc": 0.5}, {"host": "h1"}),
           Event("raw", 2, 11.0, "train", {"loss": float("nan"), "acc": 0.6}, {"host": "h1"}),
           Event("raw", 3, 12.0, "train", {"loss": 0.9, "acc": 0.7}, {"host": "h1"}),
           Event("raw", 3, 12.0, "eval", {"val_loss": 1.2})]
    out = proc.process(state, evs)
    raw = [p for p in out.all_points() if p.measurement == "metrics"]
    assert sorted((p.tags["kind"], p.fields["step"], p.fields) for p in raw) == sorted([
        ("eval", 3, {"val_loss": 1.2, "step": 3}),
        ("train", 1, {"loss": 1.0, "acc": 0.5, "step": 1}),
        ("train", 2, {"acc": 0.6, "step": 2, "nonfinite": 1}),
        ("train", 3, {"loss": 0.9, "acc": 0.7, "step": 3})])
    assert all(p.tags["host"] == "h1" for p in raw if p.tags["kind"] == "train")
    (nf,) = [p for p in out.points if p.measurement == "metrics"]
    assert to_line(nf).endswith("acc=0.6,step=2i,nonfinite=1i 11000000000")
    blocks = [b for b in out.blocks if b.measurement == "metrics"]
    assert sorted(len(b) for b in blocks) == [1, 2]
    for b in blocks:
        assert block_lines(b) == [to_line(p) for p in b.points()]


def test_a_nan_incident_is_named_after_the_first_metric_in_stream_order():
    """Several metrics going NaN at one step are one incident, named after the first of
    them in the stream, whichever event the batch happens to start with."""
    evs = [Event("nan", 1, 1.0, "eval", {"val_loss": 1.0})]
    evs += [Event("nan", s, float(s), "train", {"loss": 1.0}) for s in range(1, 50)]
    evs += [Event("nan", 50, 50.0, "train", {"loss": float("nan")}),
            Event("nan", 50, 50.0, "eval", {"val_loss": float("nan")})]
    firing = []
    for split in (0, 1, 50):
        proc = RunProcessor(Config())
        state = proc.new_state("nan")
        out = proc.process(state, evs[:split]).alerts + proc.process(state, evs[split:]).alerts
        firing.append([(a["metric"], a["step"]) for a in out if a["state"] == "firing"])
    assert firing == [[("loss", 50)]] * 3


def test_a_restart_with_changed_windows_and_pipelines_keeps_what_still_applies(caplog):
    """Before: a new window or detector raised KeyError on the stored state."""
    from telltale.detectors.pipelines import Pipelines

    sim = DEMO_RUNS[1]
    events = demo_events(sim)
    half = len(events) // 2
    old = RunProcessor(Config(windows=("step:100", "step:50")),
                       Pipelines([("*loss*", [("nonfinite", {}), ("zscore", {})]),
                                  ("*", [("nonfinite", {})])]))
    new_pipes = [("*loss*", [("nonfinite", {}), ("divergence", {})]), ("*", [("nonfinite", {})])]
    new = RunProcessor(Config(windows=("step:100", "step:20")), Pipelines(new_pipes))
    state = old.new_state(sim.run)
    old.process(state, events[:half])
    state = load_state(dump_state(state))  # what the table stores
    with caplog.at_level("WARNING"):
        out = new.process(state, events[half:])
        out.extend(new.flush(state))
    msg = caplog.text
    assert "dropped windows ['step:50']" in msg and "dropped detectors ['zscore']" in msg
    assert "started cold windows ['step:20']" in msg and "detectors ['divergence']" in msg
    assert msg.count("another configuration") == 1  # once, not once per series

    def windows(points, label):
        return sorted((p.tags["metric"], p.fields["first_step"], p.fields["count"],
                       round(p.fields["mean"], 9)) for p in points
                      if p.measurement == "window_stats" and p.tags["window"] == label)
    # the kept window went on with its history: its second half is what one processor
    # over all events gives; the new one saw only the events after the restart
    ref_all = RunProcessor(Config(windows=("step:100",)), Pipelines(new_pipes))
    st = ref_all.new_state(sim.run)
    ref = ref_all.process(st, events).points + ref_all.flush(st).points
    first_new = events[half].step
    assert windows(out.points, "step:100") == [w for w in windows(ref, "step:100")
                                               if w[1] + 100 > first_new]
    ref_new = RunProcessor(Config(windows=("step:20",)), Pipelines(new_pipes))
    st = ref_new.new_state(sim.run)
    cold = ref_new.process(st, events[half:]).points + ref_new.flush(st).points
    assert windows(out.points, "step:20") == windows(cold, "step:20")
    assert all(set(s["d"]) == {"nonfinite", "divergence"} for k, s in state["series"].items()
               if "loss" in k)


def test_a_state_of_another_version_starts_cold_and_keeps_the_workers_offsets(caplog):
    proc = RunProcessor(Config())
    state = {"v": 99, "run": "r", "series": {"x|0": {"strange": 1}}, "offsets": {"0": 41},
             "seen_at": 5.0}
    with caplog.at_level("WARNING"):
        proc.process(state, [Event("r", 1, 1.0, "train", {"loss": 1.0})])
    assert "state version 99" in caplog.text
    assert state["offsets"] == {"0": 41} and state["v"] == 1 and "x|0" not in state["series"]
