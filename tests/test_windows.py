
import numpy as np
import pytest

from telltale.detectors.state import dump_state, load_state
from telltale.detectors.windows import WindowSpec, WindowStats


def brute_force(spec: WindowSpec, pos, values):
    """Every window that got at least one finite value, computed directly with numpy."""
    out = {}
    fin = np.isfinite(values)
    for p, v in zip(pos[fin], values[fin], strict=True):
        k = np.floor(p / spec.hop) * spec.hop
        while k > p - spec.size:
            out.setdefault(k, []).append(v)
            k -= spec.hop
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("text", ["step:10", "step:10/5", "step:7/3", "time:2s", "time:3s/1s"])
def test_window_stats_equal_numpy_whatever_the_batching(text):
    rng = np.random.default_rng(0)
    n = 200
    steps = np.arange(1, n + 1)
    ts = 1000.0 + np.cumsum(rng.uniform(0.05, 0.3, n))
    vals = rng.normal(5, 2, n)
    vals[[17, 60, 61]] = np.nan
    spec = WindowSpec.parse(text)
    ws = WindowStats(spec)
    pos = steps.astype(float) if spec.by == "step" else ts
    expected = brute_force(spec, pos, vals)
    for batches in ([n], [1] * n, [13, 50, 1, 136]):
        state = ws.new_state()
        got = []
        i = 0
        for b in batches:
            got += ws.update(state, steps[i:i + b], ts[i:i + b], vals[i:i + b])
            state = load_state(dump_state(state))  # state survives serialization
            i += b
        got += ws.flush(state)
        assert sorted(w.start for w in got) == sorted(expected)
        for w in got:
            x = expected[w.start]
            assert w.count == len(x)
            assert w.mean == pytest.approx(np.mean(x), rel=1e-12)
            assert w.std == pytest.approx(np.std(x), rel=1e-9, abs=1e-12)
            assert (w.min, w.max) == (np.min(x), np.max(x))


def test_windows_close_only_when_the_series_passes_their_end():
    ws = WindowStats(WindowSpec.parse("step:10"))
    st = ws.new_state()
    s = np.arange(1, 10)
    assert ws.update(st, s, s * 1.0, s * 1.0) == []  # window [0, 10) still open
    closed = ws.update(st, np.array([10]), np.array([10.0]), np.array([1.0]))
    assert [(w.start, w.count, w.first_step, w.last_step) for w in closed] == [(0.0, 9, 1, 9)]


def test_spec_parsing():
    assert WindowSpec.parse("time:1m/30s") == WindowSpec("time", 60.0, 30.0)
    assert WindowSpec.parse("time:1m/30s").label == "time:60s/30s"
    assert WindowSpec.parse("step:100").tumbling
    for bad in ["steps:10", "step:10/20", "step:1.5", "step:10s", "time:0s"]:
        with pytest.raises(ValueError, match="bad window"):
            WindowSpec.parse(bad)


@pytest.mark.parametrize("text", ["step:10/5", "time:3s/1s"])
def test_small_batches_out_of_order_equal_numpy(text):
    """Batches of up to SMALL_BATCH values are reduced in Python; one whose positions go
    backwards takes the general path, with the same statistics."""
    rng = np.random.default_rng(1)
    n = 120
    steps = np.arange(1, n + 1)
    ts = 1000.0 + np.cumsum(rng.uniform(0.05, 0.3, n))
    order = np.arange(n)
    for lo in range(0, n, 12):  # positions out of order within each batch of 12
        order[lo:lo + 12] = rng.permutation(order[lo:lo + 12])
    steps, ts = steps[order], ts[order]
    vals = rng.normal(5, 2, n)
    spec = WindowSpec.parse(text)
    ws = WindowStats(spec)
    expected = brute_force(spec, steps.astype(float) if spec.by == "step" else ts, vals)
    state, got = ws.new_state(), []
    for lo in range(0, n, 12):
        got += ws.update(state, steps[lo:lo + 12], ts[lo:lo + 12], vals[lo:lo + 12])
    got += ws.flush(state)
    assert sorted(w.start for w in got) == sorted(expected)
    for w in got:
        assert w.mean == pytest.approx(np.mean(expected[w.start]), rel=1e-12)
        assert w.count == len(expected[w.start])
