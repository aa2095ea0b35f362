"""Running a detector over a series in batches of given sizes."""

from __future__ import annotations

import numpy as np

from telltale.detectors.state import dump_state, load_state


def run_in_batches(det, steps, values, sizes):
    """(scores, findings) of ``det`` fed in batches of ``sizes``, its state round-tripped
    through JSON between batches; findings as (index, detector, severity, score)."""
    state = det.new_state()
    scores, findings, i = [], [], 0
    for b in sizes:
        sc, fs = det.update(state, steps[i:i + b], values[i:i + b])
        scores.append(sc)
        findings += [(f.index + i, f.detector, f.severity, round(f.score, 9)) for f in fs]
        state = load_state(dump_state(state))  # explicit, serializable state
        i += b
    return np.concatenate(scores), findings


def assert_batch_independent(det, rise_scale: float):
    """Same scores and findings in one batch, one value at a time and mixed batches, with
    the state round-tripped through JSON between batches; returns the findings."""
    rng = np.random.default_rng(1)
    v = 1 + 0.1 * rng.standard_normal(300)
    v[100] = 9.0
    v[150:153] = np.nan
    v[200:] *= np.exp(np.arange(100) / rise_scale)
    steps = np.arange(1, 301)
    one = run_in_batches(det, steps, v, [300])
    many = run_in_batches(det, steps, v, [1] * 300)
    mixed = run_in_batches(det, steps, v, [7, 93, 1, 99, 100])
    np.testing.assert_allclose(one[0], many[0], equal_nan=True, rtol=1e-9)
    np.testing.assert_allclose(one[0], mixed[0], equal_nan=True, rtol=1e-9)
    assert one[1] == many[1] == mixed[1]
    return one[1]
